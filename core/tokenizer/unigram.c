/* unigram.c: the Unigram model: the best segmentation of a word under a unigram
 * language model (Viterbi over a byte-level trie of the pieces), in the two
 * flavours spm_internal.h describes (tokenizers' and sentencepiece's). Characters no
 * piece starts with become unk nodes scored min_score - 10; consecutive unknowns are
 * fused into one token; with byte_fallback an unknown run becomes its <0xXX> byte
 * pieces. The trie stores, per node, its children contiguously and sorted, so the
 * common-prefix search at each position costs one small search per byte and stops
 * as soon as no piece continues. Thread-safety: immutable after construction; the
 * Viterbi table lives in the caller's work area. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

#define UNK_PENALTY 10.0

/* ------------------------------------------------------------ trie */

typedef struct tnode {
    uint32_t first;  /* index of the first child */
    int32_t value;   /* piece index ending here, or -1 */
    uint16_t n;      /* children */
    uint8_t label;   /* byte leading here from the parent */
} tnode;

typedef struct trie {
    tnode *nodes;
    size_t n_nodes;
} trie;

typedef struct tkey {
    const unsigned char *s;
    uint32_t len;
    int32_t value;
} tkey;

static int tkey_cmp(const void *a, const void *b)
{
    const tkey *x = a, *y = b;
    uint32_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->s, y->s, n);
    if (c) return c;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    return x->value < y->value ? -1 : x->value > y->value;
}

/* Builds the trie from keys sorted and deduplicated. Nodes are created in
 * breadth-first order, so node i's children are allocated when i is processed. */
static tp_status trie_build(trie *t, const tkey *k, size_t nk, tp_error *err)
{
    size_t cap = 1;
    for (size_t i = 0; i < nk; i++) cap += k[i].len;
    t->nodes = calloc(cap, sizeof *t->nodes);
    uint32_t *lo = malloc(cap * sizeof *lo), *hi = malloc(cap * sizeof *hi);
    uint32_t *depth = malloc(cap * sizeof *depth);
    if (!t->nodes || !lo || !hi || !depth) {
        free(lo); free(hi); free(depth);
        free(t->nodes);
        t->nodes = NULL;
        return tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory building the trie");
    }
    size_t n = 1;
    lo[0] = 0;
    hi[0] = (uint32_t)nk;
    depth[0] = 0;
    t->nodes[0].value = -1;
    for (size_t i = 0; i < n; i++) {
        uint32_t a = lo[i], b = hi[i], d = depth[i];
        tnode *nd = &t->nodes[i];
        nd->value = -1;
        if (a < b && k[a].len == d) {
            nd->value = k[a].value;
            a++;
        }
        nd->first = (uint32_t)n;
        while (a < b) {
            unsigned char c = k[a].s[d];
            uint32_t e = a + 1;
            while (e < b && k[e].s[d] == c) e++;
            tnode *ch = &t->nodes[n];
            ch->label = c;
            ch->value = -1;
            lo[n] = a;
            hi[n] = e;
            depth[n] = d + 1;
            n++;
            nd->n++;
            a = e;
        }
    }
    free(lo);
    free(hi);
    free(depth);
    t->n_nodes = n;
    return TP_OK;
}

static inline int32_t trie_child(const trie *t, int32_t node, unsigned char c)
{
    const tnode *nd = &t->nodes[node];
    uint32_t a = nd->first, b = nd->first + nd->n;
    while (b - a > 8) {
        uint32_t m = (a + b) / 2;
        if (t->nodes[m].label < c) a = m + 1;
        else if (t->nodes[m].label > c) b = m;
        else return (int32_t)m;
    }
    for (; a < b; a++)
        if (t->nodes[a].label == c) return (int32_t)a;
    return -1;
}

/* ------------------------------------------------------------ model */

typedef struct unigram {
    tp__model base;
    int spm;               /* sentencepiece flavour */
    trie t;
    size_t n_pieces;
    double *score;         /* per piece */
    uint8_t *type;         /* per piece */
    int32_t *out_id;       /* per piece: the id reported */
    char **piece;          /* per piece: string (borrowed from vocab arena or own) */
    uint32_t *piece_len;
    char *piece_arena;
    tp__vocab vocab;       /* reported token <-> id */
    int32_t unk_piece;     /* piece index of unk, -1 none */
    int32_t out_unk;       /* reported id of unk */
    int map_by_string;     /* unknown runs looked up in `vocab` by their text */
    int byte_fallback;
    int32_t byte_piece[256]; /* piece index of <0xXX>, -1 none */
    double min_score;
    float max_score;       /* sentencepiece: over NORMAL pieces */
} unigram;

typedef struct vnode {
    double score;
    int32_t start; /* -1: not reached */
    int32_t piece;
} vnode;

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

static inline int utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
}

/* Emits the token(s) of an unknown run s[a..b) (arena offset `base`).
 * tokenizers: the run's text looked up in the vocabulary, else its byte pieces
 * (byte_fallback, all present), else unk. sentencepiece: byte pieces
 * (byte_fallback), else, for string-mapped ids (Marian), the run's text in the
 * mapped vocabulary, else unk. */
static tp_status emit_unknown(const unigram *m, tp__work *w, const char *s, uint32_t a,
                              uint32_t b, uint32_t base, int32_t word, tp_error *err)
{
    if (!m->spm || (m->map_by_string && !m->byte_fallback)) {
        int32_t id = tp__vocab_find(&m->vocab, s + a, b - a);
        if (id >= 0) return push_tok(w, id, base + a, base + b, word, err);
    }
    if (m->byte_fallback) {
        int all = 1;
        for (uint32_t i = a; i < b; i++)
            if (m->byte_piece[(unsigned char)s[i]] < 0) all = 0;
        if (all) {
            for (uint32_t i = a; i < b; i++) {
                int32_t p = m->byte_piece[(unsigned char)s[i]];
                /* tokenizers: every byte token spans the run; sentencepiece gives
                 * the surface to the last one, the others are empty at its start */
                uint32_t ts = base + a, te = base + b;
                if (m->spm && i + 1 < b) te = ts;
                TP_TRY(push_tok(w, m->out_id[p], ts, te, word, err));
            }
            return TP_OK;
        }
    }
    if (m->unk_piece < 0)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "Unigram: the text has characters no piece covers and the model has "
                         "no unk_id");
    return push_tok(w, m->out_unk, base + a, base + b, word, err);
}

static tp_status uni_tokenize(const tp__model *self, tp__work *w, uint32_t off, uint32_t len,
                              int32_t word, tp_error *err)
{
    const unigram *m = (const unigram *)self;
    if (!len) return TP_OK;
    TP_TRY(tp__work_scratch(w, ((size_t)len + 1) * sizeof(vnode), err));
    vnode *v = (vnode *)(void *)w->scratch;
    const char *s = w->arena.s + off;
    for (uint32_t i = 0; i <= len; i++) {
        v[i].start = -1;
        v[i].score = 0.0;
        v[i].piece = -1;
    }
    const trie *t = &m->t;
    const double unk_score = m->spm ? (double)((float)m->min_score - (float)UNK_PENALTY)
                                    : m->min_score - UNK_PENALTY;
    uint32_t pos = 0;
    while (pos < len) {
        double till = v[pos].score;
        int mblen = utf8_len((unsigned char)s[pos]);
        if ((uint32_t)mblen > len - pos) mblen = (int)(len - pos);
        int single = 0;
        int32_t node = 0;
        for (uint32_t k = pos; k < len; k++) {
            node = trie_child(t, node, (unsigned char)s[k]);
            if (node < 0) break;
            int32_t p = t->nodes[node].value;
            if (p < 0) continue;
            uint32_t end = k + 1, length = end - pos;
            double cand;
            if (m->spm) {
                if (m->type[p] == TP__SPM_UNUSED) continue;
                if (m->type[p] == TP__SPM_USER_DEFINED)
                    cand = ((double)((float)length * m->max_score) - 0.1) + (double)(float)till;
                else
                    cand = (double)((float)m->score[p] + (float)till);
            } else {
                cand = m->score[p] + till;
            }
            vnode *tn = &v[end];
            if (tn->start < 0 || cand > tn->score) {
                tn->score = m->spm ? (double)(float)cand : cand;
                tn->start = (int32_t)pos;
                tn->piece = p;
            }
            if (length == (uint32_t)mblen) single = 1;
        }
        if (!single) {
            vnode *tn = &v[pos + (uint32_t)mblen];
            double cand = m->spm ? (double)((float)unk_score + (float)till) : unk_score + till;
            if (tn->start < 0 || cand > tn->score) {
                tn->score = cand;
                tn->start = (int32_t)pos;
                tn->piece = m->unk_piece; /* -1 when none: still an unknown node */
            }
        }
        pos += (uint32_t)mblen;
    }
    /* backtrack; tokens are pushed last-first, then reversed */
    size_t first = w->toks.len;
    uint32_t end = len, unk_end = 0;
    int in_unk = 0;
    while (end > 0) {
        const vnode *nd = &v[end];
        uint32_t st = (uint32_t)nd->start;
        int is_unk = nd->piece < 0 || nd->piece == m->unk_piece;
        if (is_unk) {
            if (!in_unk) {
                unk_end = end;
                in_unk = 1;
            }
        } else {
            if (in_unk) {
                size_t before = w->toks.len;
                TP_TRY(emit_unknown(m, w, s, end, unk_end, off, word, err));
                /* emit_unknown pushes in text order; keep this group reversed too */
                tp__tok *tk = w->toks.data;
                for (size_t a = before, b = w->toks.len - 1; a < b; a++, b--) {
                    tp__tok x = tk[a]; tk[a] = tk[b]; tk[b] = x;
                }
                in_unk = 0;
            }
            TP_TRY(push_tok(w, m->out_id[nd->piece], off + st, off + end, word, err));
        }
        end = st;
    }
    if (in_unk) {
        size_t before = w->toks.len;
        TP_TRY(emit_unknown(m, w, s, 0, unk_end, off, word, err));
        tp__tok *tk = w->toks.data;
        for (size_t a = before, b = w->toks.len - 1; a < b; a++, b--) {
            tp__tok x = tk[a]; tk[a] = tk[b]; tk[b] = x;
        }
    }
    tp__tok *tk = w->toks.data;
    if (w->toks.len > first)
        for (size_t a = first, b = w->toks.len - 1; a < b; a++, b--) {
            tp__tok x = tk[a]; tk[a] = tk[b]; tk[b] = x;
        }
    return TP_OK;
}

static int32_t uni_token_to_id(const tp__model *self, const char *tok, size_t len)
{
    return tp__vocab_find(&((const unigram *)self)->vocab, tok, len);
}

static const char *uni_id_to_token(const tp__model *self, int32_t id, size_t *len)
{
    return tp__vocab_token(&((const unigram *)self)->vocab, id, len);
}

static size_t uni_vocab_size(const tp__model *self)
{
    return ((const unigram *)self)->vocab.count;
}

static void uni_free(tp__model *self)
{
    unigram *m = (unigram *)self;
    if (!m) return;
    free(m->t.nodes);
    free(m->score);
    free(m->type);
    free(m->out_id);
    free(m->piece);
    free(m->piece_len);
    free(m->piece_arena);
    tp__vocab_free(&m->vocab);
    free(m);
}

static const tp__model_ops uni_ops = {"Unigram", uni_tokenize, uni_token_to_id, uni_id_to_token,
                                      uni_vocab_size, uni_free};

static tp_status alloc_pieces(unigram *m, size_t n, size_t bytes, tp_error *err)
{
    m->n_pieces = n;
    m->score = calloc(n ? n : 1, sizeof *m->score);
    m->type = calloc(n ? n : 1, 1);
    m->out_id = calloc(n ? n : 1, sizeof *m->out_id);
    m->piece = calloc(n ? n : 1, sizeof *m->piece);
    m->piece_len = calloc(n ? n : 1, sizeof *m->piece_len);
    m->piece_arena = malloc(bytes + n + 1);
    if (!m->score || !m->type || !m->out_id || !m->piece || !m->piece_len || !m->piece_arena)
        return tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    for (int i = 0; i < 256; i++) m->byte_piece[i] = -1;
    return TP_OK;
}

/* "<0xXX>" (upper-case hex, as both libraries spell byte pieces) -> byte, else -1. */
static int byte_piece_value(const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    const char *h1 = memchr(hex, s[3], 16), *h2 = memchr(hex, s[4], 16);
    if (!h1 || !h2 || !s[3] || !s[4]) return -1;
    return (int)((h1 - hex) * 16 + (h2 - hex));
}

static tp_status build_trie(unigram *m, tkey *keys, size_t nk, int dedupe_last, const char *what,
                            tp_error *err)
{
    qsort(keys, nk, sizeof *keys, tkey_cmp);
    size_t o = 0;
    for (size_t i = 0; i < nk; i++) {
        if (o > 0 && keys[o - 1].len == keys[i].len &&
            memcmp(keys[o - 1].s, keys[i].s, keys[i].len) == 0) {
            if (!dedupe_last)
                return tp__error(err, TP_ERR_FORMAT, "%s: piece '%.*s' is defined twice", what,
                                 (int)(keys[i].len > 64 ? 64 : keys[i].len),
                                 (const char *)keys[i].s);
            keys[o - 1] = keys[i]; /* sorted by value: the later piece wins */
            continue;
        }
        keys[o++] = keys[i];
    }
    return trie_build(&m->t, keys, o, err);
}

tp_status tp__unigram_new(const tp__unigram_piece *pieces, size_t n, int32_t unk_id,
                          int byte_fallback, tp__model **out, tp_error *err)
{
    if (n > INT32_MAX / 2) return tp__error(err, TP_ERR_FORMAT, "Unigram: vocabulary too large");
    if (unk_id >= 0 && (size_t)unk_id >= n)
        return tp__error(err, TP_ERR_FORMAT, "Unigram: unk_id %d is not in the vocabulary (%zu pieces)",
                         (int)unk_id, n);
    unigram *m = calloc(1, sizeof *m);
    if (!m) return tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    m->base.ops = &uni_ops;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) bytes += pieces[i].len;
    tkey *keys = NULL;
    tp_status st = alloc_pieces(m, n, bytes, err);
    if (st == TP_OK) st = tp__vocab_init(&m->vocab, n, err);
    if (st == TP_OK && !(keys = malloc((n ? n : 1) * sizeof *keys)))
        st = tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    m->min_score = INFINITY;
    size_t at = 0;
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        memcpy(m->piece_arena + at, pieces[i].s, pieces[i].len);
        m->piece_arena[at + pieces[i].len] = '\0';
        m->piece[i] = m->piece_arena + at;
        m->piece_len[i] = (uint32_t)pieces[i].len;
        at += pieces[i].len + 1;
        m->score[i] = pieces[i].score;
        m->type[i] = TP__SPM_NORMAL;
        if (pieces[i].score < m->min_score) m->min_score = pieces[i].score;
        st = tp__vocab_add(&m->vocab, pieces[i].s, pieces[i].len, (int32_t)i, err);
        keys[i].s = (const unsigned char *)m->piece[i];
        keys[i].len = (uint32_t)pieces[i].len;
        keys[i].value = (int32_t)i;
    }
    /* token_to_ids keeps the last duplicate: every piece reports that id */
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        m->out_id[i] = tp__vocab_find(&m->vocab, m->piece[i], m->piece_len[i]);
        int b = byte_piece_value(m->piece[i], m->piece_len[i]);
        if (b >= 0 && m->out_id[i] == (int32_t)i) m->byte_piece[b] = (int32_t)i;
    }
    if (st == TP_OK) st = build_trie(m, keys, n, 1, "Unigram", err);
    free(keys);
    if (st != TP_OK) {
        uni_free(&m->base);
        return st;
    }
    m->unk_piece = unk_id;
    m->out_unk = unk_id;
    m->byte_fallback = byte_fallback;
    *out = &m->base;
    return TP_OK;
}

tp_status tp__unigram_spm_new(const tp__spm_model *spm, tp__vocab *out_vocab, int32_t out_unk,
                              tp__model **out, tp_error *err)
{
    size_t n = spm->n_pieces;
    unigram *m = calloc(1, sizeof *m);
    if (!m) return tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    m->base.ops = &uni_ops;
    m->spm = 1;
    tkey *keys = NULL;
    tp_status st = alloc_pieces(m, n, spm->arena_len, err);
    if (st == TP_OK && !out_vocab) st = tp__vocab_init(&m->vocab, n, err);
    if (st == TP_OK && !(keys = malloc((n ? n : 1) * sizeof *keys)))
        st = tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    float min_s = FLT_MAX, max_s = FLT_MIN;
    size_t nk = 0;
    if (st == TP_OK) memcpy(m->piece_arena, spm->arena, spm->arena_len);
    for (size_t i = 0; i < n && st == TP_OK; i++) {
        const tp__spm_piece *p = &spm->pieces[i];
        m->piece[i] = m->piece_arena + p->off;
        m->piece_len[i] = p->len;
        m->score[i] = p->score;
        m->type[i] = (uint8_t)p->type;
        if (p->type == TP__SPM_NORMAL) {
            if (p->score < min_s) min_s = p->score;
            if (p->score > max_s) max_s = p->score;
        }
        if (p->type == TP__SPM_NORMAL || p->type == TP__SPM_USER_DEFINED ||
            p->type == TP__SPM_UNUSED) {
            keys[nk].s = (const unsigned char *)m->piece[i];
            keys[nk].len = p->len;
            keys[nk].value = (int32_t)i;
            nk++;
        }
        if (p->type == TP__SPM_BYTE) {
            int b = byte_piece_value(m->piece[i], p->len);
            if (b < 0) st = tp__error(err, TP_ERR_FORMAT, "SentencePiece: byte piece '%s' is invalid", m->piece[i]);
            else m->byte_piece[b] = (int32_t)i;
        }
        if (st == TP_OK && !out_vocab) st = tp__vocab_add(&m->vocab, m->piece[i], p->len, (int32_t)i, err);
    }
    if (st == TP_OK) st = build_trie(m, keys, nk, 0, "SentencePiece model", err);
    free(keys);
    if (st == TP_OK && spm->byte_fallback)
        for (int b = 0; b < 256 && st == TP_OK; b++)
            if (m->byte_piece[b] < 0)
                st = tp__error(err, TP_ERR_FORMAT,
                               "SentencePiece model: byte_fallback is set but piece <0x%02X> is "
                               "missing",
                               b);
    if (st != TP_OK) {
        uni_free(&m->base);
        return st;
    }
    m->min_score = min_s;
    m->max_score = max_s;
    m->unk_piece = spm->unk_id;
    m->byte_fallback = spm->byte_fallback;
    if (out_vocab) {
        m->vocab = *out_vocab;
        memset(out_vocab, 0, sizeof *out_vocab);
        m->map_by_string = 1;
        m->out_unk = out_unk;
        for (size_t i = 0; i < n; i++) {
            int32_t id = tp__vocab_find(&m->vocab, m->piece[i], m->piece_len[i]);
            m->out_id[i] = id >= 0 ? id : out_unk;
        }
    } else {
        m->out_unk = spm->unk_id;
        for (size_t i = 0; i < n; i++) m->out_id[i] = (int32_t)i;
    }
    *out = &m->base;
    return TP_OK;
}

tp_status tp__unigram_from_json(const cJSON *j, const char *what, tp__model **out,
                                tp_error *err)
{
    const cJSON *vj = cJSON_GetObjectItemCaseSensitive(j, "vocab");
    if (!vj) return tp__error(err, TP_ERR_FORMAT, "%s: missing key 'model.vocab'", what);
    if (!cJSON_IsArray(vj))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.vocab' must be an array, got %s",
                         what, tp__json_type_name(vj));
    int32_t unk = -1;
    const cJSON *uj = cJSON_GetObjectItemCaseSensitive(j, "unk_id");
    if (uj && !cJSON_IsNull(uj)) {
        if (!cJSON_IsNumber(uj) || uj->valuedouble < 0 || uj->valuedouble > 2e9 ||
            uj->valuedouble != (double)(int32_t)uj->valuedouble)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'model.unk_id' must be a non-negative integer or null", what);
        unk = (int32_t)uj->valuedouble;
    }
    int byte_fallback;
    TP_TRY(tp__json_bool(j, "byte_fallback", 0, &byte_fallback, what, err));
    size_t n = (size_t)cJSON_GetArraySize(vj);
    if (unk >= 0 && n == 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'model.vocab' is empty but unk_id is set",
                         what);
    tp__unigram_piece *p = calloc(n ? n : 1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "Unigram: out of memory");
    size_t i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, vj)
    {
        const cJSON *s = cJSON_GetArrayItem(it, 0), *sc = cJSON_GetArrayItem(it, 1);
        if (!cJSON_IsArray(it) || cJSON_GetArraySize(it) != 2 || !cJSON_IsString(s) ||
            !cJSON_IsNumber(sc)) {
            free(p);
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: key 'model.vocab[%zu]' must be a [piece, score] pair", what, i);
        }
        p[i].s = s->valuestring;
        p[i].len = strlen(s->valuestring);
        p[i].score = sc->valuedouble;
        p[i].type = TP__SPM_NORMAL;
        i++;
    }
    tp_status st = tp__unigram_new(p, n, unk, byte_fallback, out, err);
    free(p);
    if (st != TP_OK && err && err->status == st && strncmp(err->message, "Unigram:", 8) == 0) {
        char msg[sizeof err->message];
        snprintf(msg, sizeof msg, "%s", err->message);
        tp__error(err, st, "%s: model: %s", what, msg);
    }
    return st;
}
