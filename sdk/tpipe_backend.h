/*
 * tpipe_backend.h: the compute backend ABI.
 *
 * A backend is a module (tpipe_module.h) of kind TP_MODULE_BACKEND whose descriptor's
 * vtable is a tp_backend_vtable. It implements the primitives it accelerates; a NULL
 * member falls back to the core's reference C code, so `matmul` is the only one a
 * useful backend needs. All tensors are fp32, row-major, owned by the caller.
 *
 * Threading: create/destroy are called once per runtime. The compute members may be
 * called concurrently from several scheduler workers on one context: a backend that
 * caches (oneDNN primitives) guards its cache itself.
 */
#ifndef TPIPE_BACKEND_H
#define TPIPE_BACKEND_H

#include "tpipe_module.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tp_activation {
    TP_ACT_NONE = 0,
    TP_ACT_GELU,       /* x * Φ(x), with erf (BERT's "gelu") */
    TP_ACT_GELU_TANH,  /* tanh approximation ("gelu_new", "gelu_pytorch_tanh") */
    TP_ACT_RELU,
    TP_ACT_SILU,
    TP_ACT_TANH
} tp_activation;

/* For each b in [0, batch):
 *   C_b[m×n] = alpha · A_b[m×k] · op(B_b) + bias[n], then `activation`, where
 *   op(B) = Bᵀ with B stored [n×k] when trans_b is 1 (a PyTorch Linear weight), and
 *   B stored [k×n] when trans_b is 0.
 * X_b starts at X + b * stride_x; lda/ldb/ldc are row strides in elements.
 * bias may be NULL. C never aliases A or B. */
typedef struct tp_matmul_args {
    size_t struct_size;
    int m, n, k;
    const float *a; int lda; int64_t stride_a;
    const float *b; int ldb; int64_t stride_b; int trans_b;
    float *c; int ldc; int64_t stride_c;
    int batch;               /* >= 1 */
    float alpha;             /* 1 for a plain product */
    const float *bias;       /* [n] or NULL */
    tp_activation activation;
} tp_matmul_args;

typedef struct tp_backend_config {
    size_t struct_size;
    int num_threads;         /* 0: all cores the process may use */
} tp_backend_config;

typedef struct tp_backend_vtable {
    size_t struct_size;

    /* Makes a context. On failure writes one line into `why` (e.g. "libdnnl.so.2:
     * cannot open shared object file") and returns non-OK; the loader lists the
     * backend as refused with that line. */
    tp_status (*create)(const tp_backend_config *cfg, void **ctx, char *why, size_t why_len);
    void (*destroy)(void *ctx);

    /* One line: library version, the ISA it detected, threads. Static or owned by ctx. */
    const char *(*describe)(void *ctx);

    /* Required. */
    tp_status (*matmul)(void *ctx, const tp_matmul_args *args);

    /* Optional: x[rows×cols] normalized in place per row, then ·gamma + beta. */
    tp_status (*layer_norm)(void *ctx, float *x, int rows, int cols, const float *gamma,
                            const float *beta, float eps);
} tp_backend_vtable;

#ifdef __cplusplus
}
#endif
#endif
