/* backend.h: a loaded compute backend as the core uses it, and the dispatch that
 * falls back to the reference kernels for members a backend leaves NULL.
 *
 * A tp__backend is created once per runtime and is reference-counted: a request
 * acquires the runtime's current backend when it starts and releases it when it
 * ends, so switching backends never pulls one out from under running work.
 * Dispatch functions are thread-safe (backends guard their own caches). */
#ifndef TP_CORE_BACKEND_H
#define TP_CORE_BACKEND_H

#include <stdatomic.h>
#include "../sdk/tpipe_backend.h"

typedef struct tp__wtable tp__wtable;

typedef struct tp__backend {
    const tp_backend_vtable *vt;
    void *ctx;
    const char *name;
    atomic_int refs;
    /* Prepared weights of models loaded with a dtype (see below); NULL until the first
     * registration, then kept until tp__backend_fini. Zero-initialized is right. */
    tp__wtable *_Atomic wtab;
} tp__backend;

/* The reference backend built into the core (plain C, always available). */
const tp_module_descriptor *tp__ref_backend_descriptor(void);

/* Dispatch: calls the backend's member, or the reference implementation. */
tp_status tp__matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err);
tp_status tp__layer_norm(const tp__backend *be, float *x, int rows, int cols,
                         const float *gamma, const float *beta, float eps, tp_error *err);

/* The backend's matmul_bf16 (sdk/tpipe_backend.h); TP_ERR_UNSUPPORTED, with nothing
 * written to err, where it has none or declines the call. */
tp_status tp__matmul_bf16(const tp__backend *be, const tp_matmul_args *args, tp_error *err);

/* The threads the core's own parallel loops may use with `be` (>= 1): the backend's
 * num_threads member, else the OpenMP default; 1 for the reference backend. */
int tp__backend_threads(const tp__backend *be);

/* x = LayerNorm(x + res) per row (res may be NULL): the backend's layer_norm after
 * the add when it has one, else the core's fused kernel on tp__backend_threads. */
tp_status tp__residual_layer_norm(const tp__backend *be, float *x, const float *res, int rows,
                                  int cols, const float *gamma, const float *beta, float eps,
                                  tp_error *err);

/* Convenience for the common case: Y[m×n] = act(X[m×k] · W[n×k]ᵀ + bias). */
tp_status tp__linear(const tp__backend *be, const float *x, int m, int k, const float *w,
                     const float *bias, int n, tp_activation act, float *y, tp_error *err);

/* ---------------------------------------------------------------- prepared weights
 *
 * A model loaded with tp_model_options.dtype != TP_F32 registers the address range of
 * its fp32 weights (the safetensors mapping) with every loaded backend that supports
 * the dtype. tp__matmul then looks the B pointer of each batch-1 product up: inside a
 * registered range, the weight is prepared once through the backend's prepare_weight
 * (on its first use: only then are its shape and layout known, which also keeps
 * embeddings that no dense layer reads unconverted) and every product runs through
 * matmul_prepared. Backends without those members, or ones that fail to prepare a
 * weight, compute in fp32 from the range as before.
 *
 * Threading: lookups take a read lock (held for the product, so a handle is never
 * released under a running matmul); registration, unregistration and preparation
 * take the write lock. A backend with no registration ever pays one atomic load. */

/* 1 when `be` computes `dtype` through prepared weights (TP_F32: always). */
int tp__backend_supports_dtype(const tp__backend *be, tp_dtype dtype);
/* Registers [base, base + size) as weights to compute in `dtype`. `file_backed`: the
 * range is a read-only file mapping, so once a weight is prepared its fp32 pages are
 * dropped from memory (MADV_DONTNEED; read back from the file if ever used again),
 * which keeps peak RSS near the converted size instead of fp32 plus converted. */
tp_status tp__backend_register_weights(tp__backend *be, const void *base, size_t size,
                                       tp_dtype dtype, int file_backed, tp_error *err);
/* Drops the range starting at `base` and releases the handles prepared inside it. */
void tp__backend_unregister_weights(tp__backend *be, const void *base);
/* Releases everything (the module loader, before the backend's destroy). */
void tp__backend_fini(tp__backend *be);
/* Handles prepared so far (for tests). */
size_t tp__backend_prepared_count(const tp__backend *be);

#endif
