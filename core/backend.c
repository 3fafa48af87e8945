/* backend.c: dispatch of the compute primitives to a backend, falling back to the
 * reference kernels for members the backend leaves NULL (or that its vtable, built
 * against an older ABI, is too short to hold). Thread-safe: no state of its own. */
#include "backend.h"

#include <stddef.h>

#include "error.h"
#include "kernels.h"

/* A member is usable only when the vtable's struct_size covers it: an older
 * backend's table simply ends before members added after it was built. */
#define VT_HAS(vt, member)                                                                 \
    ((vt) && (vt)->struct_size >= offsetof(tp_backend_vtable, member) + sizeof((vt)->member) && \
     (vt)->member)

static const char *backend_name(const tp__backend *be) {
    return be && be->name ? be->name : "?";
}

static tp_status check_matmul_args(const tp_matmul_args *a, tp_error *err) {
    if (!a || a->struct_size < sizeof(tp_matmul_args))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "matmul: args missing or struct_size too small");
    if (a->m < 0 || a->n < 0 || a->k < 0 || a->batch < 1)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "matmul: bad dimensions m=%d n=%d k=%d batch=%d", a->m, a->n, a->k,
                         a->batch);
    if (!a->a || !a->b || !a->c)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "matmul: NULL operand");
    if (a->lda < a->k || a->ldc < a->n || a->ldb < (a->trans_b ? a->k : a->n))
        return tp__error(err, TP_ERR_INVALID_ARGUMENT,
                         "matmul: leading dimensions lda=%d ldb=%d ldc=%d too small for m=%d n=%d k=%d",
                         a->lda, a->ldb, a->ldc, a->m, a->n, a->k);
    return TP_OK;
}

tp_status tp__matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err) {
    TP_TRY(check_matmul_args(args, err));
    if (be && VT_HAS(be->vt, matmul)) {
        tp_status st = be->vt->matmul(be->ctx, args);
        if (st != TP_OK)
            return tp__error(err, TP_ERR_BACKEND,
                             "backend '%s': matmul %dx%dx%d (batch %d) failed: %s",
                             backend_name(be), args->m, args->n, args->k, args->batch,
                             tp_strerror(st));
        return TP_OK;
    }
    tp__ref_matmul(args);
    return TP_OK;
}

tp_status tp__layer_norm(const tp__backend *be, float *x, int rows, int cols,
                         const float *gamma, const float *beta, float eps, tp_error *err) {
    if (!x || rows < 0 || cols <= 0)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "layer_norm: bad arguments rows=%d cols=%d",
                         rows, cols);
    if (be && VT_HAS(be->vt, layer_norm)) {
        tp_status st = be->vt->layer_norm(be->ctx, x, rows, cols, gamma, beta, eps);
        if (st != TP_OK)
            return tp__error(err, TP_ERR_BACKEND, "backend '%s': layer_norm %dx%d failed: %s",
                             backend_name(be), rows, cols, tp_strerror(st));
        return TP_OK;
    }
    tp__ref_layer_norm(x, rows, cols, gamma, beta, eps);
    return TP_OK;
}

tp_status tp__linear(const tp__backend *be, const float *x, int m, int k, const float *w,
                     const float *bias, int n, tp_activation act, float *y, tp_error *err) {
    tp_matmul_args a = {
        .struct_size = sizeof a,
        .m = m, .n = n, .k = k,
        .a = x, .lda = k, .stride_a = 0,
        .b = w, .ldb = k, .stride_b = 0, .trans_b = 1,
        .c = y, .ldc = n, .stride_c = 0,
        .batch = 1,
        .alpha = 1.0f,
        .bias = bias,
        .activation = act,
    };
    return tp__matmul(be, &a, err);
}
