/* onednn.c: the "onednn" compute backend on oneDNN 2.6's C API (v2: op descriptors,
 * primitive descriptors, primitives, streams).
 *
 * One matmul primitive per distinct call shape, with everything fused in: B read in
 * place through a strided (transposed when trans_b) memory descriptor, the bias as
 * the matmul's own bias argument (a binary post-op when alpha != 1), alpha as an
 * output scale, the activation as an eltwise post-op, and the batch as the leading dimension of 3-D descriptors.
 * Products of at most four rows (decode steps, beams) skip oneDNN: they stream the
 * weights through matvec.h's kernels, on fp32 in place and on prepared bf16/int8.
 *
 * Threading: matmul may run concurrently on one context. The primitive cache is
 * guarded by a mutex and its entries are reference-counted, so an entry evicted while
 * another thread executes it lives until that execution ends. Each call makes its own
 * stream, memory objects and scratchpad (user scratchpad mode), so nothing mutable is
 * shared between executions. Debian's libdnnl uses the OpenMP runtime (libgomp): the
 * thread count is an OpenMP setting of the calling thread, so matmul sets it on each
 * call (a thread-local store) through the libgomp libdnnl already loaded. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>

#include "amx.h"
#include "matvec.h"
#include "quantize.h"
#include "tpipe_backend.h"

enum { DN_CACHE_SIZE = 64 };

/* Everything that changes the primitive: memset to 0 first, compared with memcmp. */
typedef struct dn_key {
    int m, n, k, batch, lda, ldb, ldc, trans_b, has_bias, activation;
    int64_t stride_a, stride_b, stride_c;
    float alpha;
    int prepared;    /* 0: fp32 B read in place; 1: a weight prepared in type `dtype` */
    int dtype;       /* (TP_F32 is 0, so it cannot be the flag too: packed fp32 ran as plain) */
} dn_key;

typedef struct dn_prim {
    dn_key key;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, wei_md, bias_md, dst_md, scratch_md;
    size_t scratch_size;
    int bias_arg;    /* DNNL_ARG_BIAS, or the binary post-op's input (see prim_build) */
    dnnl_memory_desc_t cols_md, rows_md;  /* int8: per-column and per-row scales */
    int refs;        /* the cache's reference plus one per running execution */
    uint64_t used;   /* LRU clock */
} dn_prim;

typedef struct dn_ctx {
    dnnl_engine_t engine;
    pthread_mutex_t lock;
    dn_prim *cache[DN_CACHE_SIZE];
    int cached;
    uint64_t clock;
    int threads;                   /* >0: set on each call; 0: OpenMP's own default */
    void (*omp_set_num_threads)(int);
    int has_bf16, has_int8;        /* fast (non-reference) kernels found at create */
    int cvt_bf16, cvt_avx512;      /* the CPU has vcvtneps2bf16 / AVX-512BW for A's conversion */
    int mv_bf16, mv_int8, mv_f32;  /* the CPU runs matvec.h's kernels */
    int amx_bf16, amx_int8;        /* and amx.h's, for bf16 / int8 products of more rows */
    int team;                      /* threads matvec.h's kernels run on */
    char describe[256];
} dn_ctx;

/* A weight prepared once (dn_prepare_weight): converted to the compute type and
 * reordered to the layout the matmul implementation asked for. */
typedef struct dn_weight {
    int dtype;                     /* TP_BF16, TP_I8 or TP_F32 (packed) */
    int n, k;
    dnnl_memory_desc_t md;         /* [k×n] in the implementation's blocked layout */
    void *data;
    float *scales;                 /* TP_I8: [n], w ≈ scales[j] · q[:, j] */
    int32_t *colsums;              /* TP_I8 streamed: [n], Σ_k q[k, j] (matvec.h) */
    int streamed;                  /* md is matvec.h's layout: few-row products run there */
    int kpad;                      /* streamed: k padded to the layout's block */
} dn_weight;

static tp_status dn_probe(dn_ctx *c, int dtype);

static const char *isa_name(dnnl_cpu_isa_t isa) {
    switch (isa) {
    case dnnl_cpu_isa_all: return "all";
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    }
    return "unknown";
}

static const char *runtime_name(unsigned rt) {
    switch (rt) {
    case DNNL_RUNTIME_OMP: return "omp";
    case DNNL_RUNTIME_TBB: return "tbb";
    case DNNL_RUNTIME_SEQ: return "seq";
    case DNNL_RUNTIME_THREADPOOL: return "threadpool";
    }
    return "unknown";
}

static tp_status dn_create(const tp_backend_config *cfg, void **out, char *why, size_t why_len) {
    *out = NULL;
    dn_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        if (why && why_len) snprintf(why, why_len, "onednn: out of memory");
        return TP_ERR_NOMEM;
    }
    /* AMX (bf16 / int8 tiles on Xeon Sapphire Rapids and later): oneDNN 2.x may treat
     * it as "initial support", used only up to DNNL_MAX_CPU_ISA. Unless the user set
     * that variable, allow it: a ceiling, so a CPU without AMX is unaffected. It only
     * takes before the process's first oneDNN primitive; later calls fail harmlessly. */
    if (!getenv("DNNL_MAX_CPU_ISA") && !getenv("ONEDNN_MAX_CPU_ISA"))
        (void)dnnl_set_max_cpu_isa(dnnl_cpu_isa_avx512_core_amx);
    dnnl_status_t s = dnnl_engine_create(&c->engine, dnnl_cpu, 0);
    if (s != dnnl_success) {
        if (why && why_len)
            snprintf(why, why_len, "onednn: cannot create a CPU engine: %s", dnnl_status2str(s));
        free(c);
        return TP_ERR_BACKEND;
    }
    if (pthread_mutex_init(&c->lock, NULL) != 0) {
        if (why && why_len) snprintf(why, why_len, "onednn: cannot initialize a mutex");
        dnnl_engine_destroy(c->engine);
        free(c);
        return TP_ERR_BACKEND;
    }

    const dnnl_version_t *v = dnnl_version();
    int threads = 1;
    if (v->cpu_runtime == DNNL_RUNTIME_OMP) {
        /* libdnnl's own libgomp, already loaded with it (RTLD_NOLOAD opens no new copy) */
        void *gomp = dlopen("libgomp.so.1", RTLD_LAZY | RTLD_NOLOAD);
        int (*get_max)(void) = NULL;
        if (gomp) {
            *(void **)&c->omp_set_num_threads = dlsym(gomp, "omp_set_num_threads");
            *(void **)&get_max = dlsym(gomp, "omp_get_max_threads");
            dlclose(gomp); /* drops only our extra reference */
        }
        if (cfg && cfg->num_threads > 0 && c->omp_set_num_threads) {
            c->threads = cfg->num_threads;
            threads = c->threads;
        } else {
            threads = get_max ? get_max() : 0;
        }
    }
    c->team = threads > 0 ? threads : 1;
    __builtin_cpu_init();
    c->cvt_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                    __builtin_cpu_supports("avx512vl");
    c->cvt_bf16 = c->cvt_avx512 && __builtin_cpu_supports("avx512bf16");
    c->has_bf16 = dn_probe(c, TP_BF16) == TP_OK;
    c->has_int8 = dn_probe(c, TP_I8) == TP_OK;
    c->mv_bf16 = c->has_bf16 && mv_bf16_supported() && !getenv("TP_ONEDNN_NO_MATVEC");
    c->mv_int8 = c->has_int8 && mv_int8_supported() && !getenv("TP_ONEDNN_NO_MATVEC");
    c->mv_f32 = mv_f32_supported() && !getenv("TP_ONEDNN_NO_MATVEC");
    c->amx_bf16 = c->mv_bf16 && !getenv("TP_ONEDNN_NO_AMX") && amx_bf16_supported();
    c->amx_int8 = c->mv_int8 && !getenv("TP_ONEDNN_NO_AMX") && amx_int8_supported();
    if (threads > 0)
        snprintf(c->describe, sizeof c->describe,
                 "oneDNN %d.%d.%d (cpu runtime: %s), ISA %s, %d thread%s", v->major, v->minor,
                 v->patch, runtime_name(v->cpu_runtime), isa_name(dnnl_get_effective_cpu_isa()),
                 threads, threads == 1 ? "" : "s");
    else
        snprintf(c->describe, sizeof c->describe,
                 "oneDNN %d.%d.%d (cpu runtime: %s), ISA %s, runtime-managed threads", v->major,
                 v->minor, v->patch, runtime_name(v->cpu_runtime),
                 isa_name(dnnl_get_effective_cpu_isa()));
    size_t len = strlen(c->describe);
    snprintf(c->describe + len, sizeof c->describe - len, "; dtypes fp32%s%s%s%s",
             c->has_bf16 ? " bf16" : "", c->has_int8 ? " int8" : "",
             c->amx_bf16 && c->amx_int8 ? "; bf16 and int8"
             : c->amx_bf16               ? "; bf16"
             : c->amx_int8               ? "; int8"
                                         : "",
             c->amx_bf16 || c->amx_int8 ? " products on tpipe's AMX kernels" : "");
    *out = c;
    return TP_OK;
}

static void prim_free(dn_prim *p) {
    if (!p) return;
    if (p->prim) dnnl_primitive_destroy(p->prim);
    free(p);
}

static void dn_destroy(void *ctx) {
    dn_ctx *c = ctx;
    if (!c) return;
    for (int i = 0; i < c->cached; i++) prim_free(c->cache[i]);
    pthread_mutex_destroy(&c->lock);
    dnnl_engine_destroy(c->engine);
    free(c);
}

static const char *dn_describe(void *ctx) { return ctx ? ((dn_ctx *)ctx)->describe : "oneDNN"; }

static dnnl_alg_kind_t eltwise_alg(tp_activation act, float *alpha) {
    *alpha = 0.0f;
    switch (act) {
    case TP_ACT_GELU: return dnnl_eltwise_gelu_erf;
    case TP_ACT_GELU_TANH: return dnnl_eltwise_gelu_tanh;
    case TP_ACT_RELU: return dnnl_eltwise_relu; /* alpha 0: no negative slope */
    case TP_ACT_SILU: *alpha = 1.0f; return dnnl_eltwise_swish; /* x·sigmoid(1·x) */
    case TP_ACT_TANH: return dnnl_eltwise_tanh;
    case TP_ACT_NONE: break;
    }
    return dnnl_alg_kind_undef;
}

/* Builds the primitive for `key` (batch > 1 uses 3-D descriptors). NULL when oneDNN
 * has no implementation for it (e.g. unusual batch strides). */
static dn_prim *prim_build_f32(dn_ctx *c, const dn_key *key) {
    dn_prim *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->key = *key;
    const int64_t m = key->m, n = key->n, k = key->k;
    int nd = key->batch > 1 ? 3 : 2;
    dnnl_dims_t sd, ss, wd, ws, dd, ds, bd, bs;
    if (nd == 2) {
        sd[0] = m, sd[1] = k, ss[0] = key->lda, ss[1] = 1;
        wd[0] = k, wd[1] = n;
        if (key->trans_b)
            ws[0] = 1, ws[1] = key->ldb;
        else
            ws[0] = key->ldb, ws[1] = 1;
        dd[0] = m, dd[1] = n, ds[0] = key->ldc, ds[1] = 1;
        bd[0] = 1, bd[1] = n, bs[0] = n, bs[1] = 1;
    } else {
        /* a zero batch stride broadcasts that operand: batch dimension 1 */
        const int64_t ba = key->stride_a ? key->batch : 1, bb = key->stride_b ? key->batch : 1;
        sd[0] = ba, sd[1] = m, sd[2] = k;
        ss[0] = key->stride_a ? key->stride_a : m * key->lda, ss[1] = key->lda, ss[2] = 1;
        wd[0] = bb, wd[1] = k, wd[2] = n;
        ws[0] = key->stride_b ? key->stride_b : (key->trans_b ? n : k) * key->ldb;
        if (key->trans_b)
            ws[1] = 1, ws[2] = key->ldb;
        else
            ws[1] = key->ldb, ws[2] = 1;
        dd[0] = key->batch, dd[1] = m, dd[2] = n;
        ds[0] = key->stride_c, ds[1] = key->ldc, ds[2] = 1;
        bd[0] = 1, bd[1] = 1, bd[2] = n, bs[0] = n, bs[1] = n, bs[2] = 1;
    }

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t desc;
    int ok = dnnl_memory_desc_init_by_strides(&p->src_md, nd, sd, dnnl_f32, ss) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&p->wei_md, nd, wd, dnnl_f32, ws) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&p->dst_md, nd, dd, dnnl_f32, ds) == dnnl_success;
    if (ok && key->has_bias)
        ok = dnnl_memory_desc_init_by_strides(&p->bias_md, nd, bd, dnnl_f32, bs) == dnnl_success;
    /* oneDNN's output scale multiplies the bias too (alpha·(A·B + bias)), so with
     * alpha != 1 the bias is added after scaling, as a binary post-op. */
    const int bias_in_desc = key->has_bias && key->alpha == 1.0f;
    p->bias_arg = bias_in_desc ? DNNL_ARG_BIAS : (DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1);
    ok = ok && dnnl_matmul_desc_init(&desc, &p->src_md, &p->wei_md,
                                     bias_in_desc ? &p->bias_md : NULL,
                                     &p->dst_md) == dnnl_success;
    ok = ok && dnnl_primitive_attr_create(&attr) == dnnl_success;
    ok = ok && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                   dnnl_success;
    if (ok && key->alpha != 1.0f)
        ok = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &key->alpha) == dnnl_success;
    if (ok && ((key->has_bias && !bias_in_desc) || key->activation != TP_ACT_NONE))
        ok = dnnl_post_ops_create(&ops) == dnnl_success;
    if (ok && key->has_bias && !bias_in_desc)
        ok = dnnl_post_ops_append_binary(ops, dnnl_binary_add, &p->bias_md) == dnnl_success;
    if (ok && key->activation != TP_ACT_NONE) {
        float ealpha;
        dnnl_alg_kind_t alg = eltwise_alg((tp_activation)key->activation, &ealpha);
        ok = alg != dnnl_alg_kind_undef &&
             dnnl_post_ops_append_eltwise(ops, 1.0f, alg, ealpha, 0.0f) == dnnl_success;
    }
    if (ok && ops) ok = dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, c->engine, NULL) == dnnl_success;
    if (ok) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd) {
            p->scratch_md = *smd;
            p->scratch_size = dnnl_memory_desc_get_size(smd);
        }
        ok = dnnl_primitive_create(&p->prim, pd) == dnnl_success;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        prim_free(p);
        return NULL;
    }
    p->refs = 1;
    return p;
}

static dnnl_data_type_t dnnl_type_of(int dtype) {
    return dtype == TP_BF16 ? dnnl_bf16 : dtype == TP_I8 ? dnnl_s8 : dnnl_f32;
}

/* int8 products use 3-D descriptors [1, m, ·]: the per-row activation scale [1, m, 1]
 * is then a per-channel broadcast (dim 1), which oneDNN 2.6's brgemm kernels take as
 * a post-op; the 2-D [m, 1] form falls back to the slow ref_int8 implementation. */
static int prepared_ndims(int dtype) { return dtype == TP_I8 ? 3 : 2; }

/* The product with a prepared weight laid out as `wmd`. A arrives in the weight's
 * type (bf16 / s8) as a dense [m×k] buffer, or as fp32 in place for packed fp32.
 * bf16, fp32: bias and activation fused as for fp32. int8: no output scales (runtime
 * ones push oneDNN to its plain-layout gemm), but a post-op chain: × column (weight)
 * scale [n], × row (activation) scale [m], + bias, activation. */
static dn_prim *prim_build_prepared(dn_ctx *c, const dn_key *key, const dnnl_memory_desc_t *wmd) {
    dn_prim *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->key = *key;
    const int int8 = key->dtype == TP_I8;
    const int nd = prepared_ndims(key->dtype);
    const int64_t m = key->m, n = key->n, k = key->k;
    dnnl_dims_t sd, ss, dd, ds, nv, ns, rd, rs;
    if (nd == 3) {
        sd[0] = 1, sd[1] = m, sd[2] = k, ss[0] = m * key->lda, ss[1] = key->lda, ss[2] = 1;
        dd[0] = 1, dd[1] = m, dd[2] = n, ds[0] = m * key->ldc, ds[1] = key->ldc, ds[2] = 1;
        nv[0] = 1, nv[1] = 1, nv[2] = n, ns[0] = n, ns[1] = n, ns[2] = 1;
        rd[0] = 1, rd[1] = m, rd[2] = 1, rs[0] = m, rs[1] = 1, rs[2] = 1;
    } else {
        sd[0] = m, sd[1] = k, ss[0] = key->lda, ss[1] = 1;
        dd[0] = m, dd[1] = n, ds[0] = key->ldc, ds[1] = 1;
        nv[0] = 1, nv[1] = n, ns[0] = n, ns[1] = 1;
    }
    p->wei_md = *wmd;
    int ok = dnnl_memory_desc_init_by_strides(&p->src_md, nd, sd, dnnl_type_of(key->dtype),
                                              ss) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&p->dst_md, nd, dd, dnnl_f32, ds) == dnnl_success;
    if (ok && key->has_bias)
        ok = dnnl_memory_desc_init_by_strides(&p->bias_md, nd, nv, dnnl_f32, ns) == dnnl_success;
    if (ok && int8)
        ok = dnnl_memory_desc_init_by_strides(&p->cols_md, nd, nv, dnnl_f32, ns) == dnnl_success &&
             dnnl_memory_desc_init_by_strides(&p->rows_md, nd, rd, dnnl_f32, rs) == dnnl_success;
    const int bias_in_desc = key->has_bias && !int8;
    p->bias_arg = bias_in_desc ? DNNL_ARG_BIAS : DNNL_ARG_ATTR_MULTIPLE_POST_OP(2) | DNNL_ARG_SRC_1;

    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_matmul_desc_t desc;
    ok = ok && dnnl_matmul_desc_init(&desc, &p->src_md, &p->wei_md,
                                     bias_in_desc ? &p->bias_md : NULL, &p->dst_md) == dnnl_success;
    ok = ok && dnnl_primitive_attr_create(&attr) == dnnl_success;
    ok = ok && dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) ==
                   dnnl_success;
    ok = ok && dnnl_post_ops_create(&ops) == dnnl_success;
    if (ok && int8)
        ok = dnnl_post_ops_append_binary(ops, dnnl_binary_mul, &p->cols_md) == dnnl_success &&
             dnnl_post_ops_append_binary(ops, dnnl_binary_mul, &p->rows_md) == dnnl_success &&
             (!key->has_bias ||
              dnnl_post_ops_append_binary(ops, dnnl_binary_add, &p->bias_md) == dnnl_success);
    if (ok && key->activation != TP_ACT_NONE) {
        float ealpha;
        dnnl_alg_kind_t alg = eltwise_alg((tp_activation)key->activation, &ealpha);
        ok = alg != dnnl_alg_kind_undef &&
             dnnl_post_ops_append_eltwise(ops, 1.0f, alg, ealpha, 0.0f) == dnnl_success;
    }
    ok = ok && dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(&pd, &desc, attr, c->engine, NULL) == dnnl_success;
    if (ok) {
        const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
        if (smd) {
            p->scratch_md = *smd;
            p->scratch_size = dnnl_memory_desc_get_size(smd);
        }
        ok = dnnl_primitive_create(&p->prim, pd) == dnnl_success;
    }
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (!ok) {
        prim_free(p);
        return NULL;
    }
    p->refs = 1;
    return p;
}

static dn_prim *prim_build(dn_ctx *c, const dn_key *key, const dnnl_memory_desc_t *wmd) {
    return key->prepared ? prim_build_prepared(c, key, wmd) : prim_build_f32(c, key);
}

static int prim_matches(const dn_prim *p, const dn_key *key, const dnnl_memory_desc_t *wmd) {
    return memcmp(&p->key, key, sizeof *key) == 0 &&
           (!wmd || dnnl_memory_desc_equal(&p->wei_md, wmd));
}

static dn_prim *prim_acquire(dn_ctx *c, const dn_key *key, const dnnl_memory_desc_t *wmd) {
    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->cached; i++)
        if (prim_matches(c->cache[i], key, wmd)) {
            dn_prim *p = c->cache[i];
            p->refs++;
            p->used = ++c->clock;
            pthread_mutex_unlock(&c->lock);
            return p;
        }
    pthread_mutex_unlock(&c->lock);

    dn_prim *fresh = prim_build(c, key, wmd);
    if (!fresh) return NULL;

    pthread_mutex_lock(&c->lock);
    for (int i = 0; i < c->cached; i++)
        if (prim_matches(c->cache[i], key, wmd)) {
            /* another thread built the same one meanwhile: use the cached one */
            dn_prim *p = c->cache[i];
            p->refs++;
            p->used = ++c->clock;
            pthread_mutex_unlock(&c->lock);
            prim_free(fresh);
            return p;
        }
    dn_prim *evicted = NULL;
    int slot = c->cached;
    if (slot == DN_CACHE_SIZE) {
        slot = 0;
        for (int i = 1; i < c->cached; i++)
            if (c->cache[i]->used < c->cache[slot]->used) slot = i;
        evicted = c->cache[slot];
        if (--evicted->refs > 0) evicted = NULL; /* still running: its last user frees it */
    } else {
        c->cached++;
    }
    c->cache[slot] = fresh;
    fresh->refs++; /* the caller's reference */
    fresh->used = ++c->clock;
    pthread_mutex_unlock(&c->lock);
    prim_free(evicted);
    return fresh;
}

static void prim_release(dn_ctx *c, dn_prim *p) {
    pthread_mutex_lock(&c->lock);
    int last = --p->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (last) prim_free(p);
}

/* rows and cols: int8's per-row and per-column scales (NULL otherwise) */
static tp_status prim_run(dn_ctx *c, dn_prim *p, const void *a, const void *b,
                          const float *bias, float *out, const float *rows,
                          const float *cols) {
    dnnl_stream_t stream = NULL;
    dnnl_memory_t mem[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
    dnnl_exec_arg_t args[7];
    int nargs = 0;
    void *scratch = NULL;
    tp_status st = TP_ERR_BACKEND;

    if (dnnl_stream_create(&stream, c->engine, dnnl_stream_default_flags) != dnnl_success)
        goto done;
    struct bind { int arg; const dnnl_memory_desc_t *md; const void *ptr; } bind[7] = {
        {DNNL_ARG_SRC, &p->src_md, a},
        {DNNL_ARG_WEIGHTS, &p->wei_md, b},
        {DNNL_ARG_DST, &p->dst_md, out},
    };
    int nbind = 3;
    if (p->key.has_bias) bind[nbind++] = (struct bind){p->bias_arg, &p->bias_md, bias};
    if (rows) {
        bind[nbind++] = (struct bind){DNNL_ARG_ATTR_MULTIPLE_POST_OP(0) | DNNL_ARG_SRC_1,
                                      &p->cols_md, cols};
        bind[nbind++] = (struct bind){DNNL_ARG_ATTR_MULTIPLE_POST_OP(1) | DNNL_ARG_SRC_1,
                                      &p->rows_md, rows};
    }
    if (p->scratch_size) {
        size_t sz = (p->scratch_size + 63) & ~(size_t)63;
        if (!(scratch = aligned_alloc(64, sz))) {
            st = TP_ERR_NOMEM;
            goto done;
        }
        bind[nbind++] = (struct bind){DNNL_ARG_SCRATCHPAD, &p->scratch_md, scratch};
    }
    for (int i = 0; i < nbind; i++) {
        /* oneDNN takes a non-const handle; inputs are only read */
        if (dnnl_memory_create(&mem[i], bind[i].md, c->engine, (void *)(uintptr_t)bind[i].ptr) !=
            dnnl_success)
            goto done;
        args[nargs].arg = bind[i].arg;
        args[nargs].memory = mem[i];
        nargs++;
    }
    if (c->threads > 0 && c->omp_set_num_threads) c->omp_set_num_threads(c->threads);
    if (dnnl_primitive_execute(p->prim, stream, nargs, args) != dnnl_success) goto done;
    if (dnnl_stream_wait(stream) != dnnl_success) goto done;
    st = TP_OK;
done:
    for (int i = 0; i < 7; i++)
        if (mem[i]) dnnl_memory_destroy(mem[i]);
    if (stream) dnnl_stream_destroy(stream);
    free(scratch);
    return st;
}

static tp_status dn_matmul(void *ctx, const tp_matmul_args *a) {
    dn_ctx *c = ctx;
    if (!c || !a || a->m < 0 || a->n < 0 || a->k < 0 || a->batch < 0)
        return TP_ERR_INVALID_ARGUMENT;
    if (a->m == 0 || a->n == 0 || a->batch == 0) return TP_OK;
    const int ldb_min = a->trans_b ? a->k : a->n;
    if (a->lda < a->k || a->ldb < ldb_min || a->ldc < a->n) return TP_ERR_INVALID_ARGUMENT;
    if (a->activation < TP_ACT_NONE || a->activation > TP_ACT_TANH) return TP_ERR_INVALID_ARGUMENT;
    if (c->mv_f32 && a->batch == 1 && a->alpha == 1.0f && a->m <= MV_MAX_ROWS && a->k > 0) {
        /* a decode step's product: a stream over B (matvec.h) */
        const mv_out o = {.c = a->c, .ldc = a->ldc, .bias = a->bias, .activation = (int)a->activation};
        return mv_f32(a->b, a->ldb, a->trans_b, a->n, a->k, a->a, a->lda, a->m, &o, c->team)
                   ? TP_OK
                   : TP_ERR_NOMEM;
    }

    if (a->k == 0) {
        /* an empty sum is 0: run the same fused epilogue on a product of zeros (k = 1),
         * so the activation is oneDNN's and this file needs no libm */
        float *zeros = calloc((size_t)(a->m > a->n ? a->m : a->n), sizeof(float));
        if (!zeros) return TP_ERR_NOMEM;
        tp_matmul_args z = *a;
        z.k = 1;
        z.a = zeros, z.lda = 1, z.stride_a = 0;
        z.b = zeros, z.ldb = a->trans_b ? 1 : a->n, z.stride_b = 0;
        tp_status st = dn_matmul(ctx, &z);
        free(zeros);
        return st;
    }

    dn_key key;
    memset(&key, 0, sizeof key);
    key.m = a->m, key.n = a->n, key.k = a->k, key.batch = a->batch;
    key.lda = a->lda, key.ldb = a->ldb, key.ldc = a->ldc;
    key.trans_b = a->trans_b ? 1 : 0;
    key.has_bias = a->bias != NULL;
    key.activation = (int)a->activation;
    key.alpha = a->alpha;
    /* oneDNN 2.6 misplaces a broadcast binary post-op (our bias when alpha != 1) on a
     * batched destination that is not dense; those take the per-batch path. */
    const int bias_post_op = a->bias && a->alpha != 1.0f;
    const int dense_c = a->ldc == a->n && a->stride_c == (int64_t)a->m * a->n;
    if (a->batch > 1 && (!bias_post_op || dense_c)) {
        key.stride_a = a->stride_a, key.stride_b = a->stride_b, key.stride_c = a->stride_c;
        dn_prim *p = prim_acquire(c, &key, NULL);
        if (p) {
            tp_status st = prim_run(c, p, a->a, a->b, a->bias, a->c, NULL, NULL);
            prim_release(c, p);
            return st;
        }
        /* no batched implementation for these strides: one 2-D product per batch */
    }
    key.batch = 1;
    key.stride_a = key.stride_b = key.stride_c = 0;
    dn_prim *p = prim_acquire(c, &key, NULL);
    if (!p) return TP_ERR_BACKEND;
    tp_status st = TP_OK;
    for (int b = 0; b < a->batch && st == TP_OK; b++)
        st = prim_run(c, p, a->a + (int64_t)b * a->stride_a, a->b + (int64_t)b * a->stride_b,
                      a->bias, a->c + (int64_t)b * a->stride_c, NULL, NULL);
    prim_release(c, p);
    return st;
}


/* ---------------------------------------------------------------- prepared weights */

/* The primitive descriptor oneDNN picks for an m×n×k product in `dtype` with the
 * weights' layout left to it ("any", or `wmd` when given), shaped as
 * prim_build_prepared builds them (int8: 3-D, scale post-ops): prepare reorders
 * weights to what it asks for. */
static tp_status layout_pd(dn_ctx *c, int dtype, int64_t m, int64_t n, int64_t k,
                           const dnnl_memory_desc_t *wmd, dnnl_primitive_desc_t *pd) {
    *pd = NULL;
    const int nd = prepared_ndims(dtype);
    dnnl_memory_desc_t src, wei, dst, cols, rows;
    dnnl_dims_t sd = {m, k}, wd = {k, n}, dd = {m, n};
    dnnl_dims_t sd3 = {1, m, k}, wd3 = {1, k, n}, dd3 = {1, m, n}, cd3 = {1, 1, n}, rd3 = {1, m, 1};
    const dnnl_format_tag_t plain = nd == 3 ? dnnl_abc : dnnl_ab;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t ops = NULL;
    dnnl_matmul_desc_t desc;
    int ok = dnnl_memory_desc_init_by_tag(&src, nd, nd == 3 ? sd3 : sd, dnnl_type_of(dtype), plain) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&wei, nd, nd == 3 ? wd3 : wd, dnnl_type_of(dtype), dnnl_format_tag_any) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&dst, nd, nd == 3 ? dd3 : dd, dnnl_f32, plain) == dnnl_success &&
             dnnl_matmul_desc_init(&desc, &src, wmd ? wmd : &wei, NULL, &dst) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && dtype == TP_I8)
        ok = dnnl_memory_desc_init_by_tag(&cols, 3, cd3, dnnl_f32, dnnl_abc) == dnnl_success &&
             dnnl_memory_desc_init_by_tag(&rows, 3, rd3, dnnl_f32, dnnl_abc) == dnnl_success &&
             dnnl_post_ops_create(&ops) == dnnl_success &&
             dnnl_post_ops_append_binary(ops, dnnl_binary_mul, &cols) == dnnl_success &&
             dnnl_post_ops_append_binary(ops, dnnl_binary_mul, &rows) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, ops) == dnnl_success;
    ok = ok && dnnl_primitive_desc_create(pd, &desc, attr, c->engine, NULL) == dnnl_success;
    if (ops) dnnl_post_ops_destroy(ops);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok ? TP_OK : TP_ERR_UNSUPPORTED;
}

/* Whether `dtype` has a real kernel here: oneDNN's reference implementations
 * ("ref:any", "gemm:ref") compute bf16 and int8 on any CPU, far slower than fp32. */
static tp_status dn_probe(dn_ctx *c, int dtype) {
    dnnl_primitive_desc_t pd;
    if (layout_pd(c, dtype, 32, 64, 64, NULL, &pd) != TP_OK) return TP_ERR_UNSUPPORTED;
    const char *impl = NULL;
    dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
    const int fast = impl && !strstr(impl, "ref");
    dnnl_primitive_desc_destroy(pd);
    return fast ? TP_OK : TP_ERR_UNSUPPORTED;
}

static int dn_supports_dtype(void *ctx, tp_dtype dtype) {
    const dn_ctx *c = ctx;
    if (!c) return 0;
    return dtype == TP_F32 || (dtype == TP_BF16 && c->has_bf16) ||
           (dtype == TP_I8 && c->has_int8);
}

static void dn_release_weight(void *ctx, void *handle) {
    (void)ctx;
    dn_weight *h = handle;
    if (!h) return;
    free(h->data);
    free(h->scales);
    free(h->colsums);
    free(h);
}

/* One reorder from the model's fp32 weight (strided: transposed when trans_b) to
 * h->md, scaled per column by `inv` (int8) when given. */
static tp_status reorder_weight(dn_ctx *c, const tp_weight_desc *w, dn_weight *h,
                                const float *inv) {
    const int nd = prepared_ndims(w->dtype), last = nd - 1;
    dnnl_memory_desc_t from;
    dnnl_dims_t d, st;
    d[0] = 1, st[0] = (int64_t)(w->trans_b ? w->n : w->k) * w->ld; /* 3-D: batch of one */
    d[last - 1] = w->k, d[last] = w->n;
    if (w->trans_b)
        st[last - 1] = 1, st[last] = w->ld;
    else
        st[last - 1] = w->ld, st[last] = 1;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = NULL;
    dnnl_memory_t msrc = NULL, mdst = NULL;
    dnnl_stream_t stream = NULL;
    int ok = dnnl_memory_desc_init_by_strides(&from, nd, d, dnnl_f32, st) == dnnl_success &&
             dnnl_primitive_attr_create(&attr) == dnnl_success;
    if (ok && inv)
        ok = dnnl_primitive_attr_set_output_scales(attr, w->n, 1 << last, inv) == dnnl_success;
    ok = ok && dnnl_reorder_primitive_desc_create(&pd, &from, c->engine, &h->md, c->engine, attr) ==
                   dnnl_success;
    ok = ok && dnnl_primitive_create(&prim, pd) == dnnl_success;
    ok = ok && dnnl_memory_create(&msrc, &from, c->engine, (void *)(uintptr_t)w->data) == dnnl_success;
    ok = ok && dnnl_memory_create(&mdst, &h->md, c->engine, h->data) == dnnl_success;
    ok = ok && dnnl_stream_create(&stream, c->engine, dnnl_stream_default_flags) == dnnl_success;
    if (ok) {
        dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, msrc}, {DNNL_ARG_TO, mdst}};
        if (c->threads > 0 && c->omp_set_num_threads) c->omp_set_num_threads(c->threads);
        ok = dnnl_primitive_execute(prim, stream, 2, args) == dnnl_success &&
             dnnl_stream_wait(stream) == dnnl_success;
    }
    if (stream) dnnl_stream_destroy(stream);
    if (msrc) dnnl_memory_destroy(msrc);
    if (mdst) dnnl_memory_destroy(mdst);
    if (prim) dnnl_primitive_destroy(prim);
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return ok ? TP_OK : TP_ERR_BACKEND;
}

/* max |w| per output channel j: over row j of a Linear weight [n×k], or over column j
 * of a Conv1D one [k×n]; AVX-512 where there is one (this runs over every weight). */
__attribute__((target("avx512f")))
static void column_absmax_avx512(const tp_weight_desc *w, float *mx) {
    if (w->trans_b) {
        const int body = w->k - w->k % 16;
        const __mmask16 tail = (__mmask16)((1u << (w->k % 16)) - 1);
        for (int j = 0; j < w->n; j++) {
            const float *x = w->data + (size_t)j * w->ld;
            __m512 v = _mm512_setzero_ps();
            for (int i = 0; i < body; i += 16) v = _mm512_max_ps(v, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
            if (tail) v = _mm512_max_ps(v, _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x + body)));
            mx[j] = _mm512_reduce_max_ps(v);
        }
        return;
    }
    const int body = w->n - w->n % 16;
    const __mmask16 tail = (__mmask16)((1u << (w->n % 16)) - 1);
    memset(mx, 0, (size_t)w->n * sizeof *mx);
    for (int i = 0; i < w->k; i++) {
        const float *x = w->data + (size_t)i * w->ld;
        for (int j = 0; j < body; j += 16)
            _mm512_storeu_ps(mx + j, _mm512_max_ps(_mm512_loadu_ps(mx + j),
                                                   _mm512_abs_ps(_mm512_loadu_ps(x + j))));
        if (tail)
            _mm512_mask_storeu_ps(mx + body, tail,
                                  _mm512_max_ps(_mm512_maskz_loadu_ps(tail, mx + body),
                                                _mm512_abs_ps(_mm512_maskz_loadu_ps(tail, x + body))));
    }
}

static void column_absmax(const dn_ctx *c, const tp_weight_desc *w, float *mx) {
    if (c->cvt_avx512) {
        column_absmax_avx512(w, mx);
        return;
    }
    memset(mx, 0, (size_t)w->n * sizeof *mx);
    for (int j = 0; j < w->n; j++)
        for (int i = 0; i < w->k; i++) {
            float v = w->trans_b ? w->data[(size_t)j * w->ld + i] : w->data[(size_t)i * w->ld + j];
            v = v < 0 ? -v : v;
            mx[j] = v > mx[j] ? v : mx[j];
        }
}

/* Makes h stream few-row products through matvec.h, in a layout its kernels read and
 * oneDNN's matmul takes with a real (non-reference) kernel: bf16's BA16a64b2a (oneDNN's
 * own choice on AVX512-BF16), int8's [n×k] "acb" (oneDNN 2.6 picks a plain [k×n] one,
 * which it copies per call just the same, and names no blocked 3-D int8 layout). */
static void choose_streamed_layout(dn_ctx *c, const tp_weight_desc *w, dn_weight *h) {
    dnnl_memory_desc_t want;
    dnnl_dims_t d2 = {w->k, w->n}, d3 = {1, w->k, w->n};
    const int int8 = w->dtype == TP_I8;
    if (dnnl_memory_desc_init_by_tag(&want, int8 ? 3 : 2, int8 ? d3 : d2, dnnl_type_of(w->dtype),
                                     int8 ? dnnl_acb : dnnl_BA16a64b2a) != dnnl_success)
        return;
    if (!dnnl_memory_desc_equal(&want, &h->md)) {
        dnnl_primitive_desc_t pd;
        if (layout_pd(c, w->dtype, 64, w->n, w->k, &want, &pd) != TP_OK) return;
        const char *impl = NULL;
        dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl);
        const int taken = impl && !strstr(impl, "ref") &&
                          dnnl_memory_desc_equal(
                              &want, dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0));
        dnnl_primitive_desc_destroy(pd);
        if (!taken) return;
        h->md = want;
    }
    h->streamed = 1;
    h->kpad = int8 ? (w->k + 63) & ~63 : (int)want.padded_dims[0];
}

static tp_status dn_prepare_weight(void *ctx, const tp_weight_desc *w, void **out) {
    dn_ctx *c = ctx;
    if (!out) return TP_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!c || !w || w->struct_size < sizeof *w || !w->data || w->n < 1 || w->k < 1 ||
        w->ld < (w->trans_b ? w->k : w->n))
        return TP_ERR_INVALID_ARGUMENT;
    if (!dn_supports_dtype(c, w->dtype)) return TP_ERR_UNSUPPORTED;

    dnnl_primitive_desc_t pd;
    if (layout_pd(c, w->dtype, 64, w->n, w->k, NULL, &pd) != TP_OK)
        return TP_ERR_UNSUPPORTED;
    dn_weight *h = calloc(1, sizeof *h);
    if (!h) {
        dnnl_primitive_desc_destroy(pd);
        return TP_ERR_NOMEM;
    }
    h->dtype = w->dtype, h->n = w->n, h->k = w->k;
    h->md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    dnnl_primitive_desc_destroy(pd);
    if ((w->dtype == TP_BF16 && c->mv_bf16) || (w->dtype == TP_I8 && c->mv_int8))
        choose_streamed_layout(c, w, h);

    if (w->dtype == TP_F32) {
        /* packing pays only when the implementation wants another layout */
        dnnl_memory_desc_t plain;
        dnnl_dims_t d = {w->k, w->n}, st = {w->trans_b ? 1 : w->ld, w->trans_b ? w->ld : 1};
        if (dnnl_memory_desc_init_by_strides(&plain, 2, d, dnnl_f32, st) == dnnl_success &&
            dnnl_memory_desc_equal(&plain, &h->md)) {
            free(h);
            return TP_ERR_UNSUPPORTED;
        }
    }
    size_t size = (dnnl_memory_desc_get_size(&h->md) + 63) & ~(size_t)63;
    if (h->streamed && w->dtype == TP_I8 && c->amx_int8) {
        /* what amx_int8 may read: whole blocks of 32 rows, and a partial K step past them */
        const size_t reach = ((size_t)((w->n + 31) & ~31) * w->k + 64 + 63) & ~(size_t)63;
        size = reach > size ? reach : size; /* aligned_alloc: a multiple of the alignment */
    }
    float *inv = NULL;
    tp_status st = TP_OK;
    if (!(h->data = aligned_alloc(64, size))) st = TP_ERR_NOMEM;
    if (st == TP_OK && w->dtype == TP_I8) {
        /* symmetric per output channel: scale = max |w| / 127 over the channel's k inputs */
        h->scales = malloc((size_t)w->n * sizeof *h->scales);
        inv = malloc((size_t)w->n * sizeof *inv);
        if (!h->scales || !inv) st = TP_ERR_NOMEM;
        if (st == TP_OK) column_absmax(c, w, h->scales);
        for (int j = 0; st == TP_OK && j < w->n; j++) {
            h->scales[j] = h->scales[j] > 0.0f ? h->scales[j] / 127.0f : 1.0f;
            inv[j] = 1.0f / h->scales[j];
        }
    }
    if (st == TP_OK) {
        memset(h->data, 0, size); /* the blocks' padding: zeros the kernels may read */
        st = reorder_weight(c, w, h, inv);
    }
    free(inv);
    if (st == TP_OK && h->streamed && w->dtype == TP_I8) {
        if (!(h->colsums = malloc((size_t)w->n * sizeof *h->colsums)))
            st = TP_ERR_NOMEM;
        else
            mv_int8_colsums(h->data, w->n, w->k, h->colsums);
    }
    if (st != TP_OK) {
        dn_release_weight(c, h);
        return st;
    }
    *out = h;
    return TP_OK;
}

/* A's conversion per product: m×k elements against the product's m×k×n, but written
 * plainly it costs a third of a bf16 forward, hence the AVX-512 versions (chosen at
 * run time; the library is built for the baseline ISA). */

/* Round to nearest even, as vcvtneps2bf16 does; NaN stays NaN. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void rows_to_bf16_avx512(const float *a, int m, int k, int lda, uint16_t *out) {
    for (int r = 0; r < m; r++) {
        const float *x = a + (size_t)r * lda;
        uint16_t *y = out + (size_t)r * k;
        int i = 0;
        for (; i + 16 <= k; i += 16)
            _mm256_storeu_si256((__m256i *)(y + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(x + i)));
        if (i < k) {
            const __mmask16 mk = (__mmask16)((1u << (k - i)) - 1);
            const __m256bh v = _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, x + i));
            _mm256_mask_storeu_epi16(y + i, mk, (__m256i)v);
        }
    }
}

/* On the team when there are many rows (the bf16 products oneDNN computes: those of 5
 * rows or more on CPUs without AMX): the product waits for all of A, and on one thread
 * the other sat idle through it. */
static void rows_to_bf16(const dn_ctx *c, const float *a, int m, int k, int lda, uint16_t *out) {
    enum { SLICE = 64 };
    if (c->cvt_bf16) {
        /* a decode step's rows straight, not in an if(0) parallel region, whose team
         * set-up was paid four times per product */
        if (m < 2 * SLICE || c->team < 2) {
            rows_to_bf16_avx512(a, m, k, lda, out);
            return;
        }
#pragma omp parallel for num_threads(c->team) schedule(static)
        for (int r0 = 0; r0 < m; r0 += SLICE)
            rows_to_bf16_avx512(a + (size_t)r0 * lda, m - r0 < SLICE ? m - r0 : SLICE, k, lda,
                                out + (size_t)r0 * k);
        return;
    }
    for (int r = 0; r < m; r++)
        for (int i = 0; i < k; i++) out[(size_t)r * k + i] = to_bf16(a[(size_t)r * lda + i]);
}

/* Symmetric per-row quantization (quantize.h). */
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void quantize_rows_avx512(const float *a, int m, int k, int lda, int8_t *q, float *scale) {
    for (int r = 0; r < m; r++) {
        const float *x = a + (size_t)r * lda;
        int8_t *y = q + (size_t)r * k;
        const __m512 inverse = quant_row_inverse(x, k, scale + r);
        int i = 0;
        for (; i + 16 <= k; i += 16) _mm_storeu_si128((__m128i *)(y + i), quant_16(x + i, 16, inverse));
        if (i < k) _mm_mask_storeu_epi8(y + i, (__mmask16)((1u << (k - i)) - 1), quant_16(x + i, k - i, inverse));
    }
}

static void quantize_rows(const dn_ctx *c, const float *a, int m, int k, int lda, int8_t *q,
                          float *scale) {
    if (c->cvt_avx512) {
        quantize_rows_avx512(a, m, k, lda, q, scale);
        return;
    }
    for (int r = 0; r < m; r++) {
        const float *x = a + (size_t)r * lda;
        float mx = 0.0f;
        for (int i = 0; i < k; i++) {
            float v = x[i] < 0 ? -x[i] : x[i];
            mx = v > mx ? v : mx;
        }
        const float inv = mx > 0.0f ? 127.0f / mx : 0.0f;
        scale[r] = mx / 127.0f;
        int8_t *y = q + (size_t)r * k;
        for (int i = 0; i < k; i++) {
            float v = x[i] * inv;
            y[i] = (int8_t)(int)(v + (v >= 0.0f ? 0.5f : -0.5f));
        }
    }
}

/* A product of at most MV_MAX_ROWS rows on a streamed weight (matvec.h): A converted
 * as for oneDNN (bf16, or int8 with per-row scales), rows padded to the weight's
 * blocks with what contributes nothing (bf16 zeros; int8 q + 128 = 128). */
static tp_status matmul_streamed(const dn_ctx *c, const tp_matmul_args *a, const dn_weight *h) {
    const mv_out o = {.c = a->c, .ldc = a->ldc, .bias = a->bias, .activation = (int)a->activation};
    const size_t len = (size_t)a->m * (size_t)h->kpad;
    if (h->dtype == TP_BF16) {
        uint16_t *x = calloc(len, sizeof *x);
        if (!x) return TP_ERR_NOMEM;
        for (int r = 0; r < a->m; r++)
            rows_to_bf16(c, a->a + (size_t)r * a->lda, 1, a->k, a->lda, x + (size_t)r * h->kpad);
        mv_bf16(h->data, h->n, h->kpad, x, a->m, &o, c->team);
        free(x);
        return TP_OK;
    }
    int8_t *q = calloc(len, 1);
    float xscale[MV_MAX_ROWS];
    if (!q) return TP_ERR_NOMEM;
    for (int r = 0; r < a->m; r++)
        quantize_rows(c, a->a + (size_t)r * a->lda, 1, a->k, a->lda, q + (size_t)r * h->kpad,
                      xscale + r);
    for (size_t i = 0; i < len; i++) q[i] = (int8_t)((uint8_t)q[i] ^ 0x80u);
    mv_int8(h->data, h->scales, h->colsums, h->n, h->k, (const uint8_t *)q, h->kpad, xscale,
            a->m, &o, c->team);
    free(q);
    return TP_OK;
}

/* A bf16 product of more rows on amx.h's kernel. */
static tp_status matmul_amx(const dn_ctx *c, const tp_matmul_args *a, const dn_weight *h) {
    uint16_t *x = aligned_alloc(64, (size_t)amx_rows(a->m) * (size_t)h->kpad * sizeof *x);
    if (!x) return TP_ERR_NOMEM;
    const mv_out o = {.c = a->c, .ldc = a->ldc, .bias = a->bias, .activation = (int)a->activation};
    amx_bf16(h->data, h->n, h->k, h->kpad, a->a, a->m, a->lda, x, &o, c->team);
    free(x);
    return TP_OK;
}

/* An int8 product of more rows on amx.h's kernel, A quantized as for oneDNN. */
static tp_status matmul_amx_int8(const dn_ctx *c, const tp_matmul_args *a, const dn_weight *h) {
    int8_t *x = aligned_alloc(64, (size_t)amx_rows(a->m) * (size_t)h->kpad);
    float *xscale = malloc((size_t)a->m * sizeof *xscale);
    if (!x || !xscale) {
        free(x), free(xscale);
        return TP_ERR_NOMEM;
    }
    const mv_out o = {.c = a->c, .ldc = a->ldc, .bias = a->bias, .activation = (int)a->activation};
    amx_int8(h->data, h->n, h->k, h->kpad, h->scales, a->a, a->m, a->lda, x, xscale, &o, c->team);
    free(x), free(xscale);
    return TP_OK;
}

static tp_status dn_matmul_prepared(void *ctx, const tp_matmul_args *a, void *handle) {
    dn_ctx *c = ctx;
    const dn_weight *h = handle;
    if (!c || !a || !h || a->m < 0) return TP_ERR_INVALID_ARGUMENT;
    if (a->activation < TP_ACT_NONE || a->activation > TP_ACT_TANH) return TP_ERR_INVALID_ARGUMENT;
    /* what the prepared primitives do not cover computes in fp32 in the core */
    if (a->batch != 1 || a->alpha != 1.0f || a->n != h->n || a->k != h->k || a->lda < a->k ||
        a->ldc < a->n)
        return TP_ERR_UNSUPPORTED;
    if (a->m == 0) return TP_OK;
    if (h->streamed && a->m <= MV_MAX_ROWS) return matmul_streamed(c, a, h);
    if (h->streamed && h->dtype == TP_BF16 && c->amx_bf16)
        return matmul_amx(c, a, h);
    if (h->streamed && h->dtype == TP_I8 && c->amx_int8)
        return matmul_amx_int8(c, a, h);

    const size_t mk = (size_t)a->m * (size_t)a->k;
    void *src = NULL;
    float *rows = NULL;
    const void *in = a->a;
    if (h->dtype == TP_BF16) {
        uint16_t *b = malloc(mk * sizeof *b);
        if (!b) return TP_ERR_NOMEM;
        rows_to_bf16(c, a->a, a->m, a->k, a->lda, b);
        in = src = b;
    } else if (h->dtype == TP_I8) {
        src = malloc(mk);
        rows = malloc((size_t)a->m * sizeof *rows);
        if (!src || !rows) {
            free(src);
            free(rows);
            return TP_ERR_NOMEM;
        }
        quantize_rows(c, a->a, a->m, a->k, a->lda, src, rows);
        in = src;
    }
    dn_key key;
    memset(&key, 0, sizeof key);
    key.m = a->m, key.n = a->n, key.k = a->k, key.batch = 1;
    key.lda = h->dtype == TP_F32 ? a->lda : a->k;
    key.ldc = a->ldc;
    key.has_bias = a->bias != NULL;
    key.activation = (int)a->activation;
    key.alpha = 1.0f;
    key.prepared = 1, key.dtype = h->dtype;
    tp_status st = TP_ERR_UNSUPPORTED;
    dn_prim *p = prim_acquire(c, &key, &h->md);
    if (p) {
        st = prim_run(c, p, in, h->data, a->bias, a->c, rows, h->scales);
        prim_release(c, p);
    }
    free(src);
    free(rows);
    return st;
}

/* Products of two activations in bf16 (attention in a bf16 model) on amx.h's kernel;
 * elsewhere the core's fp32 attention is faster than a oneDNN call per head. */
static tp_status dn_matmul_bf16(void *ctx, const tp_matmul_args *a) {
    dn_ctx *c = ctx;
    if (!c || !a || a->struct_size < sizeof *a || a->m < 0 || a->n < 0 || a->k < 0 || a->batch < 1)
        return TP_ERR_INVALID_ARGUMENT;
    if (!c->amx_bf16 || a->bias || a->activation != TP_ACT_NONE) return TP_ERR_UNSUPPORTED;
    if (a->m == 0 || a->n == 0) return TP_OK;
    if (a->k == 0) {
        for (int e = 0; e < a->batch; e++)
            for (int r = 0; r < a->m; r++)
                memset(a->c + e * a->stride_c + (int64_t)r * a->ldc, 0, (size_t)a->n * sizeof(float));
        return TP_OK;
    }
    return amx_bf16_activations(a->a, a->lda, a->stride_a, a->b, a->ldb, a->stride_b, a->trans_b,
                                a->c, a->ldc, a->stride_c, a->m, a->n, a->k, a->batch, a->alpha,
                                c->team) == 0
               ? TP_OK
               : TP_ERR_NOMEM;
}

static const tp_backend_vtable dn_vtable = {
    .struct_size = sizeof(tp_backend_vtable),
    .create = dn_create,
    .destroy = dn_destroy,
    .describe = dn_describe,
    .matmul = dn_matmul,
    .layer_norm = NULL, /* the core's reference layer norm */
    .supports_dtype = dn_supports_dtype,
    .prepare_weight = dn_prepare_weight,
    .release_weight = dn_release_weight,
    .matmul_prepared = dn_matmul_prepared,
    .matmul_bf16 = dn_matmul_bf16,
};

static const tp_module_descriptor dn_descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_BACKEND,
    .name = "onednn",
    .version = "0.1.0",
    .license = "MIT",
    .description = "fp32 matmul through oneDNN 2.x primitives with fused bias, scale and activation",
    .vtable = &dn_vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void);
TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &dn_descriptor; }
