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

typedef struct tp__backend {
    const tp_backend_vtable *vt;
    void *ctx;
    const char *name;
    atomic_int refs;
} tp__backend;

/* The reference backend built into the core (plain C, always available). */
const tp_module_descriptor *tp__ref_backend_descriptor(void);

/* Dispatch: calls the backend's member, or the reference implementation. */
tp_status tp__matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err);
tp_status tp__layer_norm(const tp__backend *be, float *x, int rows, int cols,
                         const float *gamma, const float *beta, float eps, tp_error *err);

/* Convenience for the common case: Y[m×n] = act(X[m×k] · W[n×k]ᵀ + bias). */
tp_status tp__linear(const tp__backend *be, const float *x, int m, int k, const float *w,
                     const float *bias, int n, tp_activation act, float *y, tp_error *err);

#endif
