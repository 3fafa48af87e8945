/* tensor.h: the tensor value behind the public tp_tensor. Internal. One owner at a
 * time; no shared state. */
#ifndef TP_CORE_TENSOR_H
#define TP_CORE_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <tpipe/tpipe.h>

#define TP_MAX_DIMS 8

struct tp_tensor {
    tp_dtype dtype;
    int ndim;
    int64_t shape[TP_MAX_DIMS];
    void *data;
    int owns_data;   /* 1: data is malloc'd and freed with the tensor; 0: a view */
};

/* A new zero-filled tensor that owns its data. */
tp_status tp__tensor_new(tp_dtype dtype, int ndim, const int64_t *shape, tp_tensor **out,
                         tp_error *err);
size_t tp__dtype_size(tp_dtype dtype);
const char *tp__dtype_name(tp_dtype dtype);

#endif
