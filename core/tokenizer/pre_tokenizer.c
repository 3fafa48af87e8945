/* pre_tokenizer.c: pre-tokenizer components (BertPreTokenizer, WhitespaceSplit,
 * Sequence) and their JSON registry. A pre-tokenizer rewrites the split list of
 * the work area; splits are byte ranges of the normalized arena, so splitting
 * copies nothing. Thread-safety: components are immutable after construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/tok_internal.h"
#include "tokenizer/bpe_family.h"
#include "tokenizer/spm_internal.h"

void tp__pre_tokenizer_free(tp__pre_tokenizer *p)
{
    if (p) p->ops->free(p);
}

static void simple_free(tp__pre_tokenizer *p) { free(p); }

static tp_status emit(tp__vec *out, uint32_t off, uint32_t len, int32_t added, tp_error *err)
{
    tp__split *s = tp__vec_push(out, err);
    if (!s) return err ? err->status : TP_ERR_NOMEM;
    s->off = off;
    s->len = len;
    s->added = added;
    return TP_OK;
}

static void swap_splits(tp__work *w)
{
    tp__vec t = w->splits;
    w->splits = w->splits2;
    w->splits2 = t;
}

/* Splits every plain split on whitespace (removed) and, when `punct`, isolates
 * each punctuation character. */
static tp_status split_ws_punct(tp__work *w, int punct, tp_error *err)
{
    w->splits2.elem = sizeof(tp__split);
    w->splits2.len = 0;
    const tp__split *in = w->splits.data;
    const char *a = w->arena.s;
    for (size_t k = 0; k < w->splits.len; k++) {
        tp__split sp = in[k];
        if (sp.added >= 0) {
            TP_TRY(emit(&w->splits2, sp.off, sp.len, sp.added, err));
            continue;
        }
        uint32_t i = sp.off, end = sp.off + sp.len, start = sp.off;
        while (i < end) {
            unsigned char ch = (unsigned char)a[i];
            uint32_t c;
            int n = 1;
            if (ch < 0x80) c = ch;
            else n = tp__utf8_decode(a + i, end - i, &c);
            if (tp__uc_is_whitespace(c)) {
                if (i > start) TP_TRY(emit(&w->splits2, start, i - start, -1, err));
                start = i + (uint32_t)n;
            } else if (punct && tp__uc_is_bert_punct(c)) {
                if (i > start) TP_TRY(emit(&w->splits2, start, i - start, -1, err));
                TP_TRY(emit(&w->splits2, i, (uint32_t)n, -1, err));
                start = i + (uint32_t)n;
            }
            i += (uint32_t)n;
        }
        if (end > start) TP_TRY(emit(&w->splits2, start, end - start, -1, err));
    }
    swap_splits(w);
    return TP_OK;
}

static tp_status bert_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    (void)self;
    return split_ws_punct(w, 1, err);
}

static tp_status ws_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    (void)self;
    return split_ws_punct(w, 0, err);
}

static const tp__pre_tokenizer_ops bert_ops = {"BertPreTokenizer", bert_pre_tokenize, simple_free};
static const tp__pre_tokenizer_ops ws_ops = {"WhitespaceSplit", ws_pre_tokenize, simple_free};

static tp_status simple_new(const tp__pre_tokenizer_ops *ops, tp__pre_tokenizer **out,
                            tp_error *err)
{
    tp__pre_tokenizer *p = calloc(1, sizeof *p);
    if (!p) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    p->ops = ops;
    *out = p;
    return TP_OK;
}

tp_status tp__bert_pre_tokenizer_new(tp__pre_tokenizer **out, tp_error *err)
{
    return simple_new(&bert_ops, out, err);
}

static tp_status bert_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                                tp_error *err)
{
    (void)j; (void)what;
    return simple_new(&bert_ops, out, err);
}

static tp_status ws_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                              tp_error *err)
{
    (void)j; (void)what;
    return simple_new(&ws_ops, out, err);
}

/* ------------------------------------------------------------ Sequence */

typedef struct seq_pre {
    tp__pre_tokenizer base;
    tp__pre_tokenizer **items;
    size_t n;
} seq_pre;

static tp_status seq_pre_tokenize(const tp__pre_tokenizer *self, tp__work *w, tp_error *err)
{
    const seq_pre *s = (const seq_pre *)self;
    for (size_t i = 0; i < s->n; i++) TP_TRY(s->items[i]->ops->pre_tokenize(s->items[i], w, err));
    return TP_OK;
}

static void seq_free(tp__pre_tokenizer *self)
{
    seq_pre *s = (seq_pre *)self;
    for (size_t i = 0; i < s->n; i++) tp__pre_tokenizer_free(s->items[i]);
    free(s->items);
    free(s);
}

static const tp__pre_tokenizer_ops seq_ops = {"Sequence", seq_pre_tokenize, seq_free};

static tp_status seq_from_json(const cJSON *j, const char *what, tp__pre_tokenizer **out,
                               tp_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "pretokenizers");
    if (!cJSON_IsArray(arr))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: key 'pre_tokenizer.pretokenizers' must be an array", what);
    seq_pre *s = calloc(1, sizeof *s);
    if (!s) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    s->base.ops = &seq_ops;
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    s->items = calloc(cnt ? cnt : 1, sizeof *s->items);
    if (!s->items) {
        free(s);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        tp__pre_tokenizer *child = NULL;
        tp_status st = tp__pre_tokenizer_from_json(it, what, &child, err);
        if (st != TP_OK) {
            seq_free(&s->base);
            return st;
        }
        if (child) s->items[s->n++] = child;
    }
    *out = &s->base;
    return TP_OK;
}

/* ------------------------------------------------------------ registry */

typedef tp_status (*pre_parse_fn)(const cJSON *, const char *, tp__pre_tokenizer **,
                                  tp_error *);
static const struct {
    const char *type;
    pre_parse_fn parse;
} kinds[] = {
    {"BertPreTokenizer", bert_from_json},
    {"WhitespaceSplit", ws_from_json},
    {"Sequence", seq_from_json},
    {"ByteLevel", tp__byte_level_pre_from_json},
    {"Split", tp__split_from_json},
    {"Metaspace", tp__metaspace_pre_from_json},
    {"Whitespace", tp__whitespace_pre_from_json},
    {"Digits", tp__digits_pre_from_json},
    {"Punctuation", tp__punctuation_pre_from_json},
};

tp_status tp__pre_tokenizer_from_json(const cJSON *j, const char *what,
                                      tp__pre_tokenizer **out, tp_error *err)
{
    *out = NULL;
    if (!j || cJSON_IsNull(j)) return TP_OK;
    if (!cJSON_IsObject(j))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'pre_tokenizer' must be an object, got %s",
                         what, tp__json_type_name(j));
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    if (!cJSON_IsString(type))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'pre_tokenizer.type' must be a string",
                         what);
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (strcmp(kinds[i].type, type->valuestring) == 0) return kinds[i].parse(j, what, out, err);
    return tp__error(err, TP_ERR_UNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported",
                     what, type->valuestring);
}
