/* tensor.c: the owned tensor value and its public accessors. */
#include "tensor.h"

#include <stdlib.h>

#include "error.h"

size_t tp__dtype_size(tp_dtype dtype) {
    switch (dtype) {
    case TP_F32: case TP_I32: return 4;
    case TP_F16: case TP_BF16: return 2;
    case TP_I8: return 1;
    case TP_I64: return 8;
    }
    return 0;
}

const char *tp__dtype_name(tp_dtype dtype) {
    switch (dtype) {
    case TP_F32: return "F32";
    case TP_F16: return "F16";
    case TP_BF16: return "BF16";
    case TP_I8: return "I8";
    case TP_I32: return "I32";
    case TP_I64: return "I64";
    }
    return "?";
}

tp_status tp__tensor_new(tp_dtype dtype, int ndim, const int64_t *shape, tp_tensor **out,
                         tp_error *err) {
    *out = NULL;
    if (ndim < 0 || ndim > TP_MAX_DIMS)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "tensor rank %d outside 0..%d", ndim,
                         TP_MAX_DIMS);
    size_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0)
            return tp__error(err, TP_ERR_INVALID_ARGUMENT, "negative tensor dimension");
        numel *= (size_t)shape[i];
    }
    tp_tensor *t = calloc(1, sizeof *t);
    void *data = calloc(numel ? numel : 1, tp__dtype_size(dtype));
    if (!t || !data) {
        free(t);
        free(data);
        return tp__error(err, TP_ERR_NOMEM, "out of memory for a tensor of %zu elements", numel);
    }
    t->dtype = dtype;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->data = data;
    t->owns_data = 1;
    *out = t;
    return TP_OK;
}

tp_dtype tp_tensor_dtype(const tp_tensor *t) { return t->dtype; }
int tp_tensor_ndim(const tp_tensor *t) { return t->ndim; }
int64_t tp_tensor_dim(const tp_tensor *t, int axis) {
    if (axis < 0) axis += t->ndim;
    return (axis >= 0 && axis < t->ndim) ? t->shape[axis] : 0;
}
int64_t tp_tensor_numel(const tp_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}
const float *tp_tensor_f32(const tp_tensor *t) {
    return t->dtype == TP_F32 ? (const float *)t->data : NULL;
}
void tp_tensor_free(tp_tensor *t) {
    if (!t) return;
    if (t->owns_data) free(t->data);
    free(t);
}
