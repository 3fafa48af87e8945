/* amx.h: bf16 and int8 products of any number of rows from 5 up (a sequence's
 * encoder layers, a batch of them, a prompt) on Intel AMX
 * tiles, against the weights matvec.h streams, in the same layouts (bf16 BA16a64b2a,
 * int8 [n×k]): one prepared copy serves every row count.
 *
 * Why not oneDNN's matmul: on the 128-row products of an encoder layer its AMX kernel
 * (oneDNN 2.6, brgemm) ran at 350-460 GFLOP/s on the accelerator machine's two vCPUs;
 * with this kernel DistilBERT's bf16 forward at 128 tokens went from 34.9 to 28.3 ms
 * there; int8 DistilBERT went from 25.8 to 21.0 ms. On 2048 rows (16 sequences)
 * oneDNN's bf16 matmul had stayed faster (session 8: DistilBERT b16 451 against 498
 * ms); once the kernel fetched the next panel of weights into L2 (session 10) it
 * overtook it there too (session 12: DistilBERT b16 443 -> 410 ms, BERT-base NER b16
 * 862 -> 820, medians of 10 pairs, faster in 8 of 10 on each), as the int8 kernel had
 * once it prefetched the weights and converted A on the whole team (2048-row products
 * 663-755 -> 877-933 GFLOP/s). docs/backends.md has the figures.
 *
 * The product is tiled in 32×32 blocks of C (four 16×16 fp32 tiles fed by two tiles of
 * A and two of B, all eight tile registers), each block's K loop reading A from L2
 * (rows are taken in chunks that fit there) and one 32-column panel of B, while
 * fetching the next panel from L3 into L2.
 *
 * Thread-safety: pure functions of their arguments; each call runs an OpenMP team of
 * `threads` threads of the calling thread, each with its own tile configuration. */
#ifndef TP_ONEDNN_AMX_H
#define TP_ONEDNN_AMX_H

#include <stdint.h>

#include "matvec.h"

/* Whether this CPU has AMX-BF16 and the kernel lets this process use the tile state
 * (Linux grants it on request, once per process). */
int amx_bf16_supported(void);

/* A's converted copy (x below) has amx_rows(m) rows of kpad: the tiles load 16 rows
 * at a time; the rows past m are read (zeros) but their results are not stored. */
static inline int amx_rows(int m) { return (m + 15) & ~15; }

/* c[m×n] = act(a · w + bias) through o, a: fp32 rows [m×k] (row stride lda), converted
 * to bf16 (nearest even) into x [amx_rows(m) × kpad] as the tiles load them, zero
 * past m and past k (the zero weights there must not meet a NaN). w: bf16
 * BA16a64b2a (matvec.h), K padded to kpad (a multiple of 32) with zeros. */
void amx_bf16(const uint16_t *w, int n, int k, int kpad, const float *a, int m, int lda,
              uint16_t *x, const mv_out *o, int threads);

/* Products of two activations in bf16 (the backend's matmul_bf16: attention's q·kᵀ
 * and p·v): each batch entry's B packed into the weights' layout above and A
 * converted as amx_bf16 converts it, the entries shared out over `threads` threads
 * (or, with fewer entries than threads, each product on all of them); C = alpha·A·B.
 * No bias or activation. 0, or -1 when out of memory (C then partly written). */
int amx_bf16_activations(const float *a, int lda, int64_t stride_a, const float *b, int ldb,
                         int64_t stride_b, int trans_b, float *c, int ldc, int64_t stride_c,
                         int m, int n, int k, int batch, float alpha, int threads);

/* int8, as oneDNN's int8 matmul computes it here: A quantized per row (quantize.h),
 * the weights per column (w, wscale), exact integer sums, then
 * act(sum · wscale · xscale + bias). */
int amx_int8_supported(void);

/* c[m×n] = act(a · wᵀ · scales + bias) through o. a: fp32 rows [m×k] (stride lda),
 * quantized into x [amx_rows(m) × kpad] (per 16 rows, each group of four inputs of
 * each row in one 32-bit cell, the 16 rows' cells side by side) with their scales in
 * xscale [m]. w: [n×k] s8 rows, readable (any values) up to row n rounded up to 32 and
 * kpad - k bytes past the last one; kpad: k rounded up to 64. */
void amx_int8(const int8_t *w, int n, int k, int kpad, const float *wscale, const float *a, int m,
              int lda, int8_t *x, float *xscale, const mv_out *o, int threads);

#endif
