/* encoding.c: tp_encoding, the rows an encode call returns, and the row builder
 * the encoder fills (then pads, left or right, into one contiguous block per
 * field). Thread-safety: an encoding is a plain value; one thread at a time. */
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/encoding.h"

struct tp_encoding {
    size_t rows;
    size_t *row_off, *row_len, *sample;
    int32_t *ids, *mask, *type_ids, *special, *offsets, *words, *seq_ids;
};

enum { F_IDS, F_TYPE, F_SPECIAL, F_OFFS, F_WORDS, F_SEQ, F_COUNT };

void tp__rows_init(tp__rows *r)
{
    memset(r, 0, sizeof *r);
    for (int f = 0; f < F_COUNT; f++) r->f[f].elem = sizeof(int32_t);
    r->row_start.elem = r->row_len.elem = r->sample.elem = sizeof(size_t);
}

void tp__rows_free(tp__rows *r)
{
    for (int f = 0; f < F_COUNT; f++) tp__vec_free(&r->f[f]);
    tp__vec_free(&r->row_start);
    tp__vec_free(&r->row_len);
    tp__vec_free(&r->sample);
}

tp_status tp__rows_begin(tp__rows *r, size_t sample, tp_error *err)
{
    size_t *a = tp__vec_push(&r->row_start, err), *b, *c;
    if (!a || !(b = tp__vec_push(&r->row_len, err)) || !(c = tp__vec_push(&r->sample, err)))
        return err ? err->status : TP_ERR_NOMEM;
    *a = r->f[F_IDS].len;
    *b = 0;
    *c = sample;
    return TP_OK;
}

tp_status tp__rows_reserve(tp__rows *r, size_t n, tp_error *err)
{
    for (int f = 0; f < F_COUNT; f++)
        TP_TRY(tp__vec_reserve(&r->f[f], r->f[f].len + (f == F_OFFS ? 2 * n : n), err));
    return TP_OK;
}

/* Callers reserve first (tp__rows_reserve), so this cannot fail. */
void tp__rows_push(tp__rows *r, int32_t id, int32_t type_id, int32_t special, int32_t start,
                   int32_t end, int32_t word, int32_t seq)
{
    ((int32_t *)r->f[F_IDS].data)[r->f[F_IDS].len++] = id;
    ((int32_t *)r->f[F_TYPE].data)[r->f[F_TYPE].len++] = type_id;
    ((int32_t *)r->f[F_SPECIAL].data)[r->f[F_SPECIAL].len++] = special;
    int32_t *o = (int32_t *)r->f[F_OFFS].data + r->f[F_OFFS].len;
    o[0] = start;
    o[1] = end;
    r->f[F_OFFS].len += 2;
    ((int32_t *)r->f[F_WORDS].data)[r->f[F_WORDS].len++] = word;
    ((int32_t *)r->f[F_SEQ].data)[r->f[F_SEQ].len++] = seq;
    ((size_t *)r->row_len.data)[r->row_len.len - 1]++;
}

size_t tp__rows_longest(const tp__rows *r)
{
    size_t m = 0;
    for (size_t i = 0; i < r->row_len.len; i++)
        if (((size_t *)r->row_len.data)[i] > m) m = ((size_t *)r->row_len.data)[i];
    return m;
}

void tp_encoding_free(tp_encoding *e)
{
    if (!e) return;
    free(e->row_off);
    free(e->row_len);
    free(e->sample);
    free(e->ids);
    free(e->mask);
    free(e->type_ids);
    free(e->special);
    free(e->offsets);
    free(e->words);
    free(e->seq_ids);
    free(e);
}

tp_status tp__rows_finish(tp__rows *r, size_t target, int pad_left, int32_t pad_id,
                          tp_encoding **out, tp_error *err)
{
    size_t rows = r->row_len.len, total = 0;
    const size_t *rs = r->row_start.data, *rl = r->row_len.data;
    for (size_t i = 0; i < rows; i++) total += rl[i] > target ? rl[i] : target;
    tp_encoding *e = calloc(1, sizeof *e);
    if (!e) return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    size_t n = total ? total : 1, nr = rows ? rows : 1;
    e->rows = rows;
    e->row_off = malloc(nr * sizeof(size_t));
    e->row_len = malloc(nr * sizeof(size_t));
    e->sample = malloc(nr * sizeof(size_t));
    e->ids = malloc(n * sizeof(int32_t));
    e->mask = malloc(n * sizeof(int32_t));
    e->type_ids = malloc(n * sizeof(int32_t));
    e->special = malloc(n * sizeof(int32_t));
    e->offsets = malloc(2 * n * sizeof(int32_t));
    e->words = malloc(n * sizeof(int32_t));
    e->seq_ids = malloc(n * sizeof(int32_t));
    if (!e->row_off || !e->row_len || !e->sample || !e->ids || !e->mask || !e->type_ids ||
        !e->special || !e->offsets || !e->words || !e->seq_ids) {
        tp_encoding_free(e);
        return tp__error(err, TP_ERR_NOMEM, "tokenizer: out of memory");
    }
    const int32_t *ids = r->f[F_IDS].data, *ty = r->f[F_TYPE].data, *sp = r->f[F_SPECIAL].data,
                  *of = r->f[F_OFFS].data, *wd = r->f[F_WORDS].data, *sq = r->f[F_SEQ].data;
    size_t at = 0;
    for (size_t i = 0; i < rows; i++) {
        size_t len = rl[i], full = len > target ? len : target, pad = full - len;
        size_t data_at = pad_left ? at + pad : at, pad_at = pad_left ? at : at + len;
        e->row_off[i] = at;
        e->row_len[i] = full;
        e->sample[i] = ((size_t *)r->sample.data)[i];
        size_t s = rs[i];
        if (len) {
            memcpy(e->ids + data_at, ids + s, len * sizeof(int32_t));
            memcpy(e->type_ids + data_at, ty + s, len * sizeof(int32_t));
            memcpy(e->special + data_at, sp + s, len * sizeof(int32_t));
            memcpy(e->offsets + 2 * data_at, of + 2 * s, 2 * len * sizeof(int32_t));
            memcpy(e->words + data_at, wd + s, len * sizeof(int32_t));
            memcpy(e->seq_ids + data_at, sq + s, len * sizeof(int32_t));
        }
        for (size_t k = 0; k < len; k++) e->mask[data_at + k] = 1;
        for (size_t k = 0; k < pad; k++) {
            size_t p = pad_at + k;
            e->ids[p] = pad_id;
            e->mask[p] = 0;
            e->type_ids[p] = 0;
            e->special[p] = 1;
            e->offsets[2 * p] = e->offsets[2 * p + 1] = 0;
            e->words[p] = -1;
            e->seq_ids[p] = -1;
        }
        at += full;
    }
    *out = e;
    return TP_OK;
}

size_t tp_encoding_rows(const tp_encoding *e) { return e ? e->rows : 0; }

size_t tp_encoding_length(const tp_encoding *e, size_t row)
{
    return e && row < e->rows ? e->row_len[row] : 0;
}

#define ROW_FIELD(name, field, width)                                          \
    const int32_t *name(const tp_encoding *e, size_t row)                      \
    {                                                                          \
        if (!e || row >= e->rows) return NULL;                                 \
        return e->field + (width) * e->row_off[row];                           \
    }

ROW_FIELD(tp_encoding_ids, ids, 1)
ROW_FIELD(tp_encoding_attention_mask, mask, 1)
ROW_FIELD(tp_encoding_type_ids, type_ids, 1)
ROW_FIELD(tp_encoding_special_mask, special, 1)
ROW_FIELD(tp_encoding_offsets, offsets, 2)
ROW_FIELD(tp_encoding_word_ids, words, 1)
ROW_FIELD(tp_encoding_sequence_ids, seq_ids, 1)

size_t tp_encoding_sample(const tp_encoding *e, size_t row)
{
    return e && row < e->rows ? e->sample[row] : 0;
}
