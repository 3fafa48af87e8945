/* char_split.c: pre-tokenizers that split by character classes, as tokenizers
 * defines them: Whitespace (the matches of \w+|[^\w\s]+, whitespace dropped),
 * Digits (numeric characters, each alone or in runs) and Punctuation (ASCII or
 * Unicode P* characters, with a SplitDelimiterBehavior). A character predicate
 * makes one match per matching character; the behaviours then merge pieces the
 * way tokenizers' NormalizedString::split does. Splits are byte ranges of the
 * arena: nothing is copied. Thread-safety: immutable after construction. */
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/spm_internal.h"

enum { B_REMOVED, B_ISOLATED, B_MERGED_PREV, B_MERGED_NEXT, B_CONTIGUOUS };
enum { K_WHITESPACE, K_DIGITS, K_PUNCT };

typedef struct csplit {
    tp__pre_tokenizer base;
    int kind, behavior;
} csplit;

typedef struct cpiece {
    uint32_t a, b;
    int match;
} cpiece;

static int is_numeric(uint32_t c)
{
    if (c < 0x80) return c >= '0' && c <= '9';
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    return p->category == UTF8PROC_CATEGORY_ND || p->category == UTF8PROC_CATEGORY_NL ||
           p->category == UTF8PROC_CATEGORY_NO;
}

static int is_punct(uint32_t c)
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    const utf8proc_property_t *p = utf8proc_get_property((utf8proc_int32_t)c);
    return p->category >= UTF8PROC_CATEGORY_PC && p->category <= UTF8PROC_CATEGORY_PO;
}

static tp_status add_piece(tp__vec *v, uint32_t a, uint32_t b, int match, tp_error *err)
{
    cpiece *p = tp__vec_push(v, err);
    if (!p) return err ? err->status : TP_ERR_NOMEM;
    p->a = a;
    p->b = b;
    p->match = match;
    return TP_OK;
}

/* The behaviours over (piece, is_match) lists; returns the new count, pieces to
 * drop keep match = 1 (only for Removed). */
static size_t behave(cpiece *p, size_t n, int behavior)
{
    size_t o = 0;
    int prev = 0;
    switch (behavior) {
    case B_REMOVED:
        return n;
    case B_ISOLATED:
        for (size_t i = 0; i < n; i++) p[i].match = 0;
        return n;
    case B_MERGED_PREV:
        for (size_t i = 0; i < n; i++) {
            int m = p[i].match;
            if (m && !prev && o > 0) p[o - 1].b = p[i].b;
            else { p[o] = p[i]; p[o++].match = 0; }
            prev = m;
        }
        return o;
    case B_MERGED_NEXT: {
        size_t i = n;
        o = n;
        while (i-- > 0) {
            int m = p[i].match;
            if (m && !prev && o < n) p[o].a = p[i].a;
            else { p[--o] = p[i]; p[o].match = 0; }
            prev = m;
        }
        memmove(p, p + o, (n - o) * sizeof *p);
        return n - o;
    }
    default:
        for (size_t i = 0; i < n; i++) {
            int m = p[i].match;
            if (m == prev && o > 0) p[o - 1].b = p[i].b;
            else { p[o] = p[i]; p[o++].match = 0; }
            prev = m;
        }
        return o;
    }
}

static tp_status cs_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    const csplit *c = (const csplit *)self;
    tp__vec pieces = {NULL, 0, 0, sizeof(cpiece)};
    tp_status st = TP_OK;
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    const char *a = w->arena.s;
    for (size_t k = 0; k < w->splits.len && st == TP_OK; k++) {
        tp__split sp = ((const tp__split *)w->splits.data)[k];
        if (sp.added >= 0 || !sp.len) {
            if (sp.added < 0) continue;
            tp__split *o = tp__vec_push(&w->splits2, err);
            if (!o) { st = err ? err->status : TP_ERR_NOMEM; break; }
            *o = sp;
            continue;
        }
        pieces.len = 0;
        uint32_t i = sp.off, end = sp.off + sp.len, gap = sp.off;
        int run_class = -1; /* Whitespace: 0 word run, 1 other run */
        uint32_t run_start = 0;
        while (i < end && st == TP_OK) {
            uint32_t ch;
            uint32_t n = (uint32_t)tp__utf8_decode(a + i, end - i, &ch);
            if (c->kind == K_WHITESPACE) {
                /* kept runs are the regex matches; whitespace goes */
                int cls = tp__uc_is_word(ch) ? 0 : tp__uc_is_whitespace(ch) ? 2 : 1;
                if (cls != run_class) {
                    if (run_class == 0 || run_class == 1)
                        st = add_piece(&pieces, run_start, i, 0, err);
                    run_class = cls;
                    run_start = i;
                }
            } else {
                int m = c->kind == K_DIGITS ? is_numeric(ch) : is_punct(ch);
                if (m) {
                    if (i > gap) st = add_piece(&pieces, gap, i, 0, err);
                    if (st == TP_OK) st = add_piece(&pieces, i, i + n, 1, err);
                    gap = i + n;
                }
            }
            i += n;
        }
        if (st != TP_OK) break;
        if (c->kind == K_WHITESPACE) {
            if (run_class == 0 || run_class == 1) st = add_piece(&pieces, run_start, end, 0, err);
        } else if (end > gap) {
            st = add_piece(&pieces, gap, end, 0, err);
        }
        if (st != TP_OK) break;
        cpiece *p = pieces.data;
        size_t n = c->kind == K_WHITESPACE ? pieces.len : behave(p, pieces.len, c->behavior);
        for (size_t j = 0; j < n && st == TP_OK; j++) {
            if (p[j].match || p[j].b <= p[j].a) continue;
            tp__split *o = tp__vec_push(&w->splits2, err);
            if (!o) { st = err ? err->status : TP_ERR_NOMEM; break; }
            o->off = p[j].a;
            o->len = p[j].b - p[j].a;
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

static void cs_free(tp__pre_tokenizer *self) { free(self); }

static const tp__pre_tokenizer_ops ws_ops = {"Whitespace", cs_pre_tokenize, cs_free};
static const tp__pre_tokenizer_ops digits_ops = {"Digits", cs_pre_tokenize, cs_free};
static const tp__pre_tokenizer_ops punct_ops = {"Punctuation", cs_pre_tokenize, cs_free};

static tp_status cs_new(const tp__pre_tokenizer_ops *ops, int kind, int behavior,
                        tp__pre_tokenizer **out, tp_error *err)
{
    csplit *c = calloc(1, sizeof *c);
    if (!c) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    c->base.ops = ops;
    c->kind = kind;
    c->behavior = behavior;
    *out = &c->base;
    return TP_OK;
}

tp_status tp__whitespace_pre_from_json(const cJSON *j, const char *what,
                                       tp__pre_tokenizer **out, tp_error *err)
{
    (void)j; (void)what;
    return cs_new(&ws_ops, K_WHITESPACE, B_REMOVED, out, err);
}

tp_status tp__digits_pre_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                                   tp_error *err)
{
    int individual;
    TP_TRY(tp__json_bool(j, "individual_digits", 0, &individual, what, err));
    return cs_new(&digits_ops, K_DIGITS, individual ? B_ISOLATED : B_CONTIGUOUS, out, err);
}

tp_status tp__punctuation_pre_from_json(const cJSON *j, const char *what,
                                        tp__pre_tokenizer **out, tp_error *err)
{
    static const char *const names[] = {"removed", "isolated", "merged_with_previous",
                                        "merged_with_next", "contiguous"};
    const char *b;
    TP_TRY(tp__json_string(j, "behavior", "isolated", &b, what, err));
    for (int i = 0; i < 5; i++)
        if (strcmp(b, names[i]) == 0) return cs_new(&punct_ops, K_PUNCT, i, out, err);
    return tp__error(err, TP_ERR_FORMAT,
                     "%s: key 'pre_tokenizer.behavior' must be one of removed, isolated, "
                     "merged_with_previous, merged_with_next, contiguous; got \"%s\"",
                     what, b);
}
