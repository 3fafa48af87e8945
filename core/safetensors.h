/* safetensors.h: a strict reader of model.safetensors. The file is mmapped; every
 * header field is validated before any pointer into the data is handed out:
 *  - the 8-byte little-endian header length is at most 100 MB and inside the file;
 *  - the header is a JSON object; each entry has a known dtype, a shape of
 *    non-negative ints (at most TP_MAX_DIMS), and data_offsets [begin, end] with
 *    begin <= end, end within the data section, end - begin == prod(shape) * dtype size;
 *  - no two tensors overlap; "__metadata__" is an object of strings.
 * Errors name the file and the tensor. Read-only after open: thread-safe. */
#ifndef TP_CORE_SAFETENSORS_H
#define TP_CORE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>
#include "tensor.h"

typedef struct tp__st_tensor {
    char *name;
    tp_dtype dtype;
    int ndim;
    int64_t shape[TP_MAX_DIMS];
    size_t nbytes;
    const void *data;          /* inside the mapping; aligned as the file is */
} tp__st_tensor;

typedef struct tp__safetensors {
    char *path;                /* for messages */
    void *map;                 /* the mapping (or the caller's buffer) */
    size_t map_size;
    int owns_map;
    size_t count;
    tp__st_tensor *tensors;    /* sorted by name */
} tp__safetensors;

tp_status tp__safetensors_open(const char *path, tp__safetensors **out, tp_error *err);
/* Parses a buffer the caller keeps alive (fuzzing, tests); `name` is used in messages. */
tp_status tp__safetensors_from_memory(const void *buf, size_t size, const char *name,
                                      tp__safetensors **out, tp_error *err);
void tp__safetensors_close(tp__safetensors *st);

/* NULL when absent. */
const tp__st_tensor *tp__safetensors_find(const tp__safetensors *st, const char *name);

/* The fp32 data of tensor `name`, checked against an expected shape (ndim entries;
 * -1 matches any size). Errors: "<file>: tensor '<name>' not found", "... has dtype
 * F16, expected F32", "... has shape [3, 4], expected [3, 5]". */
tp_status tp__safetensors_f32(const tp__safetensors *st, const char *name, int ndim,
                              const int64_t *shape, const float **out, tp_error *err);

#endif
