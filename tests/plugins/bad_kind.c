/* bad_kind.c: a valid compute backend ("test-naive"). Found in the plugin path it is
 * refused for its kind; found in the backend path it loads, which tests the success
 * path of .so backends. Naive loops; activations NONE and RELU only (the module links
 * nothing, not even libm). */
#include <stdio.h>
#include <stdlib.h>
#include <tpipe_backend.h>

typedef struct {
    int num_threads;
    char describe[64];
} naive_ctx;

static tp_status naive_create(const tp_backend_config *cfg, void **ctx, char *why, size_t len) {
    naive_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(why, len, "test-naive: out of memory");
        return TP_ERR_NOMEM;
    }
    c->num_threads = cfg->num_threads;
    snprintf(c->describe, sizeof c->describe, "naive loops, %d threads asked",
             cfg->num_threads);
    *ctx = c;
    return TP_OK;
}

static void naive_destroy(void *ctx) { free(ctx); }

static const char *naive_describe(void *ctx) { return ((naive_ctx *)ctx)->describe; }

static tp_status naive_matmul(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    if (a->activation != TP_ACT_NONE && a->activation != TP_ACT_RELU) return TP_ERR_UNSUPPORTED;
    for (int b = 0; b < a->batch; b++) {
        const float *A = a->a + b * a->stride_a, *B = a->b + b * a->stride_b;
        float *C = a->c + b * a->stride_c;
        for (int i = 0; i < a->m; i++)
            for (int j = 0; j < a->n; j++) {
                float s = 0;
                for (int k = 0; k < a->k; k++)
                    s += A[i * a->lda + k] * (a->trans_b ? B[j * a->ldb + k] : B[k * a->ldb + j]);
                s = a->alpha * s + (a->bias ? a->bias[j] : 0.0f);
                if (a->activation == TP_ACT_RELU && s < 0) s = 0;
                C[i * a->ldc + j] = s;
            }
    }
    return TP_OK;
}

static const tp_backend_vtable vtable = {
    .struct_size = sizeof(tp_backend_vtable),
    .create = naive_create,
    .destroy = naive_destroy,
    .describe = naive_describe,
    .matmul = naive_matmul,
};

static const tp_module_descriptor descriptor = {
    .struct_size = sizeof(tp_module_descriptor),
    .abi_version = TP_ABI_CURRENT,
    .kind = TP_MODULE_BACKEND,
    .name = "test-naive",
    .version = "0.0.1",
    .license = "MIT",
    .description = "test backend: naive loops",
    .vtable = &vtable,
};

TP_MODULE_EXPORT const tp_module_descriptor *tpipe_module_entry(void) { return &descriptor; }
