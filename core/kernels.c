/* kernels.c: the reference fp32 kernels (the "ref" backend's members and the
 * element-wise steps of the model graphs). Plain C (GNU vector types in the matmul
 * micro-kernel); no sum is reassociated, so results do not depend on blocking or
 * on the compiler's flags. Pure functions on caller memory: thread-safe. */
#include "kernels.h"

#include <math.h>
#include <string.h>

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
        for (int r = 0; r < R; r++) {
            c[r][0] = ld4(C + (size_t)r * ldc + j);
            c[r][1] = ld4(C + (size_t)r * ldc + j + 4);
        }
        for (int p = 0; p < kc; p++) {
            const float *b = P + (size_t)p * ldp + j;
            const v4f b0 = ld4(b), b1 = ld4(b + 4);
            for (int r = 0; r < R; r++) {
                const float x = A[(size_t)r * lda + p];
                const v4f av = {x, x, x, x};
                c[r][0] += av * b0;
                c[r][1] += av * b1;
            }
        }
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

void tp__ref_layer_norm(float *x, int rows, int cols, const float *gamma, const float *beta,
                        float eps) {
    if (cols <= 0) return;
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        /* two passes (mean, then the centred second moment): no cancellation */
        float sum = 0.0f;
        for (int i = 0; i < cols; i++) sum += row[i];
        const float mean = sum / (float)cols;
        float sq = 0.0f;
        for (int i = 0; i < cols; i++) {
            const float d = row[i] - mean;
            sq += d * d;
        }
        const float rstd = 1.0f / sqrtf(sq / (float)cols + eps);
        for (int i = 0; i < cols; i++) {
            float y = (row[i] - mean) * rstd;
            if (gamma) y *= gamma[i];
            if (beta) y += beta[i];
            row[i] = y;
        }
    }
}

void tp__activate(float *x, size_t n, tp_activation act) {
    switch (act) {
    case TP_ACT_NONE:
        return;
    case TP_ACT_GELU:
        /* torch.nn.functional.gelu(approximate='none') */
        for (size_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * (float)M_SQRT1_2));
        return;
    case TP_ACT_GELU_TANH: {
        const float c = 0.7978845608028654f; /* sqrt(2/pi) */
        for (size_t i = 0; i < n; i++) {
            const float v = x[i];
            x[i] = 0.5f * v * (1.0f + tanhf(c * (v + 0.044715f * v * v * v)));
        }
        return;
    }
    case TP_ACT_RELU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? x[i] : 0.0f;
        return;
    case TP_ACT_SILU:
        for (size_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-x[i]));
        return;
    case TP_ACT_TANH:
        for (size_t i = 0; i < n; i++) x[i] = tanhf(x[i]);
        return;
    }
}

void tp__softmax_rows(float *x, int rows, int cols) {
    if (cols <= 0) return;
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols;
        float max = row[0];
        for (int i = 1; i < cols; i++) max = row[i] > max ? row[i] : max;
        float sum = 0.0f;
        for (int i = 0; i < cols; i++) {
            row[i] = expf(row[i] - max);
            sum += row[i];
        }
        const float inv = 1.0f / sum;
        for (int i = 0; i < cols; i++) row[i] *= inv;
    }
}

void tp__add(float *y, const float *x, size_t n) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}
