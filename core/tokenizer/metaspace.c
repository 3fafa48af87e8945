/* metaspace.c: the Metaspace pre-tokenizer (spaces become the replacement
 * character, U+2581 by default; a replacement is prepended per prepend_scheme
 * "always" / "first" / "never"; with split, every replacement starts a new piece)
 * and the Metaspace, BPEDecoder and CTC decoders, as tokenizers defines them.
 * New text is appended to the work arena, each byte keeping the span of the
 * character it comes from (the prepended one takes the first character's).
 * Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

/* ------------------------------------------------------------ pre-tokenizer */

typedef struct metaspace {
    tp__pre_tokenizer base;
    char rep[5];
    size_t rep_len;
    int prepend, split;
} metaspace;

static tp_status push_split(tp__vec *v, uint32_t off, uint32_t len, int32_t added, tp_error *err)
{
    tp__split *s = tp__vec_push(v, err);
    if (!s) return err ? err->status : TP_ERR_NOMEM;
    s->off = off;
    s->len = len;
    s->added = added;
    return TP_OK;
}

static tp_status ms_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    const metaspace *m = (const metaspace *)self;
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    for (size_t k = 0; k < w->splits.len; k++) {
        tp__split sp = ((const tp__split *)w->splits.data)[k];
        if (sp.added >= 0) {
            TP_TRY(push_split(&w->splits2, sp.off, sp.len, sp.added, err));
            continue;
        }
        if (!sp.len) continue;
        const char *s = w->arena.s + sp.off;
        size_t spaces = 0;
        for (uint32_t i = 0; i < sp.len; i++) spaces += s[i] == ' ';
        int starts = s[0] == ' ' ||
                     (sp.len >= m->rep_len && memcmp(s, m->rep, m->rep_len) == 0);
        int prepend = !starts && (m->prepend == TP__PREPEND_ALWAYS ||
                                  (m->prepend == TP__PREPEND_FIRST &&
                                   w->arena.al[sp.off].start == 0));
        uint32_t off = sp.off, len = sp.len;
        if (spaces || prepend) {
            size_t need = w->arena.len + sp.len + (spaces + 1) * m->rep_len;
            if (need > UINT32_MAX)
                return tp__error(err, TP_ERR_INVALID_ARGUMENT, "text is too long");
            TP_TRY(tp__nstr_reserve(&w->arena, need, err));
            tp__nstr *a = &w->arena;
            off = (uint32_t)a->len;
            if (prepend) {
                tp__span first = a->al[sp.off];
                for (size_t b = 0; b < m->rep_len; b++) {
                    a->s[a->len] = m->rep[b];
                    a->al[a->len++] = first;
                }
            }
            for (uint32_t i = sp.off; i < sp.off + sp.len; i++) {
                if (a->s[i] == ' ') {
                    tp__span ssp = a->al[i];
                    for (size_t b = 0; b < m->rep_len; b++) {
                        a->s[a->len] = m->rep[b];
                        a->al[a->len++] = ssp;
                    }
                } else {
                    a->s[a->len] = a->s[i];
                    a->al[a->len++] = a->al[i];
                }
            }
            len = (uint32_t)(a->len - off);
        }
        if (!m->split) {
            TP_TRY(push_split(&w->splits2, off, len, -1, err));
            continue;
        }
        /* MergedWithNext: each replacement opens a piece */
        const char *t = w->arena.s + off;
        uint32_t start = 0;
        for (uint32_t i = 1; i + m->rep_len <= len; i++) {
            if (t[i] == m->rep[0] && memcmp(t + i, m->rep, m->rep_len) == 0) {
                TP_TRY(push_split(&w->splits2, off + start, i - start, -1, err));
                start = i;
            }
        }
        TP_TRY(push_split(&w->splits2, off + start, len - start, -1, err));
    }
    tp__vec t = w->splits;
    w->splits = w->splits2;
    w->splits2 = t;
    return TP_OK;
}

static void ms_free(tp__pre_tokenizer *self) { free(self); }

static const tp__pre_tokenizer_ops ms_ops = {"Metaspace", ms_pre_tokenize, ms_free};

static tp_status set_rep(char *rep, size_t *rep_len, const char *r, const char *what,
                         tp_error *err)
{
    size_t n = strlen(r);
    uint32_t cp;
    if (n == 0 || n > 4 || (size_t)tp__utf8_decode(r, n, &cp) != n || tp__utf8_invalid_at(r, n) < n)
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'replacement' must be one character", what);
    memcpy(rep, r, n);
    rep[n] = '\0';
    *rep_len = n;
    return TP_OK;
}

tp_status tp__metaspace_pre_new(const char *replacement, int prepend_scheme, int split,
                                tp__pre_tokenizer **out, tp_error *err)
{
    metaspace *m = calloc(1, sizeof *m);
    if (!m) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    m->base.ops = &ms_ops;
    tp_status st = set_rep(m->rep, &m->rep_len, replacement, "Metaspace", err);
    if (st != TP_OK) {
        free(m);
        return st;
    }
    m->prepend = prepend_scheme;
    m->split = split;
    *out = &m->base;
    return TP_OK;
}

/* replacement, prepend_scheme (default "always"; the legacy add_prefix_space false
 * means "never") and split (default true). */
static tp_status ms_options(const cJSON *j, const char *what, const char *stage,
                            const char **rep, int *scheme, int *split, tp_error *err)
{
    TP_TRY(tp__json_string(j, "replacement", "\xE2\x96\x81", rep, what, err));
    const char *ps;
    TP_TRY(tp__json_string(j, "prepend_scheme", "always", &ps, what, err));
    if (strcmp(ps, "always") == 0) *scheme = TP__PREPEND_ALWAYS;
    else if (strcmp(ps, "first") == 0) *scheme = TP__PREPEND_FIRST;
    else if (strcmp(ps, "never") == 0) *scheme = TP__PREPEND_NEVER;
    else
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key '%s.prepend_scheme' must be \"always\", \"first\" or \"never\", "
                         "got \"%s\"",
                         what, stage, ps);
    const cJSON *aps = cJSON_GetObjectItemCaseSensitive(j, "add_prefix_space");
    if (cJSON_IsBool(aps) && cJSON_IsFalse(aps)) {
        const cJSON *psj = cJSON_GetObjectItemCaseSensitive(j, "prepend_scheme");
        if (psj && *scheme != TP__PREPEND_NEVER)
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: %s: add_prefix_space does not match declared prepend_scheme",
                             what, stage);
        *scheme = TP__PREPEND_NEVER;
    }
    if (split) TP_TRY(tp__json_bool(j, "split", 1, split, what, err));
    return TP_OK;
}

tp_status tp__metaspace_pre_from_json(const cJSON *j, const char *what,
                                      tp__pre_tokenizer **out, tp_error *err)
{
    const char *rep;
    int scheme, split;
    TP_TRY(ms_options(j, what, "pre_tokenizer", &rep, &scheme, &split, err));
    return tp__metaspace_pre_new(rep, scheme, split, out, err);
}

/* ------------------------------------------------------------ Metaspace decoder */

typedef struct ms_dec {
    tp__decoder base;
    char rep[5];
    size_t rep_len;
    int prepend;
} ms_dec;

static tp_status ms_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                 tp__toklist *out, tp_error *err)
{
    const ms_dec *d = (const ms_dec *)self;
    const uint32_t *it = in->items.data;
    const char *buf = in->buf.data;
    char *tmp = NULL;
    size_t cap = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        const char *t = buf + it[2 * i];
        size_t len = it[2 * i + 1], o = 0;
        if (len + 1 > cap) {
            char *nb = realloc(tmp, len + 1);
            if (!nb) {
                st = tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
                break;
            }
            tmp = nb;
            cap = len + 1;
        }
        int drop = i == 0 && d->prepend != TP__PREPEND_NEVER;
        for (size_t b = 0; b < len;) {
            if (b + d->rep_len <= len && memcmp(t + b, d->rep, d->rep_len) == 0) {
                if (!drop) tmp[o++] = ' ';
                b += d->rep_len;
            } else {
                tmp[o++] = t[b++];
            }
        }
        st = tp__toklist_add(out, tmp, o, err);
    }
    free(tmp);
    return st;
}

static void dec_free(tp__decoder *self) { free(self); }

static const tp__decoder_ops ms_dec_ops = {"Metaspace", ms_decode_chain, dec_free};

tp_status tp__metaspace_dec_new(const char *replacement, int prepend_scheme, tp__decoder **out,
                                tp_error *err)
{
    ms_dec *d = calloc(1, sizeof *d);
    if (!d) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    d->base.ops = &ms_dec_ops;
    tp_status st = set_rep(d->rep, &d->rep_len, replacement, "Metaspace decoder", err);
    if (st != TP_OK) {
        free(d);
        return st;
    }
    d->prepend = prepend_scheme;
    *out = &d->base;
    return TP_OK;
}

tp_status tp__metaspace_dec_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                      tp_error *err)
{
    const char *rep;
    int scheme;
    TP_TRY(ms_options(j, what, "decoder", &rep, &scheme, NULL, err));
    return tp__metaspace_dec_new(rep, scheme, out, err);
}

/* ------------------------------------------------------------ BPEDecoder, CTC */

typedef struct str_dec {
    tp__decoder base;
    char *a, *b;       /* BPEDecoder: suffix; CTC: pad token, word delimiter */
    int cleanup;
} str_dec;

/* Appends s[0..len) with every `from` replaced by `to` to the growable buffer. */
static tp_status replace_into(char **buf, size_t *cap, size_t *o, const char *s, size_t len,
                              const char *from, const char *to, tp_error *err)
{
    size_t fl = strlen(from), tl = strlen(to);
    size_t need = *o + len * (tl > fl ? tl : 1) + 1;
    if (need > *cap) {
        char *nb = realloc(*buf, need);
        if (!nb) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        *buf = nb;
        *cap = need;
    }
    for (size_t i = 0; i < len;) {
        if (fl && i + fl <= len && memcmp(s + i, from, fl) == 0) {
            memcpy(*buf + *o, to, tl);
            *o += tl;
            i += fl;
        } else {
            (*buf)[(*o)++] = s[i++];
        }
    }
    return TP_OK;
}

static tp_status bpe_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                  tp__toklist *out, tp_error *err)
{
    const str_dec *d = (const str_dec *)self;
    const uint32_t *it = in->items.data;
    char *tmp = NULL;
    size_t cap = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        size_t o = 0;
        st = replace_into(&tmp, &cap, &o, (const char *)in->buf.data + it[2 * i], it[2 * i + 1],
                          d->a, i + 1 == in->items.len ? "" : " ", err);
        if (st == TP_OK) st = tp__toklist_add(out, tmp ? tmp : "", o, err);
    }
    free(tmp);
    return st;
}

static tp_status ctc_decode_chain(const tp__decoder *self, const tp__toklist *in,
                                  tp__toklist *out, tp_error *err)
{
    const str_dec *d = (const str_dec *)self;
    const uint32_t *it = in->items.data;
    const char *buf = in->buf.data;
    char *tmp = NULL, *tmp2 = NULL;
    size_t cap = 0, cap2 = 0;
    tp_status st = TP_OK;
    for (size_t i = 0; i < in->items.len && st == TP_OK; i++) {
        const char *t = buf + it[2 * i];
        size_t len = it[2 * i + 1];
        if (i > 0 && it[2 * i - 1] == len && memcmp(buf + it[2 * i - 2], t, len) == 0)
            continue; /* consecutive duplicates collapse */
        size_t o = 0;
        st = replace_into(&tmp, &cap, &o, t, len, d->a, "", err);
        if (st != TP_OK) break;
        if (d->cleanup) {
            o = tp__cleanup_spaces(tmp ? tmp : "", o, 1);
            size_t o2 = 0;
            st = replace_into(&tmp2, &cap2, &o2, tmp ? tmp : "", o, d->b, " ", err);
            if (st != TP_OK) break;
            if (o2) st = tp__toklist_add(out, tmp2, o2, err);
        } else if (o) {
            st = tp__toklist_add(out, tmp, o, err);
        }
    }
    free(tmp);
    free(tmp2);
    return st;
}

static void str_dec_free(tp__decoder *self)
{
    str_dec *d = (str_dec *)self;
    free(d->a);
    free(d->b);
    free(d);
}

static const tp__decoder_ops bpe_dec_ops = {"BPEDecoder", bpe_decode_chain, str_dec_free};
static const tp__decoder_ops ctc_dec_ops = {"CTC", ctc_decode_chain, str_dec_free};

static tp_status str_dec_new(const tp__decoder_ops *ops, const char *a, const char *b,
                             int cleanup, tp__decoder **out, tp_error *err)
{
    str_dec *d = calloc(1, sizeof *d);
    if (!d || !(d->a = strdup(a)) || !(d->b = strdup(b))) {
        if (d) free(d->a);
        free(d);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    d->base.ops = ops;
    d->cleanup = cleanup;
    *out = &d->base;
    return TP_OK;
}

tp_status tp__bpe_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err)
{
    const char *suffix;
    TP_TRY(tp__json_string(j, "suffix", "</w>", &suffix, what, err));
    return str_dec_new(&bpe_dec_ops, suffix, "", 0, out, err);
}

tp_status tp__ctc_decoder_from_json(const cJSON *j, const char *what, tp__decoder **out,
                                    tp_error *err)
{
    const char *pad, *delim;
    int cleanup;
    TP_TRY(tp__json_string(j, "pad_token", "<pad>", &pad, what, err));
    TP_TRY(tp__json_string(j, "word_delimiter_token", "|", &delim, what, err));
    TP_TRY(tp__json_bool(j, "cleanup", 1, &cleanup, what, err));
    return str_dec_new(&ctc_dec_ops, pad, delim, cleanup, out, err);
}
