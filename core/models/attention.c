/* attention.c: multi-head attention of one batch row (see attention.h), computed
 * the way transformers' eager attention does in fp32: scores = q·kᵀ·scale, plus the
 * additive position bias (T5) and masks (finfo(float32).min on hidden keys), softmax, then ·v.
 * Thread-safe: only the caller's buffers are touched. */
#include "attention.h"

#include <float.h>
#include <stddef.h>

#include "../error.h"
#include "../kernels.h"

tp_status tp__attention(const tp__backend *be, const tp__attn_args *a, tp_error *err) {
    const int NH = a->n_heads, D = a->head_dim, TQ = a->tq, TK = a->tk;
    tp_matmul_args scores = {
        .struct_size = sizeof scores, .m = TQ, .n = TK, .k = D,
        .a = a->q, .lda = a->ldq, .stride_a = D,
        .b = a->k, .ldb = a->ldk, .stride_b = D, .trans_b = 1,
        .c = a->scores, .ldc = TK, .stride_c = (int64_t)TQ * TK,
        .batch = NH, .alpha = a->scale, .bias = NULL, .activation = TP_ACT_NONE,
    };
    TP_TRY(tp__matmul(be, &scores, err));
    if (a->bias) tp__add(a->scores, a->bias, (size_t)NH * TQ * TK);
    if (a->key_mask || a->causal_past >= 0) {
        for (int h = 0; h < NH; h++)
            for (int i = 0; i < TQ; i++) {
                float *row = a->scores + ((size_t)h * TQ + i) * TK;
                /* keys past `last` are in the future of query i */
                const int last = a->causal_past >= 0 ? a->causal_past + i : TK - 1;
                for (int j = 0; j < TK; j++) {
                    if (j > last) row[j] = -FLT_MAX;
                    else if (a->key_mask) row[j] += a->key_mask[j];
                }
            }
    }
    tp__softmax_rows(a->scores, NH * TQ, TK);
    tp_matmul_args context = {
        .struct_size = sizeof context, .m = TQ, .n = D, .k = TK,
        .a = a->scores, .lda = TK, .stride_a = (int64_t)TQ * TK,
        .b = a->v, .ldb = a->ldv, .stride_b = D, .trans_b = 0,
        .c = a->out, .ldc = a->ldo, .stride_c = D,
        .batch = NH, .alpha = 1.0f, .bias = NULL, .activation = TP_ACT_NONE,
    };
    return tp__matmul(be, &context, err);
}
