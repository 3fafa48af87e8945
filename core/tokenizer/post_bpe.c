/* post_bpe.c: the post-processors of byte-level BPE tokenizers: RobertaProcessing
 * (<s> A </s> and <s> A </s></s> B </s>, every type id 0), ByteLevel (no special
 * tokens) and Sequence, with tokenizers' trim_offsets: a token's leading and
 * trailing 'Ġ' or whitespace characters are cut from its offsets, except the one
 * space add_prefix_space put before the first token. Thread-safety: immutable after
 * construction. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/json_util.h"
#include "tokenizer/bpe_family.h"

#define GHAT 0x120u /* the byte-level stand-in of ' ' */

static int trim_char(uint32_t c) { return c == GHAT || tp__uc_is_whitespace(c); }

static void trim_offsets(const tp__work *w, tp__seq *seq, int add_prefix_space)
{
    const tp__tok *t = w->toks.data;
    int32_t *offs = seq->offs.data;
    for (size_t i = 0; i < w->toks.len && 2 * i + 1 < seq->offs.len; i++) {
        const char *s = w->arena.s + t[i].start;
        size_t len = t[i].end - t[i].start, p = 0;
        int32_t lead = 0, trail = 0;
        while (p < len) {
            uint32_t c;
            int k = tp__utf8_decode(s + p, len - p, &c);
            if (!trim_char(c)) break;
            lead++;
            p += (size_t)k;
        }
        size_t q = len;
        while (q > 0) {
            size_t j = q - 1;
            while (j > 0 && ((unsigned char)s[j] & 0xC0) == 0x80) j--;
            uint32_t c;
            tp__utf8_decode(s + j, q - j, &c);
            if (!trim_char(c)) break;
            trail++;
            q = j;
        }
        int32_t *o = offs + 2 * i;
        if (lead > 0) {
            int is_first = i == 0 || o[0] == 0;
            if (is_first && add_prefix_space && lead == 1) lead = 0;
            o[0] = o[0] + lead < o[1] ? o[0] + lead : o[1];
        }
        if (trail > 0 && o[1] >= trail) o[1] = o[1] - trail > o[0] ? o[1] - trail : o[0];
    }
}

/* ------------------------------------------------------------ RobertaProcessing */

typedef struct roberta_pp {
    tp__post_processor base;
    int32_t cls, sep;
    int trim, add_prefix_space;
    tp__piece single[3], pair[6];
} roberta_pp;

static void roberta_layout(const tp__post_processor *self, int pair, const tp__piece **pieces,
                           size_t *n)
{
    const roberta_pp *r = (const roberta_pp *)self;
    *pieces = pair ? r->pair : r->single;
    *n = pair ? 6 : 3;
}

static void roberta_offsets(const tp__post_processor *self, const tp__work *w, tp__seq *seq)
{
    const roberta_pp *r = (const roberta_pp *)self;
    if (r->trim) trim_offsets(w, seq, r->add_prefix_space);
}

static void pp_free(tp__post_processor *self) { free(self); }

static const tp__post_processor_ops roberta_ops = {"RobertaProcessing", roberta_layout, pp_free};

tp_status tp__roberta_processing_new(int32_t cls, int32_t sep, int trim, int add_prefix_space,
                                     tp__post_processor **out, tp_error *err)
{
    roberta_pp *r = calloc(1, sizeof *r);
    if (!r) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    r->base.ops = &roberta_ops;
    r->base.process_offsets = roberta_offsets;
    r->cls = cls;
    r->sep = sep;
    r->trim = trim;
    r->add_prefix_space = add_prefix_space;
    /* the pieces point at the struct's own ids */
    r->single[0] = (tp__piece){0, 0, 0, &r->cls, 1};
    r->single[1] = (tp__piece){1, 0, 0, NULL, 0};
    r->single[2] = (tp__piece){0, 0, 0, &r->sep, 1};
    r->pair[0] = (tp__piece){0, 0, 0, &r->cls, 1};
    r->pair[1] = (tp__piece){1, 0, 0, NULL, 0};
    r->pair[2] = (tp__piece){0, 0, 0, &r->sep, 1};
    r->pair[3] = (tp__piece){0, 0, 0, &r->sep, 1};
    r->pair[4] = (tp__piece){1, 1, 0, NULL, 0};
    r->pair[5] = (tp__piece){0, 0, 0, &r->sep, 1};
    *out = &r->base;
    return TP_OK;
}

/* [token, id] */
static tp_status token_pair(const cJSON *j, const char *key, const char *what, int32_t def,
                            int32_t *id, tp_error *err)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(j, key);
    if (!a) {
        *id = def;
        return TP_OK;
    }
    const cJSON *v = cJSON_GetArrayItem(a, 1);
    if (!cJSON_IsArray(a) || !cJSON_IsString(cJSON_GetArrayItem(a, 0)) || !cJSON_IsNumber(v) ||
        v->valuedouble < 0 || v->valuedouble > 2e9)
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'post_processor.%s' must be [token, id]",
                         what, key);
    *id = (int32_t)v->valuedouble;
    return TP_OK;
}

tp_status tp__roberta_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                tp_error *err)
{
    int32_t cls = 0, sep = 0; /* set by token_pair; zeroed for -O3's flow analysis */
    int trim, aps;
    TP_TRY(token_pair(j, "cls", what, 0, &cls, err));
    TP_TRY(token_pair(j, "sep", what, 2, &sep, err));
    TP_TRY(tp__json_bool(j, "trim_offsets", 1, &trim, what, err));
    TP_TRY(tp__json_bool(j, "add_prefix_space", 1, &aps, what, err));
    return tp__roberta_processing_new(cls, sep, trim, aps, out, err);
}

/* ------------------------------------------------------------ ByteLevel */

typedef struct bl_pp {
    tp__post_processor base;
    int trim, add_prefix_space;
} bl_pp;

/* No special tokens: A (type 0), B (type 1). */
static const tp__piece def_single[1] = {{1, 0, 0, NULL, 0}};
static const tp__piece def_pair[2] = {{1, 0, 0, NULL, 0}, {1, 1, 1, NULL, 0}};

static void bl_layout(const tp__post_processor *self, int pair, const tp__piece **pieces,
                      size_t *n)
{
    (void)self;
    *pieces = pair ? def_pair : def_single;
    *n = pair ? 2 : 1;
}

static void bl_offsets(const tp__post_processor *self, const tp__work *w, tp__seq *seq)
{
    const bl_pp *b = (const bl_pp *)self;
    if (b->trim) trim_offsets(w, seq, b->add_prefix_space);
}

static const tp__post_processor_ops bl_ops = {"ByteLevel", bl_layout, pp_free};

tp_status tp__byte_level_pp_from_json(const cJSON *j, const char *what,
                                      tp__post_processor **out, tp_error *err)
{
    bl_pp *b = calloc(1, sizeof *b);
    if (!b) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    b->base.ops = &bl_ops;
    b->base.process_offsets = bl_offsets;
    tp_status st = tp__json_bool(j, "trim_offsets", 1, &b->trim, what, err);
    if (st == TP_OK) st = tp__json_bool(j, "add_prefix_space", 1, &b->add_prefix_space, what, err);
    if (st != TP_OK) {
        free(b);
        return st;
    }
    *out = &b->base;
    return TP_OK;
}

/* ------------------------------------------------------------ Sequence */

typedef struct seq_pp {
    tp__post_processor base;
    tp__post_processor **items;
    size_t n;
} seq_pp;

static void seq_layout(const tp__post_processor *self, int pair, const tp__piece **pieces,
                       size_t *n)
{
    const seq_pp *s = (const seq_pp *)self;
    *pieces = pair ? def_pair : def_single;
    *n = pair ? 2 : 1;
    /* the template comes from the processor that adds tokens (the last, if several) */
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->ops != &bl_ops) s->items[i]->ops->layout(s->items[i], pair, pieces, n);
}

static void seq_offsets(const tp__post_processor *self, const tp__work *w, tp__seq *seq)
{
    const seq_pp *s = (const seq_pp *)self;
    for (size_t i = 0; i < s->n; i++)
        if (s->items[i]->process_offsets) s->items[i]->process_offsets(s->items[i], w, seq);
}

static void seq_free(tp__post_processor *self)
{
    seq_pp *s = (seq_pp *)self;
    for (size_t i = 0; i < s->n; i++) tp__post_processor_free(s->items[i]);
    free(s->items);
    free(s);
}

static const tp__post_processor_ops seq_ops = {"Sequence", seq_layout, seq_free};

tp_status tp__sequence_pp_from_json(const cJSON *j, const char *what, tp__post_processor **out,
                                    tp_error *err)
{
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "processors");
    if (!cJSON_IsArray(arr))
        return tp__error(err, TP_ERR_FORMAT, "%s: key 'post_processor.processors' must be an array",
                         what);
    seq_pp *s = calloc(1, sizeof *s);
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (s) s->items = calloc(cnt ? cnt : 1, sizeof *s->items);
    if (!s || !s->items) {
        free(s);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    s->base.ops = &seq_ops;
    s->base.process_offsets = seq_offsets;
    const cJSON *it;
    cJSON_ArrayForEach(it, arr)
    {
        tp__post_processor *child = NULL;
        tp_status st = tp__post_processor_from_json(it, what, NULL, &child, err);
        if (st != TP_OK) {
            seq_free(&s->base);
            return st;
        }
        if (child) s->items[s->n++] = child;
    }
    *out = &s->base;
    return TP_OK;
}
