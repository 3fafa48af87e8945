/* backend.c: dispatch of the compute primitives to a backend, falling back to the
 * reference kernels for members the backend leaves NULL (or that its vtable, built
 * against an older ABI, is too short to hold), and the table of prepared weights
 * (bf16 / int8) a backend keeps per model weight. Thread-safe: the dispatch has no
 * state of its own; the prepared-weight table is behind a reader-writer lock. */
#define _GNU_SOURCE /* pthread_rwlockattr_setkind_np */
#include "backend.h"

#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "error.h"
#include "kernels.h"
#include "profile.h"

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

/* ---------------------------------------------------------------- prepared weights */

typedef struct wrange {
    uintptr_t lo, hi;        /* [lo, hi) */
    tp_dtype dtype;
    int file_backed;
} wrange;

/* handle NULL: preparation failed or the shape differed; computed in fp32 */
typedef struct wentry {
    const float *w;          /* key; NULL: empty slot */
    int n, k, ld, trans_b;
    void *handle;
} wentry;

struct tp__wtable {
    pthread_rwlock_t lock;
    wrange *ranges;
    int nranges;
    wentry *slots;           /* open addressing, linear probing; capacity a power of 2 */
    size_t cap, used;
};

static size_t slot_of(const float *w, size_t cap) {
    uint64_t h = (uint64_t)(uintptr_t)w;
    h ^= h >> 33, h *= 0xff51afd7ed558ccdULL, h ^= h >> 33;
    return (size_t)h & (cap - 1);
}

static wentry *entry_find(const tp__wtable *t, const float *w) {
    if (!t->cap) return NULL;
    for (size_t i = slot_of(w, t->cap);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].w == w) return &t->slots[i];
        if (!t->slots[i].w) return NULL;
    }
}

static const wrange *range_find(const tp__wtable *t, const void *p) {
    const uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < t->nranges; i++)
        if (a >= t->ranges[i].lo && a < t->ranges[i].hi) return &t->ranges[i];
    return NULL;
}

/* Inserts e (its key absent); grows at half full. Write lock held. */
static int entry_insert(tp__wtable *t, const wentry *e) {
    if ((t->used + 1) * 2 > t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        wentry *slots = calloc(cap, sizeof *slots);
        if (!slots) return 0;
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].w) {
                size_t j = slot_of(t->slots[i].w, cap);
                while (slots[j].w) j = (j + 1) & (cap - 1);
                slots[j] = t->slots[i];
            }
        free(t->slots);
        t->slots = slots;
        t->cap = cap;
    }
    size_t j = slot_of(e->w, t->cap);
    while (t->slots[j].w) j = (j + 1) & (t->cap - 1);
    t->slots[j] = *e;
    t->used++;
    return 1;
}

static tp__wtable *wtab_get(tp__backend *be, int create) {
    tp__wtable *t = atomic_load(&be->wtab);
    if (t || !create) return t;
    tp__wtable *fresh = calloc(1, sizeof *fresh);
    if (!fresh) return NULL;
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* registrations must not starve behind a steady stream of products */
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(&fresh->lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    if (rc != 0) {
        free(fresh);
        return NULL;
    }
    if (!atomic_compare_exchange_strong(&be->wtab, &t, fresh)) {
        pthread_rwlock_destroy(&fresh->lock);
        free(fresh);
        return t; /* another thread installed one first */
    }
    return fresh;
}

int tp__backend_supports_dtype(const tp__backend *be, tp_dtype dtype) {
    if (dtype == TP_F32) return 1;
    if (!be || !VT_HAS(be->vt, supports_dtype) || !VT_HAS(be->vt, prepare_weight) ||
        !VT_HAS(be->vt, release_weight) || !VT_HAS(be->vt, matmul_prepared))
        return 0;
    return be->vt->supports_dtype(be->ctx, dtype) != 0;
}

tp_status tp__backend_register_weights(tp__backend *be, const void *base, size_t size,
                                       tp_dtype dtype, int file_backed, tp_error *err) {
    if (!be || !base || !size)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "register weights: bad arguments");
    tp__wtable *t = wtab_get(be, 1);
    if (!t) return tp__error(err, TP_ERR_NOMEM, "out of memory for the prepared-weight table");
    pthread_rwlock_wrlock(&t->lock);
    wrange *r = realloc(t->ranges, (size_t)(t->nranges + 1) * sizeof *r);
    if (r) {
        t->ranges = r;
        t->ranges[t->nranges++] =
            (wrange){(uintptr_t)base, (uintptr_t)base + size, dtype, file_backed};
    }
    pthread_rwlock_unlock(&t->lock);
    return r ? TP_OK
             : tp__error(err, TP_ERR_NOMEM, "out of memory for the prepared-weight table");
}

/* Releases and drops every entry in [lo, hi), then rehashes the rest. Write lock held. */
static void drop_entries(tp__backend *be, tp__wtable *t, uintptr_t lo, uintptr_t hi) {
    size_t kept = 0;
    for (size_t i = 0; i < t->cap; i++) {
        wentry *e = &t->slots[i];
        if (!e->w) continue;
        if ((uintptr_t)e->w >= lo && (uintptr_t)e->w < hi) {
            if (e->handle) be->vt->release_weight(be->ctx, e->handle);
            e->w = NULL;
        } else {
            kept++;
        }
    }
    /* rebuild: linear probing cannot simply punch holes */
    wentry *old = t->slots;
    size_t cap = t->cap;
    t->slots = NULL, t->cap = 0, t->used = 0;
    if (kept) {
        t->cap = 64;
        while (kept * 2 > t->cap) t->cap *= 2;
        t->slots = calloc(t->cap, sizeof *t->slots);
        if (!t->slots) t->cap = 0; /* lost entries only cost a re-preparation... */
        for (size_t i = 0; i < cap && t->slots; i++)
            if (old[i].w) entry_insert(t, &old[i]);
        if (!t->slots) /* ...which is not true of their handles: release them */
            for (size_t i = 0; i < cap; i++)
                if (old[i].w && old[i].handle) be->vt->release_weight(be->ctx, old[i].handle);
    }
    free(old);
}

void tp__backend_unregister_weights(tp__backend *be, const void *base) {
    tp__wtable *t = be ? wtab_get(be, 0) : NULL;
    if (!t || !base) return;
    pthread_rwlock_wrlock(&t->lock);
    for (int i = 0; i < t->nranges; i++)
        if (t->ranges[i].lo == (uintptr_t)base) {
            drop_entries(be, t, t->ranges[i].lo, t->ranges[i].hi);
            t->ranges[i] = t->ranges[--t->nranges];
            break;
        }
    pthread_rwlock_unlock(&t->lock);
}

void tp__backend_fini(tp__backend *be) {
    tp__wtable *t = be ? wtab_get(be, 0) : NULL;
    if (!t) return;
    drop_entries(be, t, 0, UINTPTR_MAX);
    pthread_rwlock_destroy(&t->lock);
    free(t->ranges);
    free(t->slots);
    free(t);
    atomic_store(&be->wtab, NULL);
}

size_t tp__backend_prepared_count(const tp__backend *be) {
    tp__wtable *t = be ? atomic_load(&((tp__backend *)be)->wtab) : NULL;
    if (!t) return 0;
    size_t n = 0;
    pthread_rwlock_rdlock(&t->lock);
    for (size_t i = 0; i < t->cap; i++) n += t->slots[i].w && t->slots[i].handle;
    pthread_rwlock_unlock(&t->lock);
    return n;
}

/* Prepares args->b if it lies in a registered range and has no entry yet. Write lock
 * held. A failed preparation is remembered (handle NULL) so it is not retried on
 * every product. */
static void prepare_locked(const tp__backend *be, tp__wtable *t, const tp_matmul_args *a) {
    const wrange *r = range_find(t, a->b);
    if (!r || r->dtype == TP_F32 || entry_find(t, a->b)) return;
    wentry e = {.w = a->b, .n = a->n, .k = a->k, .ld = a->ldb, .trans_b = a->trans_b ? 1 : 0};
    /* the whole weight must lie inside the range */
    const size_t rows = (size_t)(e.trans_b ? e.n : e.k), cols = (size_t)(e.trans_b ? e.k : e.n);
    const uintptr_t end = (uintptr_t)(a->b + (rows - 1) * (size_t)e.ld + cols);
    if (rows && cols && end <= r->hi) {
        tp_weight_desc d = {.struct_size = sizeof d, .dtype = r->dtype, .data = a->b,
                            .n = e.n, .k = e.k, .ld = e.ld, .trans_b = e.trans_b};
        if (be->vt->prepare_weight(be->ctx, &d, &e.handle) != TP_OK) e.handle = NULL;
        if (e.handle && r->file_backed) {
            /* whole pages inside the weight only: neighbours may still be in use */
            const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
            const uintptr_t lo = ((uintptr_t)a->b + page - 1) & ~(page - 1), hi = end & ~(page - 1);
            if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
        }
    }
    if (!entry_insert(t, &e) && e.handle) be->vt->release_weight(be->ctx, e.handle);
}

/* The prepared product, when B is a registered weight: 1 and *st set when it ran. */
static int try_prepared(const tp__backend *be, const tp_matmul_args *a, tp_status *st) {
    if (a->batch != 1 || !VT_HAS(be->vt, matmul_prepared)) return 0;
    tp__wtable *t = atomic_load(&((tp__backend *)be)->wtab);
    if (!t) return 0;
    for (int pass = 0; pass < 2; pass++) {
        pthread_rwlock_rdlock(&t->lock);
        const wentry *e = entry_find(t, a->b);
        if (e) {
            int ran = 0;
            if (e->handle && e->n == a->n && e->k == a->k && e->ld == a->ldb &&
                e->trans_b == (a->trans_b ? 1 : 0)) {
                /* UNSUPPORTED: a call shape the backend left to fp32 (alpha != 1, ...) */
                *st = be->vt->matmul_prepared(be->ctx, a, e->handle);
                ran = *st != TP_ERR_UNSUPPORTED;
            }
            pthread_rwlock_unlock(&t->lock);
            return ran;
        }
        const int wanted = range_find(t, a->b) != NULL;
        pthread_rwlock_unlock(&t->lock);
        if (!wanted || pass) return 0;
        pthread_rwlock_wrlock(&t->lock);
        prepare_locked(be, t, a);
        pthread_rwlock_unlock(&t->lock);
    }
    return 0;
}

static tp_status matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err);

tp_status tp__matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err) {
    TP_TRY(check_matmul_args(args, err));
    const uint64_t t0 = tp__profile_start();
    const tp_status st = matmul(be, args, err);
    tp__profile_stop(args->m <= 8 ? TP_PROFILE_PRODUCTS_FEW : TP_PROFILE_PRODUCTS, t0,
                     2.0 * args->m * args->n * args->k * args->batch);
    return st;
}

static tp_status matmul(const tp__backend *be, const tp_matmul_args *args, tp_error *err) {
    if (be) {
        tp_status st;
        if (try_prepared(be, args, &st)) {
            if (st != TP_OK)
                return tp__error(err, TP_ERR_BACKEND,
                                 "backend '%s': prepared matmul %dx%dx%d failed: %s",
                                 backend_name(be), args->m, args->n, args->k, tp_strerror(st));
            return TP_OK;
        }
    }
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

static tp_status layer_norm(const tp__backend *be, float *x, int rows, int cols,
                           const float *gamma, const float *beta, float eps, tp_error *err);

tp_status tp__layer_norm(const tp__backend *be, float *x, int rows, int cols,
                         const float *gamma, const float *beta, float eps, tp_error *err) {
    const uint64_t t0 = tp__profile_start();
    const tp_status st = layer_norm(be, x, rows, cols, gamma, beta, eps, err);
    tp__profile_stop(TP_PROFILE_NORMS, t0, 0);
    return st;
}

static tp_status layer_norm(const tp__backend *be, float *x, int rows, int cols,
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

static tp_status residual_layer_norm(const tp__backend *be, float *x, const float *res, int rows,
                                     int cols, const float *gamma, const float *beta, float eps,
                                     tp_error *err) {
    if (be && VT_HAS(be->vt, layer_norm)) {
        if (res) tp__add(x, res, (size_t)rows * (size_t)(cols > 0 ? cols : 0));
        return layer_norm(be, x, rows, cols, gamma, beta, eps, err);
    }
    if (!x || rows < 0 || cols <= 0)
        return tp__error(err, TP_ERR_INVALID_ARGUMENT, "layer_norm: bad arguments rows=%d cols=%d",
                         rows, cols);
    tp__add_layer_norm(x, res, rows, cols, gamma, beta, eps, tp__backend_threads(be));
    return TP_OK;
}

tp_status tp__residual_layer_norm(const tp__backend *be, float *x, const float *res, int rows,
                                  int cols, const float *gamma, const float *beta, float eps,
                                  tp_error *err) {
    const uint64_t t0 = tp__profile_start();
    const tp_status st = residual_layer_norm(be, x, res, rows, cols, gamma, beta, eps, err);
    tp__profile_stop(TP_PROFILE_NORMS, t0, 0);
    return st;
}

tp_status tp__matmul_bf16(const tp__backend *be, const tp_matmul_args *args, tp_error *err) {
    if (!be || !VT_HAS(be->vt, matmul_bf16)) return TP_ERR_UNSUPPORTED;
    TP_TRY(check_matmul_args(args, err));
    const tp_status st = be->vt->matmul_bf16(be->ctx, args);
    if (st != TP_OK && st != TP_ERR_UNSUPPORTED)
        return tp__error(err, TP_ERR_BACKEND, "backend '%s': bf16 matmul %dx%dx%d (batch %d) failed: %s",
                         backend_name(be), args->m, args->n, args->k, args->batch,
                         tp_strerror(st));
    return st;
}

int tp__backend_threads(const tp__backend *be) {
    int n = 0;
    if (be && VT_HAS(be->vt, num_threads)) n = be->vt->num_threads(be->ctx);
#ifdef _OPENMP
    else n = omp_get_max_threads();
#endif
    return n > 0 ? n : 1;
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
