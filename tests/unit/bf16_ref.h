/* bf16_ref.h: what a bf16 product of two activations (a backend's matmul_bf16) should
 * give, for the tests that check one (test_backends) or stand in for one
 * (test_kernels): A and B rounded to bf16 (nearest even), summed in double. */
#ifndef TP_TEST_BF16_REF_H
#define TP_TEST_BF16_REF_H

#include <stdint.h>
#include <string.h>

#include "tpipe_backend.h"

/* f rounded to bf16 (nearest even), as a float; finite inputs only */
static inline float bf16_ref_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u = (u + 0x7fff + ((u >> 16) & 1)) & 0xffff0000u;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* alpha · Σ_p bf16(A[e][i][p]) · bf16(B[e][p][j]) of the product `a` describes */
static inline double bf16_ref_dot(const tp_matmul_args *a, int e, int i, int j) {
    const float *A = a->a + e * a->stride_a + (int64_t)i * a->lda, *B = a->b + e * a->stride_b;
    double acc = 0;
    for (int p = 0; p < a->k; p++) {
        const float b = a->trans_b ? B[(int64_t)j * a->ldb + p] : B[(int64_t)p * a->ldb + j];
        acc += (double)bf16_ref_round(A[p]) * bf16_ref_round(b);
    }
    return acc * a->alpha;
}

#endif
