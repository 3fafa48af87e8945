/* openblas.c: the "openblas" compute backend: matmul through cblas_sgemm, with the
 * bias and activation epilogue done here row by row while the rows are still in
 * cache. Links only OpenBLAS and the SDK headers, nothing of the core.
 *
 * Threading: OpenBLAS's thread count is process-wide, so create() sets it once for
 * the process; matmul may be called concurrently from several threads on one
 * context (OpenBLAS 0.3.x serializes what it must internally; this file keeps no
 * mutable state after create). */
#define _GNU_SOURCE
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "tpipe_backend.h"

typedef struct ob_ctx {
    int threads;
    char describe[256];
} ob_ctx;

/* The activations, written exactly as the core's reference kernels compute them so
 * that backends agree to rounding. */
static inline float act_gelu(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }
static inline float act_gelu_tanh(float x) {
    const float c = 0.7978845608028654f; /* sqrt(2/pi) */
    return 0.5f * x * (1.0f + tanhf(c * (x + 0.044715f * x * x * x)));
}
static inline float act_relu(float x) { return x > 0.0f ? x : 0.0f; }
static inline float act_silu(float x) { return x / (1.0f + expf(-x)); }

/* bias, then activation, on one row of C. */
static void epilogue_row(float *c, int n, const float *bias, tp_activation act) {
    if (bias)
        for (int j = 0; j < n; j++) c[j] += bias[j];
    switch (act) {
    case TP_ACT_NONE: break;
    case TP_ACT_GELU: for (int j = 0; j < n; j++) c[j] = act_gelu(c[j]); break;
    case TP_ACT_GELU_TANH: for (int j = 0; j < n; j++) c[j] = act_gelu_tanh(c[j]); break;
    case TP_ACT_RELU: for (int j = 0; j < n; j++) c[j] = act_relu(c[j]); break;
    case TP_ACT_SILU: for (int j = 0; j < n; j++) c[j] = act_silu(c[j]); break;
    case TP_ACT_TANH: for (int j = 0; j < n; j++) c[j] = tanhf(c[j]); break;
    }
}

static int cores_available(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        int n = CPU_COUNT(&set);
        if (n > 0) return n;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static tp_status ob_create(const tp_backend_config *cfg, void **ctx, char *why, size_t why_len) {
    *ctx = NULL;
    ob_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        if (why && why_len) snprintf(why, why_len, "openblas: out of memory");
        return TP_ERR_NOMEM;
    }
    int want = (cfg && cfg->num_threads > 0) ? cfg->num_threads : cores_available();
    openblas_set_num_threads(want);
    c->threads = openblas_get_num_threads();
    const char *config = openblas_get_config();
    /* the config string starts with the library name already */
    if (config && strncmp(config, "OpenBLAS ", 9) == 0) config += 9;
    const char *core = openblas_get_corename();
    snprintf(c->describe, sizeof c->describe, "OpenBLAS %s core %s, %d thread%s",
             config ? config : "?", core ? core : "?", c->threads, c->threads == 1 ? "" : "s");
    *ctx = c;
    return TP_OK;
}

static void ob_destroy(void *ctx) { free(ctx); }

static const char *ob_describe(void *ctx) {
    return ctx ? ((ob_ctx *)ctx)->describe : "OpenBLAS";
}

static tp_status ob_matmul(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    if (!a || a->m < 0 || a->n < 0 || a->k < 0 || a->batch < 0) return TP_ERR_INVALID_ARGUMENT;
    if (a->m == 0 || a->n == 0 || a->batch == 0) return TP_OK;
    const int ldb_min = a->trans_b ? a->k : a->n;
    if (a->lda < a->k || a->ldb < ldb_min || a->ldc < a->n) return TP_ERR_INVALID_ARGUMENT;

    for (int b = 0; b < a->batch; b++) {
        const float *A = a->a + (int64_t)b * a->stride_a;
        const float *B = a->b + (int64_t)b * a->stride_b;
        float *C = a->c + (int64_t)b * a->stride_c;
        if (a->k == 0) {
            /* BLAS rejects lda = 0; the product of empty sums is zero */
            for (int i = 0; i < a->m; i++)
                for (int j = 0; j < a->n; j++) C[(size_t)i * a->ldc + j] = 0.0f;
        } else {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, a->trans_b ? CblasTrans : CblasNoTrans,
                        a->m, a->n, a->k, a->alpha, A, a->lda < 1 ? 1 : a->lda, B,
                        a->ldb < 1 ? 1 : a->ldb, 0.0f, C, a->ldc < 1 ? 1 : a->ldc);
        }
        if (a->bias || a->activation != TP_ACT_NONE)
            for (int i = 0; i < a->m; i++)
                epilogue_row(C + (size_t)i * a->ldc, a->n, a->bias, a->activation);
    }
    return TP_OK;
}

static const tp_backend_vtable ob_vtable = {
    .struct_size = sizeof(tp_backend_vtable),
    .create = ob_create,
    .destroy = ob_destroy,
    .describe = ob_describe,
    .matmul = ob_matmul,
    .layer_norm = NULL, /* the core's reference layer norm is memory-bound anyway */
};

static const tp_module_descriptor ob_descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_BACKEND,
    .name = "openblas",
    .version = "0.1.0",
    .license = "MIT",
    .description = "fp32 matmul through OpenBLAS cblas_sgemm, fused bias and activation",
    .vtable = &ob_vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void);
TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &ob_descriptor; }
