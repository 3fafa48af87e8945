/* safetensors.c: the strict model.safetensors reader (see safetensors.h for the rules
 * it enforces). The file is mapped read-only; nothing in the header is trusted until
 * every entry has been checked against the size of the data section. Tensors whose
 * data is not aligned to their element size in the file (only hand-made files do
 * that: the reference writer orders tensors by alignment) get an aligned copy so
 * that callers may read them as typed arrays. Read-only after open: thread-safe. */
#include "safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "error.h"
#include "json_util.h"

#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
/* Integers above this are not exact in a JSON double, so cannot be trusted. */
#define ST_MAX_EXACT 9007199254740992.0

typedef struct st_range {
    uint64_t begin, end;
    const char *name;
} st_range;

/* Safetensors dtypes tpipe maps to tp_dtype; the others are known but unsupported. */
static const struct { const char *name; tp_dtype dtype; } st_dtypes[] = {
    {"F32", TP_F32}, {"F16", TP_F16}, {"BF16", TP_BF16},
    {"I8", TP_I8},   {"I32", TP_I32}, {"I64", TP_I64},
};
static const char *const st_unsupported[] = {
    "F64", "U8", "BOOL", "I16", "U16", "U32", "U64", "F8_E4M3", "F8_E5M2",
    "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

static int parse_dtype(const char *s, tp_dtype *out) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (strcmp(s, st_dtypes[i].name) == 0) {
            *out = st_dtypes[i].dtype;
            return 1;
        }
    for (size_t i = 0; i < sizeof st_unsupported / sizeof st_unsupported[0]; i++)
        if (strcmp(s, st_unsupported[i]) == 0) return 0;
    return -1;
}

/* A JSON number that is an exact non-negative integer. */
static int json_uint(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return 0;
    double d = v->valuedouble;
    if (!(d >= 0.0) || d > ST_MAX_EXACT || d != (double)(uint64_t)d) return 0;
    *out = (uint64_t)d;
    return 1;
}

static void format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t n = 0;
    n += (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++) {
        if (shape[i] < 0)
            n += (size_t)snprintf(buf + n, cap - n, "%s*", i ? ", " : "");
        else
            n += (size_t)snprintf(buf + n, cap - n, "%s%lld", i ? ", " : "",
                                  (long long)shape[i]);
    }
    if (n < cap) snprintf(buf + n, cap - n, "]");
}

static int cmp_name(const void *a, const void *b) {
    return strcmp(((const tp__st_tensor *)a)->name, ((const tp__st_tensor *)b)->name);
}

static int cmp_range(const void *a, const void *b) {
    const st_range *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return 0;
}

static tp_status check_metadata(const char *file, const cJSON *meta, tp_error *err) {
    if (!cJSON_IsObject(meta))
        return tp__error(err, TP_ERR_FORMAT, "%s: __metadata__ must be an object, got %s",
                         file, tp__json_type_name(meta));
    for (const cJSON *kv = meta->child; kv; kv = kv->next)
        if (!cJSON_IsString(kv))
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: __metadata__ key '%s' must be a string, got %s", file,
                             kv->string ? kv->string : "", tp__json_type_name(kv));
    return TP_OK;
}

/* Validates one header entry into `t` (name excluded) and its byte range. */
static tp_status parse_entry(const char *file, const cJSON *e, uint64_t data_size,
                             tp__st_tensor *t, st_range *r, tp_error *err) {
    const char *name = e->string;
    if (!cJSON_IsObject(e))
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': entry must be an object, got %s",
                         file, name, tp__json_type_name(e));

    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    if (!dt) return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': missing 'dtype'", file, name);
    if (!cJSON_IsString(dt))
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': 'dtype' must be a string, got %s",
                         file, name, tp__json_type_name(dt));
    int known = parse_dtype(dt->valuestring, &t->dtype);
    if (known == 0)
        return tp__error(err, TP_ERR_UNSUPPORTED, "%s: tensor '%s': unsupported dtype %s", file,
                         name, dt->valuestring);
    if (known < 0)
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': unknown dtype '%.32s'", file,
                         name, dt->valuestring);

    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "shape");
    if (!sh) return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': missing 'shape'", file, name);
    if (!cJSON_IsArray(sh))
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': 'shape' must be an array, got %s",
                         file, name, tp__json_type_name(sh));
    int ndim = cJSON_GetArraySize(sh);
    if (ndim > TP_MAX_DIMS)
        return tp__error(err, TP_ERR_UNSUPPORTED,
                         "%s: tensor '%s': shape has %d dimensions, at most %d supported", file,
                         name, ndim, TP_MAX_DIMS);
    t->ndim = ndim;
    uint64_t numel = 1;
    int i = 0, overflow = 0;
    for (const cJSON *d = sh->child; d; d = d->next, i++) {
        uint64_t v;
        if (!json_uint(d, &v))
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: tensor '%s': shape[%d] must be a non-negative integer", file,
                             name, i);
        t->shape[i] = (int64_t)v;
        if (__builtin_mul_overflow(numel, v, &numel)) overflow = 1;
    }
    uint64_t nbytes;
    if (overflow || __builtin_mul_overflow(numel, (uint64_t)tp__dtype_size(t->dtype), &nbytes))
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': shape is too large", file, name);

    const cJSON *off = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!off)
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s': missing 'data_offsets'", file,
                         name);
    uint64_t begin, end;
    if (!cJSON_IsArray(off) || cJSON_GetArraySize(off) != 2 ||
        !json_uint(cJSON_GetArrayItem(off, 0), &begin) ||
        !json_uint(cJSON_GetArrayItem(off, 1), &end))
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets must be [begin, end], two non-negative "
                         "integers",
                         file, name);
    if (begin > end)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] have begin > end", file,
                         name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] exceed the data section "
                         "(%llu bytes)",
                         file, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)data_size);
    if (end - begin != nbytes) {
        char s[128];
        format_shape(s, sizeof s, t->ndim, t->shape);
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: tensor '%s': data_offsets [%llu, %llu] hold %llu bytes, but shape "
                         "%s of %s needs %llu",
                         file, name, (unsigned long long)begin, (unsigned long long)end,
                         (unsigned long long)(end - begin), s, dt->valuestring,
                         (unsigned long long)nbytes);
    }
    t->nbytes = (size_t)nbytes;
    r->begin = begin;
    r->end = end;
    r->name = name;
    return TP_OK;
}

/* Parses and validates the header of st->map; fills st->tensors. */
static tp_status parse(tp__safetensors *st, tp_error *err) {
    const char *file = st->path;
    const unsigned char *base = st->map;
    if (st->map_size < 8)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: file is %zu bytes, too short for the 8-byte header length", file,
                         st->map_size);
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | base[i];
    if (hlen > ST_MAX_HEADER)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: header length %llu exceeds the 100 MB limit", file,
                         (unsigned long long)hlen);
    if (hlen > st->map_size - 8)
        return tp__error(err, TP_ERR_FORMAT,
                         "%s: header length %llu runs past the end of the file (%zu bytes)",
                         file, (unsigned long long)hlen, st->map_size);
    const char *text = (const char *)base + 8;
    const unsigned char *data = base + 8 + hlen;
    uint64_t data_size = st->map_size - 8 - hlen;

    const char *parse_end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, (size_t)hlen, &parse_end, 0);
    if (!root) {
        char what[512];
        snprintf(what, sizeof what, "%s: header", file);
        cJSON *again = NULL;
        tp_status s = tp__json_parse(text, (size_t)hlen, what, &again, err);
        cJSON_Delete(again);
        return s != TP_OK ? s : tp__error(err, TP_ERR_FORMAT, "%s: header: invalid JSON", file);
    }
    /* The format allows only space padding after the JSON object. */
    for (const char *p = parse_end; p && p < text + hlen; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return tp__error(err, TP_ERR_FORMAT,
                             "%s: header has trailing bytes after the JSON object (at byte %zu)",
                             file, (size_t)(p - text));
        }
    tp_status s = TP_OK;
    st_range *ranges = NULL;
    if (!cJSON_IsObject(root)) {
        s = tp__error(err, TP_ERR_FORMAT, "%s: header must be a JSON object, got %s", file,
                      tp__json_type_name(root));
        goto done;
    }

    size_t count = 0;
    for (const cJSON *e = root->child; e; e = e->next)
        if (strcmp(e->string, "__metadata__") != 0) count++;
    /* Tensors first, then the aligned copies of misaligned tensors, in one block. */
    size_t table = count * sizeof(tp__st_tensor);
    table = (table + 63) & ~(size_t)63;
    ranges = calloc(count ? count : 1, sizeof *ranges);
    st->tensors = calloc(1, table ? table : 1);
    if (!ranges || !st->tensors) {
        s = tp__error(err, TP_ERR_NOMEM, "%s: out of memory for %zu tensors", file, count);
        goto done;
    }

    size_t n = 0;
    for (const cJSON *e = root->child; e; e = e->next) {
        if (strcmp(e->string, "__metadata__") == 0) {
            if ((s = check_metadata(file, e, err)) != TP_OK) goto done;
            continue;
        }
        tp__st_tensor *t = &st->tensors[n];
        if ((s = parse_entry(file, e, data_size, t, &ranges[n], err)) != TP_OK) goto done;
        t->data = data + ranges[n].begin;
        if (!(t->name = strdup(e->string))) {
            s = tp__error(err, TP_ERR_NOMEM, "%s: out of memory", file);
            goto done;
        }
        n++;
        st->count = n;
    }

    /* No two tensors may share a byte; empty tensors occupy none. */
    qsort(ranges, count, sizeof *ranges, cmp_range);
    uint64_t reach = 0;
    const char *reach_name = NULL;
    for (size_t i = 0; i < count; i++) {
        if (ranges[i].begin == ranges[i].end) continue;
        if (reach_name && ranges[i].begin < reach) {
            s = tp__error(err, TP_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s' "
                          "(which ends at %llu)",
                          file, ranges[i].name, (unsigned long long)ranges[i].begin,
                          (unsigned long long)ranges[i].end, reach_name,
                          (unsigned long long)reach);
            goto done;
        }
        reach = ranges[i].end;
        reach_name = ranges[i].name;
    }

    qsort(st->tensors, count, sizeof *st->tensors, cmp_name);
    for (size_t i = 1; i < count; i++)
        if (strcmp(st->tensors[i - 1].name, st->tensors[i].name) == 0) {
            s = tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s' appears twice in the header",
                          file, st->tensors[i].name);
            goto done;
        }

    /* Misaligned tensors get an aligned copy after the table (see the file comment). */
    size_t extra = 0;
    for (size_t i = 0; i < count; i++) {
        const tp__st_tensor *t = &st->tensors[i];
        if (((uintptr_t)t->data % tp__dtype_size(t->dtype)) != 0)
            extra += (t->nbytes + 63) & ~(size_t)63;
    }
    if (extra) {
        tp__st_tensor *grown = realloc(st->tensors, table + extra);
        if (!grown) {
            s = tp__error(err, TP_ERR_NOMEM, "%s: out of memory copying misaligned tensors",
                          file);
            goto done;
        }
        st->tensors = grown;
        unsigned char *copy = (unsigned char *)grown + table;
        for (size_t i = 0; i < count; i++) {
            tp__st_tensor *t = &st->tensors[i];
            if (((uintptr_t)t->data % tp__dtype_size(t->dtype)) == 0) continue;
            memcpy(copy, t->data, t->nbytes);
            t->data = copy;
            copy += (t->nbytes + 63) & ~(size_t)63;
        }
    }

done:
    free(ranges);
    cJSON_Delete(root);
    return s;
}

void tp__safetensors_close(tp__safetensors *st) {
    if (!st) return;
    for (size_t i = 0; i < st->count; i++) free(st->tensors[i].name);
    free(st->tensors);
    if (st->owns_map && st->map) munmap(st->map, st->map_size);
    free(st->path);
    free(st);
}

static tp_status finish(tp__safetensors *st, tp__safetensors **out, tp_error *err) {
    tp_status s = parse(st, err);
    if (s != TP_OK) {
        tp__safetensors_close(st);
        return s;
    }
    *out = st;
    return TP_OK;
}

tp_status tp__safetensors_from_memory(const void *buf, size_t size, const char *name,
                                      tp__safetensors **out, tp_error *err) {
    *out = NULL;
    if (!name) name = "(memory)";
    tp__safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(name))) {
        free(st);
        return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", name);
    }
    st->map = (void *)buf;
    st->map_size = buf ? size : 0;
    st->owns_map = 0;
    return finish(st, out, err);
}

tp_status tp__safetensors_open(const char *path, tp__safetensors **out, tp_error *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return tp__error(err, e == ENOENT ? TP_ERR_NOT_FOUND : TP_ERR_IO, "%s: %s", path,
                         strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return tp__error(err, TP_ERR_IO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return tp__error(err, TP_ERR_IO, "%s: not a regular file", path);
    }
    tp__safetensors *st = calloc(1, sizeof *st);
    if (!st || !(st->path = strdup(path))) {
        free(st);
        close(fd);
        return tp__error(err, TP_ERR_NOMEM, "%s: out of memory", path);
    }
    st->map_size = (size_t)sb.st_size;
    if (st->map_size >= 8) {
        void *m = mmap(NULL, st->map_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            int e = errno;
            close(fd);
            tp__safetensors_close(st);
            return tp__error(err, TP_ERR_IO, "%s: mmap failed: %s", path, strerror(e));
        }
        st->map = m;
        st->owns_map = 1;
    }
    close(fd);
    return finish(st, out, err);
}

const tp__st_tensor *tp__safetensors_find(const tp__safetensors *st, const char *name) {
    if (!st || !name || st->count == 0) return NULL;
    tp__st_tensor key;
    key.name = (char *)name;
    return bsearch(&key, st->tensors, st->count, sizeof *st->tensors, cmp_name);
}

tp_status tp__safetensors_f32(const tp__safetensors *st, const char *name, int ndim,
                              const int64_t *shape, const float **out, tp_error *err) {
    *out = NULL;
    const tp__st_tensor *t = tp__safetensors_find(st, name);
    if (!t) return tp__error(err, TP_ERR_NOT_FOUND, "%s: tensor '%s' not found", st->path, name);
    if (t->dtype != TP_F32)
        return tp__error(err, TP_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s, expected F32",
                         st->path, name, tp__dtype_name(t->dtype));
    int match = t->ndim == ndim;
    for (int i = 0; match && i < ndim; i++)
        if (shape[i] >= 0 && shape[i] != t->shape[i]) match = 0;
    if (!match) {
        char got[160], want[160];
        format_shape(got, sizeof got, t->ndim, t->shape);
        format_shape(want, sizeof want, ndim, shape);
        return tp__error(err, TP_ERR_FORMAT, "%s: tensor '%s' has shape %s, expected %s",
                         st->path, name, got, want);
    }
    *out = t->data;
    return TP_OK;
}
