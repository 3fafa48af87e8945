/* bpe.c: the BPE model as tokenizers implements it: a word starts as its
 * characters (continuing_subword_prefix on all but the first, end_of_word_suffix on
 * the last; an unknown character becomes its <0xXX> byte tokens with byte_fallback,
 * else the unk token, consecutive ones fused with fuse_unk, or is dropped when
 * there is no unk token), then the adjacent pair with the lowest merge rank is
 * merged (leftmost first on ties) until no pair has a merge. ignore_merges: a word
 * that is itself in the vocabulary is one token. Dropout is ignored (inference).
 * Merging uses a binary heap over a linked list of symbols held in the work area's
 * scratch, so it is O(n log n) per word and allocates nothing per word.
 * Thread-safety: immutable after construction; tokenize only touches the caller's
 * tp__work. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

#define EMPTY_KEY UINT64_MAX
#define AFFIX_MAX 64

typedef struct merge_slot {
    uint64_t key; /* a << 32 | b */
    uint32_t rank;
    int32_t new_id;
} merge_slot;

typedef struct bpe {
    tp__model base;
    tp__vocab vocab;
    merge_slot *merges;
    size_t n_slots, n_merges;
    char *unk; /* NULL: none */
    char prefix[AFFIX_MAX], suffix[AFFIX_MAX];
    size_t prefix_len, suffix_len;
    int has_prefix; /* Some(prefix), even "" (then merges strip nothing) */
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256];  /* <0xXX> tokens, -1 absent */
    int32_t ascii_id[128]; /* single ASCII characters (when no affixes apply) */
} bpe;

typedef struct sym {
    int32_t id;
    uint32_t start, len;
    int32_t prev, next;
} sym;

typedef struct hent {
    uint32_t rank;
    int32_t pos, new_id;
} hent;

static inline uint64_t mix(uint64_t k)
{
    k ^= k >> 31;
    k *= 0x9E3779B97F4A7C15ull;
    return k ^ (k >> 29);
}

static const merge_slot *merge_find(const bpe *m, int32_t a, int32_t b)
{
    if (!m->n_slots) return NULL;
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t mask = m->n_slots - 1, j = mix(key) & mask;
    while (m->merges[j].key != EMPTY_KEY) {
        if (m->merges[j].key == key) return &m->merges[j];
        j = (j + 1) & mask;
    }
    return NULL;
}

static tp_status merges_grow(bpe *m, size_t want, tp_error *err)
{
    size_t n = m->n_slots ? m->n_slots : 64;
    while (n < want * 2) n *= 2;
    if (n == m->n_slots) return TP_OK;
    merge_slot *s = malloc(n * sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    for (size_t i = 0; i < n; i++) s[i].key = EMPTY_KEY;
    for (size_t i = 0; i < m->n_slots; i++) {
        if (m->merges[i].key == EMPTY_KEY) continue;
        size_t j = mix(m->merges[i].key) & (n - 1);
        while (s[j].key != EMPTY_KEY) j = (j + 1) & (n - 1);
        s[j] = m->merges[i];
    }
    free(m->merges);
    m->merges = s;
    m->n_slots = n;
    return TP_OK;
}

tp_status tp__bpe_add_merge(tp__model *self, const char *a, size_t alen, const char *b,
                            size_t blen, const char *what, size_t where, tp_error *err)
{
    bpe *m = (bpe *)self;
    int32_t ia = tp__vocab_find(&m->vocab, a, alen), ib = tp__vocab_find(&m->vocab, b, blen);
    if (ia < 0 || ib < 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: merge %zu: token '%.*s' is not in the vocabulary",
                         what, where, (int)(ia < 0 ? alen : blen), ia < 0 ? a : b);
    /* the merged token: a + b without the continuing prefix */
    size_t skip = m->has_prefix ? m->prefix_len : 0;
    if (skip > blen) skip = blen;
    size_t nl = alen + blen - skip;
    char stackbuf[256];
    char *buf = nl <= sizeof stackbuf ? stackbuf : malloc(nl);
    if (!buf) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(buf, a, alen);
    memcpy(buf + alen, b + skip, blen - skip);
    int32_t inew = tp__vocab_find(&m->vocab, buf, nl);
    tp_status st = TP_OK;
    if (inew < 0)
        st = tp__error(err, TP_ERR_FORMAT,
                       "%s: merge %zu: the merged token '%.*s' is not in the vocabulary", what,
                       where, (int)(nl > 200 ? 200 : nl), buf);
    if (buf != stackbuf) free(buf);
    if (st != TP_OK) return st;
    if ((m->n_merges + 1) * 2 > m->n_slots) TP_TRY(merges_grow(m, m->n_merges + 1, err));
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t mask = m->n_slots - 1, j = mix(key) & mask;
    while (m->merges[j].key != EMPTY_KEY && m->merges[j].key != key) j = (j + 1) & mask;
    if (m->merges[j].key == EMPTY_KEY) m->n_merges++;
    /* a repeated pair takes the later rank, as a Rust HashMap collected from the list */
    m->merges[j].key = key;
    m->merges[j].rank = (uint32_t)where;
    m->merges[j].new_id = inew;
    return TP_OK;
}

/* ------------------------------------------------------------ tokenize */

static inline void heap_push(hent *h, size_t *n, hent e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (h[p].rank < e.rank || (h[p].rank == e.rank && h[p].pos <= e.pos)) break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static inline hent heap_pop(hent *h, size_t *n)
{
    hent top = h[0], last = h[--(*n)];
    size_t i = 0, cnt = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= cnt) break;
        if (c + 1 < cnt && (h[c + 1].rank < h[c].rank ||
                            (h[c + 1].rank == h[c].rank && h[c + 1].pos < h[c].pos)))
            c++;
        if (last.rank < h[c].rank || (last.rank == h[c].rank && last.pos <= h[c].pos)) break;
        h[i] = h[c];
        i = c;
    }
    if (cnt) h[i] = last;
    return top;
}

static tp_status push_tok(tp__work *w, int32_t id, uint32_t start, uint32_t end, int32_t word,
                          tp_error *err)
{
    tp__tok *t = tp__vec_push(&w->toks, err);
    if (!t) return err ? err->status : TP_ERR_NOMEM;
    t->id = id;
    t->start = start;
    t->end = end;
    t->word = word;
    return TP_OK;
}

static tp_status unk_missing(const bpe *m, tp_error *err)
{
    return tp__error(err, TP_ERR_FORMAT, "BPE: unk_token '%s' is not in the vocabulary", m->unk);
}

static tp_status bpe_tokenize(const tp__model *self, tp__work *w, uint32_t off, uint32_t len,
                              int32_t word, tp_error *err)
{
    const bpe *m = (const bpe *)self;
    if (!len) return TP_OK;
    if (m->ignore_merges) {
        int32_t id = tp__vocab_find(&m->vocab, w->arena.s + off, len);
        if (id >= 0) return push_tok(w, id, off, off + len, word, err);
    }
    /* scratch: symbols (at most one per byte, plus affix bytes with byte
     * fallback) then the heap (at most 3 entries per symbol) */
    size_t max_syms = (size_t)len * (1 + m->prefix_len + m->suffix_len) + 1;
    size_t need = max_syms * sizeof(sym) + 3 * max_syms * sizeof(hent) + 16;
    TP_TRY(tp__work_scratch(w, need, err));
    sym *sy = (sym *)(void *)w->scratch;
    hent *heap = (hent *)(void *)(w->scratch + max_syms * sizeof(sym));
    const char *s = w->arena.s + off;
    int affix = (m->has_prefix && m->prefix_len) || m->suffix_len;
    size_t n = 0;
    int32_t unk_id = -2; /* -2: not looked up yet */
    int32_t pend_unk = -1;
    uint32_t pend_start = 0, pend_len = 0;
    char buf[2 * AFFIX_MAX + 8];
    uint32_t i = 0;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        uint32_t k = c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (i + k > len) k = len - i;
        int32_t id;
        const char *look = s + i;
        size_t look_len = k;
        if (!affix) {
            id = k == 1 && c < 0x80 ? m->ascii_id[c] : tp__vocab_find(&m->vocab, s + i, k);
        } else {
            size_t bl = 0;
            if (i > 0 && m->has_prefix) {
                memcpy(buf, m->prefix, m->prefix_len);
                bl = m->prefix_len;
            }
            memcpy(buf + bl, s + i, k);
            bl += k;
            if (i + k == len && m->suffix_len) {
                memcpy(buf + bl, m->suffix, m->suffix_len);
                bl += m->suffix_len;
            }
            look = buf;
            look_len = bl;
            id = tp__vocab_find(&m->vocab, buf, bl);
        }
        if (id >= 0) {
            if (pend_unk >= 0) {
                sy[n] = (sym){pend_unk, pend_start, pend_len, (int32_t)n - 1, -1};
                n++;
                pend_unk = -1;
            }
            sy[n] = (sym){id, i, k, (int32_t)n - 1, -1};
            n++;
            i += k;
            continue;
        }
        if (m->byte_fallback) {
            int all = 1;
            for (size_t b = 0; b < look_len; b++)
                if (m->byte_id[(unsigned char)look[b]] < 0) all = 0;
            if (all) {
                if (pend_unk >= 0) {
                    sy[n] = (sym){pend_unk, pend_start, pend_len, (int32_t)n - 1, -1};
                    n++;
                    pend_unk = -1;
                }
                /* one token per byte, each one byte long (offsets stay inside the
                 * character even when affixes add bytes) */
                for (size_t b = 0; b < look_len; b++) {
                    uint32_t st = i + (b < k ? (uint32_t)b : k - 1);
                    uint32_t ln = b < k ? 1 : 0;
                    sy[n] = (sym){m->byte_id[(unsigned char)look[b]], st, ln, (int32_t)n - 1, -1};
                    n++;
                }
                i += k;
                continue;
            }
        }
        if (m->unk) {
            if (unk_id == -2) unk_id = tp__vocab_find(&m->vocab, m->unk, strlen(m->unk));
            if (unk_id < 0) return unk_missing(m, err);
            if (pend_unk >= 0 && m->fuse_unk) {
                pend_len += k;
            } else {
                if (pend_unk >= 0) {
                    sy[n] = (sym){pend_unk, pend_start, pend_len, (int32_t)n - 1, -1};
                    n++;
                }
                pend_unk = unk_id;
                pend_start = i;
                pend_len = k;
            }
        }
        i += k;
    }
    if (pend_unk >= 0) {
        sy[n] = (sym){pend_unk, pend_start, pend_len, (int32_t)n - 1, -1};
        n++;
    }
    if (!n) return TP_OK;
    for (size_t x = 0; x + 1 < n; x++) sy[x].next = (int32_t)x + 1;

    size_t hn = 0;
    for (size_t x = 0; x + 1 < n; x++) {
        const merge_slot *ms = merge_find(m, sy[x].id, sy[x + 1].id);
        if (ms) heap_push(heap, &hn, (hent){ms->rank, (int32_t)x, ms->new_id});
    }
    while (hn) {
        hent top = heap_pop(heap, &hn);
        sym *a = &sy[top.pos];
        if (a->id < 0) continue; /* merged away */
        if (a->next < 0) continue;
        sym *b = &sy[a->next];
        const merge_slot *ms = merge_find(m, a->id, b->id);
        if (!ms || ms->new_id != top.new_id) continue; /* stale */
        a->id = top.new_id;
        a->len += b->len;
        a->next = b->next;
        b->len = 0;
        b->id = -1;
        if (a->next >= 0) sy[a->next].prev = top.pos;
        if (a->prev >= 0) {
            ms = merge_find(m, sy[a->prev].id, a->id);
            if (ms) heap_push(heap, &hn, (hent){ms->rank, a->prev, ms->new_id});
        }
        if (a->next >= 0) {
            ms = merge_find(m, a->id, sy[a->next].id);
            if (ms) heap_push(heap, &hn, (hent){ms->rank, top.pos, ms->new_id});
        }
    }
    TP_TRY(tp__vec_reserve(&w->toks, w->toks.len + n, err));
    for (int32_t x = 0; x >= 0; x = sy[x].next)
        TP_TRY(push_tok(w, sy[x].id, off + sy[x].start, off + sy[x].start + sy[x].len, word, err));
    return TP_OK;
}

/* ------------------------------------------------------------ vocabulary */

static int32_t bpe_token_to_id(const tp__model *self, const char *tok, size_t len)
{
    return tp__vocab_find(&((const bpe *)self)->vocab, tok, len);
}

static const char *bpe_id_to_token(const tp__model *self, int32_t id, size_t *len)
{
    return tp__vocab_token(&((const bpe *)self)->vocab, id, len);
}

static size_t bpe_vocab_size(const tp__model *self) { return ((const bpe *)self)->vocab.count; }

static void bpe_free(tp__model *self)
{
    bpe *m = (bpe *)self;
    tp__vocab_free(&m->vocab);
    free(m->merges);
    free(m->unk);
    free(m);
}

static const tp__model_ops bpe_ops = {"BPE", bpe_tokenize, bpe_token_to_id, bpe_id_to_token,
                                      bpe_vocab_size, bpe_free};

int tp__is_bpe_model(const tp__model *m) { return m && m->ops == &bpe_ops; }

tp_status tp__bpe_new(tp__vocab *vocab, const tp__bpe_options *o, size_t merges_hint,
                      tp__model **out, tp_error *err)
{
    if ((o->prefix && strlen(o->prefix) >= AFFIX_MAX) ||
        (o->suffix && strlen(o->suffix) >= AFFIX_MAX))
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "BPE: continuing_subword_prefix and end_of_word_suffix must be shorter "
                         "than %d bytes",
                         AFFIX_MAX);
    bpe *m = calloc(1, sizeof *m);
    if (!m) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    m->base.ops = &bpe_ops;
    if (o->unk && !(m->unk = strdup(o->unk))) {
        free(m);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    if (o->prefix) {
        m->has_prefix = 1;
        m->prefix_len = strlen(o->prefix);
        memcpy(m->prefix, o->prefix, m->prefix_len);
    }
    if (o->suffix) {
        m->suffix_len = strlen(o->suffix);
        memcpy(m->suffix, o->suffix, m->suffix_len);
    }
    m->byte_fallback = o->byte_fallback;
    m->fuse_unk = o->fuse_unk;
    m->ignore_merges = o->ignore_merges;
    m->vocab = *vocab;
    memset(vocab, 0, sizeof *vocab);
    for (int b = 0; b < 256; b++) {
        char code[8];
        snprintf(code, sizeof code, "<0x%02X>", b);
        m->byte_id[b] = tp__vocab_find(&m->vocab, code, 6);
    }
    for (int c = 0; c < 128; c++) {
        char ch = (char)c;
        m->ascii_id[c] = tp__vocab_find(&m->vocab, &ch, 1);
    }
    tp_status st = merges_grow(m, merges_hint ? merges_hint : 1, err);
    if (st != TP_OK) {
        bpe_free(&m->base);
        return st;
    }
    *out = &m->base;
    return TP_OK;
}

/* ------------------------------------------------------------ tokenizer.json */

/* A string field that may be null (None) or absent. */
static tp_status opt_string(const cJSON *j, const char *key, const char *what, const char **out,
                            tp_error *err)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    *out = NULL;
    if (!v || cJSON_IsNull(v)) return TP_OK;
    if (!cJSON_IsString(v))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.%s' must be a string or null, got %s",
                         what, key, tp__json_type_name(v));
    *out = v->valuestring;
    return TP_OK;
}

tp_status tp__bpe_from_json(const cJSON *j, const char *what, tp__model **out, tp_error *err)
{
    tp__bpe_options o;
    memset(&o, 0, sizeof o);
    TP_TRY(opt_string(j, "unk_token", what, &o.unk, err));
    TP_TRY(opt_string(j, "continuing_subword_prefix", what, &o.prefix, err));
    TP_TRY(opt_string(j, "end_of_word_suffix", what, &o.suffix, err));
    TP_TRY(tp__json_bool(j, "byte_fallback", 0, &o.byte_fallback, what, err));
    TP_TRY(tp__json_bool(j, "fuse_unk", 0, &o.fuse_unk, what, err));
    TP_TRY(tp__json_bool(j, "ignore_merges", 0, &o.ignore_merges, what, err));
    const cJSON *vj = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    const cJSON *mj = cJSON_GetObjectItemCaseSensitive(j, "merges");
    if (!vj) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'model.vocab'", what);
    if (!cJSON_IsObject(vj))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.vocab' must be an object, got %s",
                         what, tp__json_type_name(vj));
    if (mj && !cJSON_IsNull(mj) && !cJSON_IsArray(mj))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.merges' must be an array, got %s",
                         what, tp__json_type_name(mj));
    tp__vocab v;
    TP_TRY(tp__vocab_init(&v, (size_t)cJSON_GetArraySize(vj), err));
    const cJSON *it;
    cJSON_ArrayForEach(it, vj)
    {
        if (!cJSON_IsNumber(it) || it->valuedouble < 0 || it->valuedouble > 1e9 ||
            it->valuedouble != (double)(int32_t)it->valuedouble) {
            tp__vocab_free(&v);
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'model.vocab' entry '%.64s' must be a non-negative integer id",
                             what, it->string ? it->string : "");
        }
        const char *key = it->string ? it->string : "";
        tp_status st = tp__vocab_add(&v, key, strlen(key), (int32_t)it->valuedouble, err);
        if (st != TP_OK) {
            tp__vocab_free(&v);
            return st;
        }
    }
    size_t nm = cJSON_IsArray(mj) ? (size_t)cJSON_GetArraySize(mj) : 0;
    tp__model *model = NULL;
    tp_status st = tp__bpe_new(&v, &o, nm, &model, err);
    tp__vocab_free(&v);
    if (st != TP_OK) return st;
    size_t rank = 0;
    if (cJSON_IsArray(mj)) {
        cJSON_ArrayForEach(it, mj)
        {
            const char *a = NULL, *b = NULL;
            size_t al = 0, bl = 0;
            if (cJSON_IsString(it)) {
                /* "a b": exactly one space, as tokenizers requires */
                const char *sp = strchr(it->valuestring, ' ');
                if (sp && !strchr(sp + 1, ' ')) {
                    a = it->valuestring;
                    al = (size_t)(sp - a);
                    b = sp + 1;
                    bl = strlen(b);
                }
            } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                       cJSON_IsString(cJSON_GetArrayItem(it, 0)) &&
                       cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
                a = cJSON_GetArrayItem(it, 0)->valuestring;
                b = cJSON_GetArrayItem(it, 1)->valuestring;
                al = strlen(a);
                bl = strlen(b);
            }
            if (!a) {
                st = tp__error(err, TP_ERR_FORMAT,
                               "%s: key 'model.merges[%zu]' must be \"a b\" or [a, b]", what, rank);
                break;
            }
            st = tp__bpe_add_merge(model, a, al, b, bl, what, rank, err);
            if (st != TP_OK) break;
            rank++;
        }
    }
    if (st != TP_OK) {
        tp__model_free(model);
        return st;
    }
    *out = model;
    return TP_OK;
}
