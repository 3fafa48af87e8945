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

/* A weight to prepare once for a compute type (prepare_weight, below): the fp32 weight
 * operand of a dense layer, B of a tp_matmul_args with batch 1. */
typedef struct tp_weight_desc {
    size_t struct_size;
    tp_dtype dtype;          /* TP_BF16, TP_I8 (symmetric, one fp32 scale per output
                                channel), or TP_F32 (the backend's own packed layout) */
    const float *data;       /* the model's fp32 weight (read-only, usually mmapped) */
    int n, k;                /* output and input features */
    int ld;                  /* row stride of data, in elements */
    int trans_b;             /* 1: stored [n×k] (a PyTorch Linear); 0: [k×n] (GPT-2 Conv1D) */
} tp_weight_desc;

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

    /* ---- appended after ABI 1.0 (all optional; a shorter table simply lacks them) ----
     * Prepared weights: the core converts a model's dense-layer weights once, through
     * the backend, when the model was loaded with tp_model_options.dtype != TP_F32.
     * supports_dtype: 1 when prepare_weight accepts `dtype` on this CPU.
     * prepare_weight: makes a backend-owned handle (converted, reordered weight and
     *   whatever it needs) from w; w->data stays valid while the handle lives.
     * release_weight: frees a handle; never called while a matmul_prepared using it runs.
     * matmul_prepared: as matmul, with B replaced by the handle made from args->b
     *   (same n, k, ldb, trans_b; batch 1). A and C stay fp32: the backend converts
     *   (bf16) or quantizes (int8) A itself and accumulates in fp32 / s32.
     *   TP_ERR_UNSUPPORTED for a call it does not cover: the core computes that one in
     *   fp32 with matmul. */
    int (*supports_dtype)(void *ctx, tp_dtype dtype);
    tp_status (*prepare_weight)(void *ctx, const tp_weight_desc *w, void **handle);
    void (*release_weight)(void *ctx, void *handle);
    tp_status (*matmul_prepared)(void *ctx, const tp_matmul_args *args, void *handle);

    /* ---- appended for the core's own parallel loops (optional) ----
     * num_threads: the compute threads this context runs with (its config's
     * num_threads, 0 resolved to the cores it uses). The core splits its own loops
     * (attention heads, layer-norm rows) over that many OpenMP threads, between the
     * backend's calls, so the process never runs more compute threads than the
     * backend was given. Absent: the OpenMP default (OMP_NUM_THREADS, else the CPUs
     * the process may use). */
    int (*num_threads)(void *ctx);

    /* ---- appended: products of two activations in bf16 (optional) ----
     * matmul_bf16: as matmul (batch, strides, alpha, trans_b; no bias, no
     * activation), with A and B rounded to bf16 (nearest even) and the sums kept in
     * fp32: attention's q·kᵀ and p·v in a model computing in bf16 or int8 (as torch
     * computes them in bf16). The core splits the work between these calls (the
     * softmax rows of each head) into contiguous per-thread shares: a backend that
     * shares the batch out the same way finds each head's operands in its own
     * core's cache. TP_ERR_UNSUPPORTED where the backend has no fast path for the
     * call on this CPU: the core then computes it in fp32 itself. */
    tp_status (*matmul_bf16)(void *ctx, const tp_matmul_args *args);
} tp_backend_vtable;

/* The size of ABI 1.0's table (up to layer_norm): what a loader must accept as the
 * smallest struct_size; members after it are read only when struct_size covers them. */
#define TP_BACKEND_VTABLE_SIZE_1_0                                                       \
    (offsetof(tp_backend_vtable, layer_norm) + sizeof(((tp_backend_vtable *)0)->layer_norm))

#ifdef __cplusplus
}
#endif
#endif
