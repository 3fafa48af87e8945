/* kernels.h: the reference C kernels: the ref backend's members and the small
 * element-wise steps every model graph uses. Pure functions on caller memory:
 * thread-safe. Accuracy: within 1e-6 relative of PyTorch's fp32 kernels (the
 * activations: see kernels_simd.h for the bounds). */
#ifndef TP_CORE_KERNELS_H
#define TP_CORE_KERNELS_H

#include <stddef.h>
#include "../sdk/tpipe_backend.h"

void tp__ref_matmul(const tp_matmul_args *a);
void tp__ref_layer_norm(float *x, int rows, int cols, const float *gamma, const float *beta,
                        float eps);
void tp__activate(float *x, size_t n, tp_activation act);
/* In-place softmax over each row of x[rows×cols]. */
void tp__softmax_rows(float *x, int rows, int cols);

/* In-place log-softmax over each row of x[rows×cols]. */
void tp__log_softmax_rows(float *x, int rows, int cols);
/* x[r] = LayerNorm(x[r] + res[r]) per row of [rows×cols] (res may be NULL), rows
 * split over `threads` threads: the residual add and the norm in one pass. */
void tp__add_layer_norm(float *x, const float *res, int rows, int cols, const float *gamma,
                        const float *beta, float eps, int threads);
/* y += x, n elements. */
void tp__add(float *y, const float *x, size_t n);

/* The calling OpenMP thread's share [*begin, *end) of n items split evenly and in
 * order over its team (all of them outside a parallel region). */
void tp__thread_share(int n, int *begin, int *end);

#endif
