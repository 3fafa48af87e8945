/* added_tokens.c: the added vocabulary (special and plain added tokens) and the
 * splitting of text around them, as tokenizers' AddedVocabulary does it:
 * leftmost-longest non-overlapping matches, non-normalized tokens on the raw text
 * and normalized ones on the normalized text, with the single_word, lstrip and
 * rstrip rules. Thread-safety: immutable after tp__added_finish. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/tok_internal.h"

tp_status tp__added_add(tp__added_vocab *av, const char *content, int32_t id, int special,
                        int single_word, int lstrip, int rstrip, int normalized, tp_error *err)
{
    if (!av->by_content.n_slots) TP_TRY(tp__vocab_init(&av->by_content, 16, err));
    size_t len = strlen(content);
    int32_t at = tp__vocab_find(&av->by_content, content, len);
    tp__added_token *t;
    if (at >= 0) {
        t = &av->tokens[at];
    } else {
        if (av->n == av->cap) {
            size_t c = av->cap ? av->cap * 2 : 8;
            tp__added_token *n = realloc(av->tokens, c * sizeof *n);
            if (!n) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
            av->tokens = n;
            av->cap = c;
        }
        t = &av->tokens[av->n];
        memset(t, 0, sizeof *t);
        t->content = strdup(content);
        if (!t->content) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        t->len = len;
        TP_TRY(tp__vocab_add(&av->by_content, content, len, (int32_t)av->n, err));
        av->n++;
    }
    t->id = id;
    t->special = special;
    t->single_word = single_word;
    t->lstrip = lstrip;
    t->rstrip = rstrip;
    t->normalized = normalized;
    return TP_OK;
}

const tp__added_token *tp__added_by_id(const tp__added_vocab *av, int32_t id)
{
    /* a handful of tokens in practice; the last one added with an id wins */
    for (size_t i = av->n; i-- > 0;)
        if (av->tokens[i].id == id) return &av->tokens[i];
    return NULL;
}

const tp__added_token *tp__added_by_content(const tp__added_vocab *av, const char *s,
                                            size_t len)
{
    if (!av->n) return NULL;
    int32_t at = tp__vocab_find(&av->by_content, s, len);
    return at >= 0 ? &av->tokens[at] : NULL;
}

static const char *pattern(const tp__added_token *t, int normalized, size_t *len)
{
    if (normalized) {
        *len = t->norm_len;
        return t->norm;
    }
    *len = t->len;
    return t->content;
}

/* Buckets the tokens of one matcher by first byte, longest first. */
static tp_status build_index(tp__added_vocab *av, int normalized, uint32_t **idx_out,
                             uint32_t start[257], tp_error *err)
{
    uint32_t *idx = malloc((av->n ? av->n : 1) * sizeof *idx);
    if (!idx) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t cnt[256] = {0};
    for (size_t i = 0; i < av->n; i++) {
        size_t len;
        const char *p = pattern(&av->tokens[i], normalized, &len);
        if (av->tokens[i].normalized != normalized || !p || !len) continue;
        cnt[(unsigned char)p[0]]++;
    }
    uint32_t acc = 0;
    for (int b = 0; b < 256; b++) {
        start[b] = acc;
        acc += (uint32_t)cnt[b];
    }
    start[256] = acc;
    uint32_t fill[256];
    memcpy(fill, start, sizeof fill);
    for (size_t i = 0; i < av->n; i++) {
        size_t len;
        const char *p = pattern(&av->tokens[i], normalized, &len);
        if (av->tokens[i].normalized != normalized || !p || !len) continue;
        unsigned b = (unsigned char)p[0];
        /* insertion keeping longer patterns first */
        uint32_t k = fill[b]++;
        while (k > start[b]) {
            size_t ol;
            pattern(&av->tokens[idx[k - 1]], normalized, &ol);
            if (ol >= len) break;
            idx[k] = idx[k - 1];
            k--;
        }
        idx[k] = (uint32_t)i;
    }
    free(*idx_out);
    *idx_out = idx;
    return TP_OK;
}

tp_status tp__added_finish(tp__added_vocab *av, const tp__normalizer *norm, tp_error *err)
{
    tp__nstr n = {0}, tmp = {0};
    tp_status st = TP_OK;
    for (size_t i = 0; i < av->n && st == TP_OK; i++) {
        tp__added_token *t = &av->tokens[i];
        if (!t->normalized) continue;
        n.len = 0;
        tp__span sp = {0, 0};
        st = tp__nstr_append(&n, t->content, t->len, NULL, sp, err);
        if (st == TP_OK) st = tp__normalize(norm, &n, &tmp, err);
        if (st != TP_OK) break;
        free(t->norm);
        t->norm = malloc(n.len + 1);
        if (!t->norm) {
            st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
            break;
        }
        if (n.len) memcpy(t->norm, n.s, n.len);
        t->norm[n.len] = '\0';
        t->norm_len = n.len;
    }
    tp__nstr_free(&n);
    tp__nstr_free(&tmp);
    if (st == TP_OK) st = build_index(av, 0, &av->raw_idx, av->raw_start, err);
    if (st == TP_OK) st = build_index(av, 1, &av->norm_idx, av->norm_start, err);
    return st;
}

static int ends_with_word(const char *s, size_t len)
{
    if (!len) return 0;
    size_t i = len - 1;
    while (i > 0 && ((unsigned char)s[i] & 0xC0) == 0x80) i--;
    uint32_t c;
    tp__utf8_decode(s + i, len - i, &c);
    return tp__uc_is_word(c);
}

static int starts_with_word(const char *s, size_t len)
{
    if (!len) return 0;
    uint32_t c;
    tp__utf8_decode(s, len, &c);
    return tp__uc_is_word(c);
}

/* Start of the run of whitespace that ends s[0..len). */
static size_t ws_run_start(const char *s, size_t len)
{
    size_t i = len;
    while (i > 0) {
        size_t j = i - 1;
        while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
        uint32_t c;
        tp__utf8_decode(s + j, i - j, &c);
        if (!tp__uc_is_whitespace(c)) break;
        i = j;
    }
    return i;
}

/* Length of the run of whitespace that starts s[0..len). */
static size_t ws_run_len(const char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        uint32_t c;
        int k = tp__utf8_decode(s + i, len - i, &c);
        if (!tp__uc_is_whitespace(c)) break;
        i += (size_t)k;
    }
    return i;
}

static tp_status emit(tp__vec *out, uint32_t off, uint32_t len, int32_t added, tp_error *err)
{
    tp__split *s = tp__vec_push(out, err);
    if (!s) return err ? err->status : TP_ERR_NOMEM;
    s->off = off;
    s->len = len;
    s->added = added;
    return TP_OK;
}

tp_status tp__added_split(const tp__added_vocab *av, int normalized, tp__work *w, tp_error *err)
{
    const uint32_t *idx = normalized ? av->norm_idx : av->raw_idx;
    const uint32_t *start_of = normalized ? av->norm_start : av->raw_start;
    if (!idx || start_of[256] == 0) return TP_OK;
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    const tp__split *in = w->splits.data;
    for (size_t k = 0; k < w->splits.len; k++) {
        tp__split sp = in[k];
        if (sp.added >= 0) {
            TP_TRY(emit(&w->splits2, sp.off, sp.len, sp.added, err));
            continue;
        }
        const char *s = w->arena.s + sp.off;
        size_t len = sp.len, done = 0, pos = 0;
        while (pos < len) {
            unsigned b = (unsigned char)s[pos];
            const tp__added_token *hit = NULL;
            size_t hit_len = 0;
            for (uint32_t q = start_of[b]; q < start_of[b + 1]; q++) {
                const tp__added_token *t = &av->tokens[idx[q]];
                size_t pl;
                const char *p = pattern(t, normalized, &pl);
                if (pl <= len - pos && memcmp(s + pos, p, pl) == 0) {
                    hit = t;
                    hit_len = pl;
                    break;
                }
            }
            if (!hit) {
                pos++;
                continue;
            }
            size_t mstart = pos, mstop = pos + hit_len;
            pos = mstop; /* matches never overlap, even a discarded one */
            if (hit->single_word) {
                int start_space = mstart == 0 || !ends_with_word(s, mstart);
                int stop_space = mstop == len || !starts_with_word(s + mstop, len - mstop);
                if (!start_space || !stop_space) continue;
            }
            if (hit->lstrip) {
                size_t ns = ws_run_start(s, mstart);
                mstart = ns > done ? ns : done;
            }
            if (hit->rstrip) mstop += ws_run_len(s + mstop, len - mstop);
            if (done < mstart)
                TP_TRY(emit(&w->splits2, sp.off + (uint32_t)done, (uint32_t)(mstart - done), -1, err));
            TP_TRY(emit(&w->splits2, sp.off + (uint32_t)mstart, (uint32_t)(mstop - mstart), hit->id,
                        err));
            done = mstop;
            pos = mstop;
        }
        if (done < len)
            TP_TRY(emit(&w->splits2, sp.off + (uint32_t)done, (uint32_t)(len - done), -1, err));
    }
    tp__vec t = w->splits;
    w->splits = w->splits2;
    w->splits2 = t;
    return TP_OK;
}

void tp__added_free(tp__added_vocab *av)
{
    for (size_t i = 0; i < av->n; i++) {
        free(av->tokens[i].content);
        free(av->tokens[i].norm);
    }
    free(av->tokens);
    free(av->raw_idx);
    free(av->norm_idx);
    tp__vocab_free(&av->by_content);
    memset(av, 0, sizeof *av);
}
