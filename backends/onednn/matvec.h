/* matvec.h: products with a few rows of A (a decode step, the beams of a beam search)
 * against a prepared weight, in the blocked layouts oneDNN's matmul also computes
 * with. oneDNN 2.6's kernels stay near half the memory bandwidth for these shapes;
 * a product this thin is a stream over the weight, and these loops read each weight
 * byte once, split over the threads by 64-column strips.
 *
 * Layouts (K inputs, N outputs; both padded with zeros to whole blocks):
 *   bf16  oneDNN's BA16a64b2a: strips of 64 columns, each strip's K rows stored as
 *         pairs, element (k, n) at strip(n / 64) + (k / 2) * 128 + (n % 64) * 2 + k % 2
 *         with strip(s) = s * kpad * 64, kpad = K rounded up to 32
 *   int8  [N×K]: each output's K weights contiguous (oneDNN's 3-D "acb", which its
 *         int8 matmul also takes), read as dot products, four outputs at a time
 *
 * Thread-safety: pure functions of their arguments; each call runs an OpenMP team of
 * `threads` threads of the calling thread. */
#ifndef TP_ONEDNN_MATVEC_H
#define TP_ONEDNN_MATVEC_H

#include <stdint.h>

enum { MV_MAX_ROWS = 4 };

/* Whether this CPU runs the kernels (AVX512-BF16 / AVX512-VNNI). */
int mv_bf16_supported(void);
int mv_int8_supported(void);

/* The epilogue shared by every kernel: y = act(sum · scale + bias) */
typedef struct mv_out {
    float *c;              /* [m × ldc] */
    int ldc;
    const float *bias;     /* [n] or NULL */
    int activation;        /* tp_activation */
} mv_out;

/* c[0..cols) = act(sum + bias) (bias may be NULL; sum may be c): the epilogue of every
 * kernel here and of amx.h's, vectorised (AVX-512: only where the kernels run). */
void mv_epilogue(const float *sum, int cols, const float *bias, int act, float *c);

/* x: [m][kpad] bf16, zero beyond k. */
void mv_bf16(const uint16_t *w, int n, int kpad, const uint16_t *x, int m, const mv_out *o,
             int threads);

/* w: [n×k] dense; x: [m][kpad] as unsigned bytes q + 128, kpad = k rounded up to 64,
 * 128 beyond k; xscale[m]: per-row scales; wscale[n] and colsum[n] (the sum of each
 * column's quantized weights): the weight's per-column scales and the correction for
 * x's +128. */
void mv_int8(const int8_t *w, const float *wscale, const int32_t *colsum, int n, int k,
             const uint8_t *x, int kpad, const float *xscale, int m, const mv_out *o,
             int threads);

/* fp32 weights in place: w [n×k] (trans_b) or [k×n], row stride ld; x [m][lda].
 * 0 when out of memory (nothing written). */
int mv_f32_supported(void);
int mv_f32(const float *w, int ld, int trans_b, int n, int k, const float *x, int lda, int m,
           const mv_out *o, int threads);

/* The column sums mv_int8 needs. */
void mv_int8_colsums(const int8_t *w, int n, int k, int32_t *colsum);

#endif
