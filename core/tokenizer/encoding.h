/* encoding.h: the row builder behind tp_encoding. Internal to the tokenizer.
 * Thread-safety: a builder belongs to one call. */
#ifndef TP_TOKENIZER_ENCODING_H
#define TP_TOKENIZER_ENCODING_H

#include "tokenizer/tok_internal.h"

typedef struct tp__rows {
    tp__vec f[6];                          /* int32 fields: ids, type, special, offsets x2,
                                              words, sequence ids */
    tp__vec row_start, row_len, sample;    /* size_t per row */
} tp__rows;

void tp__rows_init(tp__rows *r);
void tp__rows_free(tp__rows *r);
tp_status tp__rows_begin(tp__rows *r, size_t sample, tp_error *err);
tp_status tp__rows_reserve(tp__rows *r, size_t n, tp_error *err);
void tp__rows_push(tp__rows *r, int32_t id, int32_t type_id, int32_t special, int32_t start,
                   int32_t end, int32_t word, int32_t seq);
size_t tp__rows_longest(const tp__rows *r);
/* Pads every row shorter than `target` (0: none) with pad_id and builds the
 * encoding. */
tp_status tp__rows_finish(tp__rows *r, size_t target, int pad_left, int32_t pad_id,
                          tp_encoding **out, tp_error *err);

#endif
