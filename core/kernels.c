/* kernels.c: the reference fp32 kernels (the "ref" backend's members and the
 * element-wise steps of the model graphs). The matmul is plain C (GNU vector types
 * in its micro-kernel) and sums in order, so its results do not depend on blocking
 * or on the compiler's flags. The element-wise steps (activations, softmax, layer
 * norm) run on the vector math of kernels_simd.h, compiled for AVX-512, AVX2 and
 * SSE2 and picked at run time; their row reductions use 16 partial sums in a fixed
 * order, so a result does not depend on the thread count. Where a function takes
 * `threads`, it splits rows over that many OpenMP threads (when built with OpenMP).
 * Pure functions on caller memory: thread-safe. */
#include "kernels.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "kernels_simd.h"

/* The matmul works on panels of op(B): KC rows of k by NC columns of n. A [n×k]
 * (transposed) B is packed into a 32 KiB stack panel so that its columns of n are
 * contiguous; a [k×n] B is used in place. */
enum { MM_KC = 128, MM_NC = 64 };

/* 4-wide float vectors (GNU C vector extension): the compiler's -O2 vectorizer
 * leaves these loops scalar, so the micro-kernel says what it wants. Loads and
 * stores go through memcpy: no alignment is assumed. */
typedef float v4f __attribute__((vector_size(16)));
static inline v4f ld4(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}
static inline void st4(float *p, v4f v) { memcpy(p, &v, sizeof v); }

/* C[R×nc] += A[R×kc] · P[kc×nc] for R = 4 or 1 rows. The accumulators of an 8-column
 * strip stay in registers over the whole kc loop; every C element is still summed
 * over p in order, so a result does not depend on which path computed its row. */
static inline void micro(int R, const float *A, int lda, const float *P, int ldp, float *C,
                         int ldc, int kc, int nc) {
    int j = 0;
    for (; j + 8 <= nc; j += 8) {
        v4f c[4][2];
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            c[r][0] = ld4(C + (size_t)r * ldc + j);
            c[r][1] = ld4(C + (size_t)r * ldc + j + 4);
        }
        for (int p = 0; p < kc; p++) {
            const float *b = P + (size_t)p * ldp + j;
            const v4f b0 = ld4(b), b1 = ld4(b + 4);
#pragma GCC unroll 4
            for (int r = 0; r < R; r++) {
                const float x = A[(size_t)r * lda + p];
                const v4f av = {x, x, x, x};
                c[r][0] += av * b0;
                c[r][1] += av * b1;
            }
        }
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            st4(C + (size_t)r * ldc + j, c[r][0]);
            st4(C + (size_t)r * ldc + j + 4, c[r][1]);
        }
    }
    for (; j < nc; j++)
        for (int r = 0; r < R; r++) {
            float acc = C[(size_t)r * ldc + j];
            for (int p = 0; p < kc; p++) acc += A[(size_t)r * lda + p] * P[(size_t)p * ldp + j];
            C[(size_t)r * ldc + j] = acc;
        }
}

static void matmul_one(const tp_matmul_args *a, const float *A, const float *B, float *C) {
    const int m = a->m, n = a->n, k = a->k;
    float panel[MM_KC * MM_NC];

    for (int i = 0; i < m; i++) memset(C + (size_t)i * a->ldc, 0, (size_t)n * sizeof(float));

    for (int jc = 0; jc < n; jc += MM_NC) {
        const int nc = n - jc < MM_NC ? n - jc : MM_NC;
        for (int pc = 0; pc < k; pc += MM_KC) {
            const int kc = k - pc < MM_KC ? k - pc : MM_KC;
            const float *bp;
            int ldp;
            if (a->trans_b) {
                /* B is [n×k]: gather the transposed panel so columns of n are contiguous */
                for (int j = 0; j < nc; j++) {
                    const float *brow = B + (size_t)(jc + j) * a->ldb + pc;
                    for (int p = 0; p < kc; p++) panel[p * MM_NC + j] = brow[p];
                }
                bp = panel;
                ldp = MM_NC;
            } else {
                bp = B + (size_t)pc * a->ldb + jc;
                ldp = a->ldb;
            }
            int i = 0;
            for (; i + 4 <= m; i += 4) /* four rows share each load of the panel */
                micro(4, A + (size_t)i * a->lda + pc, a->lda, bp, ldp,
                      C + (size_t)i * a->ldc + jc, a->ldc, kc, nc);
            for (; i < m; i++)
                micro(1, A + (size_t)i * a->lda + pc, a->lda, bp, ldp,
                      C + (size_t)i * a->ldc + jc, a->ldc, kc, nc);
        }
    }

    /* epilogue: alpha, bias, activation, as addmm + activation would */
    for (int i = 0; i < m; i++) {
        float *crow = C + (size_t)i * a->ldc;
        if (a->alpha != 1.0f)
            for (int j = 0; j < n; j++) crow[j] *= a->alpha;
        if (a->bias)
            for (int j = 0; j < n; j++) crow[j] += a->bias[j];
        if (a->activation != TP_ACT_NONE) tp__activate(crow, (size_t)n, a->activation);
    }
}

void tp__ref_matmul(const tp_matmul_args *a) {
    if (a->m <= 0 || a->n <= 0) return;
    for (int b = 0; b < a->batch; b++)
        matmul_one(a, a->a + (int64_t)b * a->stride_a, a->b + (int64_t)b * a->stride_b,
                   a->c + (int64_t)b * a->stride_c);
}

/* ---------------------------------------------------------------- row kernels */

/* Sum of row[0..n) as 16 partial sums (fixed order), then the scalar tail. */
TP_SIMD_INLINE float row_sum(const float *row, int n) {
    tp_v16f acc = tp_v_set1(0.0f);
    int i = 0;
    for (; i + 16 <= n; i += 16) acc += tp_v_load(row + i);
    float s = tp_v_hsum(acc);
    for (; i < n; i++) s += row[i];
    return s;
}

/* LayerNorm of one row in place, after adding `res` when not NULL. Two passes
 * (mean, then the centred second moment): no cancellation. */
TP_SIMD_INLINE void layer_norm_row_body(float *row, const float *res, int n, const float *gamma,
                                        const float *beta, float eps) {
    int i;
    if (res) {
        for (i = 0; i + 16 <= n; i += 16)
            tp_v_store(row + i, tp_v_load(row + i) + tp_v_load(res + i));
        for (; i < n; i++) row[i] += res[i];
    }
    const float mean = row_sum(row, n) / (float)n;
    const tp_v16f vm = tp_v_set1(mean);
    tp_v16f acc = tp_v_set1(0.0f);
    for (i = 0; i + 16 <= n; i += 16) {
        const tp_v16f d = tp_v_load(row + i) - vm;
        acc += d * d;
    }
    float sq = tp_v_hsum(acc);
    for (; i < n; i++) sq += (row[i] - mean) * (row[i] - mean);
    const float rstd = 1.0f / sqrtf(sq / (float)n + eps);
    const tp_v16f vr = tp_v_set1(rstd);
    for (i = 0; i + 16 <= n; i += 16) {
        tp_v16f y = (tp_v_load(row + i) - vm) * vr;
        if (gamma) y *= tp_v_load(gamma + i);
        if (beta) y += tp_v_load(beta + i);
        tp_v_store(row + i, y);
    }
    for (; i < n; i++) {
        float y = (row[i] - mean) * rstd;
        if (gamma) y *= gamma[i];
        if (beta) y += beta[i];
        row[i] = y;
    }
}

TP_SIMD_INLINE void layer_norm_rows_body(float *x, const float *res, int rows, int cols,
                                         const float *gamma, const float *beta, float eps) {
    for (int r = 0; r < rows; r++)
        layer_norm_row_body(x + (size_t)r * cols, res ? res + (size_t)r * cols : NULL, cols,
                            gamma, beta, eps);
}
TP_SIMD_DISPATCH(void, layer_norm_rows,
                 (float *x, const float *res, int rows, int cols, const float *gamma,
                  const float *beta, float eps),
                 (x, res, rows, cols, gamma, beta, eps))

void tp__ref_layer_norm(float *x, int rows, int cols, const float *gamma, const float *beta,
                        float eps) {
    if (cols <= 0 || rows <= 0) return;
    layer_norm_rows(x, NULL, rows, cols, gamma, beta, eps);
}

/* The parallel region stays outside the SIMD dispatch: GCC outlines an OpenMP body
 * before it inlines, so a region inside a dispatched body compiled for the baseline
 * ISA (SSE: 64-byte vectors in four pieces), which held a 128 × 768 norm at ~100 µs a
 * thread instead of ~10. Each thread takes one contiguous share of the rows. */
void tp__add_layer_norm(float *x, const float *res, int rows, int cols, const float *gamma,
                        const float *beta, float eps, int threads) {
    if (cols <= 0 || rows <= 0) return;
    if (threads > rows) threads = rows;
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int r0, r1;
        tp__thread_share(rows, &r0, &r1);
        const size_t at = (size_t)r0 * (size_t)cols;
        layer_norm_rows(x + at, res ? res + at : NULL, r1 - r0, cols, gamma, beta, eps);
    }
}

void tp__thread_share(int n, int *begin, int *end) {
    int t = 0, nt = 1;
#ifdef _OPENMP
    t = omp_get_thread_num();
    nt = omp_get_num_threads();
#endif
    *begin = (int)((int64_t)n * t / nt);
    *end = (int)((int64_t)n * (t + 1) / nt);
}

/* ---------------------------------------------------------------- activations */

TP_SIMD_INLINE tp_v16f act_vec(tp_v16f v, tp_activation act) {
    switch (act) {
    case TP_ACT_GELU: return tp_v_gelu(v); /* torch gelu(approximate='none') */
    case TP_ACT_GELU_TANH: return tp_v_gelu_tanh(v);
    case TP_ACT_SILU: return tp_v_silu(v);
    default: return v;
    }
}

TP_SIMD_INLINE void activate_body(float *x, size_t n, tp_activation act) {
    size_t i = 0;
    switch (act) {
    case TP_ACT_NONE:
        return;
    case TP_ACT_RELU:
        for (; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        return;
    case TP_ACT_TANH: /* small inputs need tanhf's relative accuracy; used on tiny heads */
        for (; i < n; i++) x[i] = tanhf(x[i]);
        return;
    default:
        break;
    }
    for (; i + 16 <= n; i += 16) tp_v_store(x + i, act_vec(tp_v_load(x + i), act));
    if (i < n) {
        /* the tail through the same vector code, so every element gets the same math */
        float tail[16] = {0};
        memcpy(tail, x + i, (n - i) * sizeof(float));
        tp_v_store(tail, act_vec(tp_v_load(tail), act));
        memcpy(x + i, tail, (n - i) * sizeof(float));
    }
}
TP_SIMD_DISPATCH(void, activate, (float *x, size_t n, tp_activation act), (x, n, act))

void tp__activate(float *x, size_t n, tp_activation act) { activate(x, n, act); }

/* ---------------------------------------------------------------- softmax */

TP_SIMD_INLINE void softmax_rows_body(float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) tp_v_softmax_row(x + (size_t)r * cols, cols);
}
TP_SIMD_DISPATCH(void, softmax_rows, (float *x, int rows, int cols), (x, rows, cols))

void tp__softmax_rows(float *x, int rows, int cols) {
    if (cols <= 0) return;
    softmax_rows(x, rows, cols);
}

/* x - log Σ e^x per row: the max, the exps' sum in 16 float lanes (as torch's
 * vectorised log_softmax sums them), then one subtraction. */
TP_SIMD_INLINE void log_softmax_rows_body(float *x, int rows, int cols) {
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        int i;
        const float max = tp_v_row_max(row, cols);
        const tp_v16f vm = tp_v_set1(max);
        tp_v16f acc = tp_v_set1(0.0f);
        for (i = 0; i + 16 <= cols; i += 16) acc += tp_v_exp(tp_v_load(row + i) - vm);
        float sum = tp_v_hsum(acc);
        for (; i < cols; i++) sum += expf(row[i] - max);
        const float lse = max + logf(sum);
        for (i = 0; i < cols; i++) row[i] -= lse;
    }
}
TP_SIMD_DISPATCH(void, log_softmax_rows, (float *x, int rows, int cols), (x, rows, cols))

void tp__log_softmax_rows(float *x, int rows, int cols) {
    if (cols <= 0) return;
    log_softmax_rows(x, rows, cols);
}

void tp__add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
