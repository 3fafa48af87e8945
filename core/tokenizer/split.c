/* split.c: patterns (a PCRE2 regex compiled with UTF and UCP, or a literal string)
 * and the Split pre-tokenizer: the matches of the pattern in each split, inverted
 * or not, become pieces by tokenizers' SplitDelimiterBehavior (Removed, Isolated,
 * MergedWithPrevious, MergedWithNext, Contiguous); empty pieces vanish. Matches are
 * iterated as the onig crate's find_iter does (an empty match right after the
 * previous match is skipped). Thread-safety: the compiled pattern is read-only;
 * PCRE2 match data is created per call. */
#define _GNU_SOURCE /* memmem */
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

struct tp__pattern {
    pcre2_code *re; /* NULL for a literal */
    char *lit;
    size_t lit_len;
};

void tp__pattern_free(tp__pattern *p)
{
    if (!p) return;
    if (p->re) pcre2_code_free(p->re);
    free(p->lit);
    free(p);
}

tp_status tp__pattern_parse(const cJSON *j, const char *key, const char *what,
                            tp__pattern **out, tp_error *err)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(j, "String");
    const cJSON *r = cJSON_GetObjectItemCaseSensitive(j, "Regex");
    if (!cJSON_IsObject(j) || (!cJSON_IsString(s) && !cJSON_IsString(r)))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key '%s' must be {\"String\": string} or {\"Regex\": string}", what,
                         key);
    tp__pattern *p = calloc(1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    if (cJSON_IsString(s)) {
        p->lit_len = strlen(s->valuestring);
        if (!(p->lit = strdup(s->valuestring))) {
            free(p);
            return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
        }
        *out = p;
        return TP_OK;
    }
    int code;
    PCRE2_SIZE at;
    p->re = pcre2_compile((PCRE2_SPTR)r->valuestring, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP, &code, &at, NULL);
    if (!p->re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof msg);
        free(p);
        return tp__error(err, TP_ERR_UNSUPPORTED, "%s: key '%s.Regex': cannot compile at offset %zu: %s",
                         what, key, (size_t)at, (const char *)msg);
    }
    (void)pcre2_jit_compile(p->re, PCRE2_JIT_COMPLETE); /* the interpreter is the fallback */
    *out = p;
    return TP_OK;
}

tp_status tp__pattern_each(const tp__pattern *p, const char *s, size_t len, tp__match_fn fn,
                           void *ctx, tp_error *err)
{
    if (!p->re) {
        if (!p->lit_len) return TP_OK;
        size_t i = 0;
        while (i + p->lit_len <= len) {
            const char *hit = memmem(s + i, len - i, p->lit, p->lit_len);
            if (!hit) break;
            size_t a = (size_t)(hit - s);
            TP_TRY(fn(ctx, a, a + p->lit_len, err));
            i = a + p->lit_len;
        }
        return TP_OK;
    }
    if (tp__utf8_invalid_at(s, len) < len)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "pattern: text is not valid UTF-8");
    pcre2_match_data *md = pcre2_match_data_create_from_pattern(p->re, NULL);
    if (!md) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    tp_status st = TP_OK;
    size_t last_end = 0;
    int have_last = 0;
    size_t last_match_end = 0;
    while (last_end <= len) {
        int rc = pcre2_match(p->re, (PCRE2_SPTR)s, len, last_end, PCRE2_NO_UTF_CHECK, md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            st = tp__error(err, TP_ERR_INVALID_ARGUMENT, "pattern: matching failed: %s",
                           (const char *)msg);
            break;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t a = ov[0], b = ov[1];
        if (a == b && have_last && last_match_end == b) {
            /* skip the empty match that touches the previous one */
            if (last_end >= len) break;
            unsigned char c = (unsigned char)s[last_end];
            last_end += c < 0x80 ? 1 : c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
            continue;
        }
        last_end = b;
        last_match_end = b;
        have_last = 1;
        if ((st = fn(ctx, a, b, err)) != TP_OK) break;
    }
    pcre2_match_data_free(md);
    return st;
}

/* ------------------------------------------------------------ Split */

typedef struct piece {
    uint32_t start, end;
    int flag; /* is_match, then "remove" */
} piece;

typedef struct split_pre {
    tp__pre_tokenizer base;
    tp__pattern *pat;
    int behavior, invert;
} split_pre;

typedef struct collect {
    tp__vec *v;
    size_t prev;
} collect;

static tp_status push_piece(tp__vec *v, size_t a, size_t b, int flag, tp_error *err)
{
    piece *p = tp__vec_push(v, err);
    if (!p) return err ? err->status : TP_ERR_NOMEM;
    p->start = (uint32_t)a;
    p->end = (uint32_t)b;
    p->flag = flag;
    return TP_OK;
}

static tp_status on_match(void *ctx, size_t a, size_t b, tp_error *err)
{
    collect *c = ctx;
    if (a != c->prev) TP_TRY(push_piece(c->v, c->prev, a, 0, err));
    TP_TRY(push_piece(c->v, a, b, 1, err));
    c->prev = b;
    return TP_OK;
}

/* Rewrites the (start, end, is_match) list into (start, end, remove) pieces. */
static size_t apply_behavior(piece *p, size_t n, int behavior)
{
    size_t o = 0;
    int prev_match = 0;
    switch (behavior) {
    case TP__SPLIT_REMOVED:
        return n;
    case TP__SPLIT_ISOLATED:
        for (size_t i = 0; i < n; i++) p[i].flag = 0;
        return n;
    case TP__SPLIT_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            int m = p[i].flag;
            if (m && !prev_match && o > 0) {
                p[o - 1].end = p[i].end;
            } else {
                p[o] = p[i];
                p[o].flag = 0;
                o++;
            }
            prev_match = m;
        }
        return o;
    case TP__SPLIT_MERGED_NEXT: {
        /* the same from the right, then the order restored */
        size_t i = n;
        o = n;
        while (i-- > 0) {
            int m = p[i].flag;
            if (m && !prev_match && o < n) {
                p[o].start = p[i].start;
            } else {
                o--;
                p[o] = p[i];
                p[o].flag = 0;
            }
            prev_match = m;
        }
        memmove(p, p + o, (n - o) * sizeof *p);
        return n - o;
    }
    case TP__SPLIT_CONTIGUOUS:
    default:
        for (size_t i = 0; i < n; i++) {
            int m = p[i].flag;
            if (i > 0 && m == prev_match && o > 0) {
                p[o - 1].end = p[i].end;
            } else {
                p[o] = p[i];
                p[o].flag = 0;
                o++;
            }
            prev_match = m;
        }
        return o;
    }
}

static tp_status split_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    const split_pre *sp = (const split_pre *)self;
    tp__vec pieces = {NULL, 0, 0, sizeof(piece)};
    tp_status st = TP_OK;
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    for (size_t k = 0; k < w->splits.len && st == TP_OK; k++) {
        tp__split s = ((const tp__split *)w->splits.data)[k];
        if (s.added >= 0) {
            tp__split *o = tp__vec_push(&w->splits2, err);
            if (!o) { st = err ? err->status : TP_ERR_NOMEM; break; }
            *o = s;
            continue;
        }
        if (!s.len) continue;
        pieces.len = 0;
        collect c = {&pieces, 0};
        st = tp__pattern_each(sp->pat, w->arena.s + s.off, s.len, on_match, &c, err);
        if (st == TP_OK && c.prev != s.len) st = push_piece(&pieces, c.prev, s.len, 0, err);
        if (st != TP_OK) break;
        piece *p = pieces.data;
        size_t n = pieces.len;
        if (sp->invert)
            for (size_t i = 0; i < n; i++) p[i].flag = !p[i].flag;
        n = apply_behavior(p, n, sp->behavior);
        for (size_t i = 0; i < n; i++) {
            if (p[i].flag || p[i].end <= p[i].start) continue;
            tp__split *o = tp__vec_push(&w->splits2, err);
            if (!o) { st = err ? err->status : TP_ERR_NOMEM; break; }
            o->off = s.off + p[i].start;
            o->len = p[i].end - p[i].start;
            o->added = -1;
        }
    }
    tp__vec_free(&pieces);
    if (st != TP_OK) return st;
    tp__vec t = w->splits;
    w->splits = w->splits2;
    w->splits2 = t;
    return TP_OK;
}

static void split_free(tp__pre_tokenizer *self)
{
    split_pre *sp = (split_pre *)self;
    tp__pattern_free(sp->pat);
    free(sp);
}

static const tp__pre_tokenizer_ops split_ops = {"Split", split_pre_tokenize, split_free};

tp_status tp__split_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                              tp_error *err)
{
    static const char *const names[] = {"Removed", "Isolated", "MergedWithPrevious",
                                        "MergedWithNext", "Contiguous"};
    const char *beh;
    int invert;
    TP_TRY(tp__json_string(j, "behavior", NULL, &beh, what, err));
    TP_TRY(tp__json_bool(j, "invert", 0, &invert, what, err));
    int b = -1;
    for (int i = 0; beh && i < 5; i++)
        if (strcmp(beh, names[i]) == 0) b = i;
    if (b < 0)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'pre_tokenizer.behavior' must be one of Removed, Isolated, "
                         "MergedWithPrevious, MergedWithNext, Contiguous",
                         what);
    split_pre *sp = calloc(1, sizeof *sp);
    if (!sp) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    sp->base.ops = &split_ops;
    sp->behavior = b;
    sp->invert = invert;
    tp_status st = tp__pattern_parse(cJSON_GetObjectItemCaseSensitive(j, "pattern"),
                                     "pre_tokenizer.pattern", what, &sp->pat, err);
    if (st != TP_OK) {
        free(sp);
        return st;
    }
    *out = &sp->base;
    return TP_OK;
}
