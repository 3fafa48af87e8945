/* test_backends.c: the openblas and onednn backend modules, loaded with dlopen as
 * the runtime loads them, checked against a naive double-precision matmul: shapes
 * from a single row to BERT-base sized, both layouts of B, strided batches, bias,
 * every activation and alpha; then two threads sharing one context; then prepared
 * (bf16 / int8) weights where the backend has them. A backend that was not built
 * fails the test. */
#include <dlfcn.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bf16_ref.h"
#include "check.h"
#include "tpipe_backend.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static float frand(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static double act_ref(double x, tp_activation act) {
    switch (act) {
    case TP_ACT_NONE: return x;
    case TP_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case TP_ACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case TP_ACT_RELU: return x > 0 ? x : 0;
    case TP_ACT_SILU: return x / (1.0 + exp(-x));
    case TP_ACT_TANH: return tanh(x);
    }
    return x;
}

typedef struct mm_case {
    int m, n, k, trans_b, batch;
    int has_bias;
    tp_activation act;
    float alpha;
    int pad;          /* extra elements on every row stride and batch stride */
    int share_b;      /* batch > 1: stride_b = 0 (one B for every batch) */
} mm_case;

typedef struct mm_buf {
    tp_matmul_args args;
    float *a, *b, *c, *bias;
    double *want;     /* [batch][m][n] */
    size_t c_len;
} mm_buf;

#define SENTINEL 12345.0f

static void mm_setup(const mm_case *t, mm_buf *mb) {
    memset(mb, 0, sizeof *mb);
    tp_matmul_args *g = &mb->args;
    g->struct_size = sizeof *g;
    g->m = t->m, g->n = t->n, g->k = t->k, g->batch = t->batch, g->trans_b = t->trans_b;
    g->alpha = t->alpha;
    g->activation = t->act;
    g->lda = t->k + t->pad;
    g->ldb = (t->trans_b ? t->k : t->n) + t->pad;
    g->ldc = t->n + t->pad;
    const int brows = t->trans_b ? t->n : t->k;
    g->stride_a = (int64_t)t->m * g->lda + t->pad;
    g->stride_b = t->share_b ? 0 : (int64_t)brows * g->ldb + t->pad;
    g->stride_c = (int64_t)t->m * g->ldc + t->pad;
    size_t a_len = (size_t)g->stride_a * t->batch;
    size_t b_len = t->share_b ? (size_t)brows * g->ldb : (size_t)g->stride_b * t->batch;
    mb->c_len = (size_t)g->stride_c * t->batch;
    mb->a = malloc(a_len * sizeof(float));
    mb->b = malloc(b_len * sizeof(float));
    mb->c = malloc(mb->c_len * sizeof(float));
    mb->want = malloc((size_t)t->batch * t->m * t->n * sizeof(double));
    for (size_t i = 0; i < a_len; i++) mb->a[i] = frand();
    for (size_t i = 0; i < b_len; i++) mb->b[i] = frand();
    if (t->has_bias) {
        mb->bias = malloc((size_t)t->n * sizeof(float));
        for (int j = 0; j < t->n; j++) mb->bias[j] = frand();
    }
    g->a = mb->a, g->b = mb->b, g->c = mb->c, g->bias = mb->bias;

    for (int bt = 0; bt < t->batch; bt++) {
        const float *A = mb->a + (int64_t)bt * g->stride_a;
        const float *B = mb->b + (int64_t)bt * g->stride_b;
        for (int i = 0; i < t->m; i++)
            for (int j = 0; j < t->n; j++) {
                double s = 0;
                for (int p = 0; p < t->k; p++) {
                    double bv = t->trans_b ? B[(size_t)j * g->ldb + p] : B[(size_t)p * g->ldb + j];
                    s += (double)A[(size_t)i * g->lda + p] * bv;
                }
                s *= t->alpha;
                if (mb->bias) s += mb->bias[j];
                mb->want[((size_t)bt * t->m + i) * t->n + j] = act_ref(s, t->act);
            }
    }
}

/* 1 when C matches within 1e-4 relative, and nothing outside C's rows was written. */
static int mm_check(const mm_case *t, const mm_buf *mb, const char *who) {
    const tp_matmul_args *g = &mb->args;
    double worst = 0;
    int bad_pad = 0;
    for (size_t i = 0; i < mb->c_len; i++) {
        size_t bt = i / (size_t)g->stride_c, r = i % (size_t)g->stride_c;
        size_t row = r / (size_t)g->ldc, col = r % (size_t)g->ldc;
        int inside = row < (size_t)t->m && col < (size_t)t->n;
        if (!inside) {
            if (mb->c[i] != SENTINEL) bad_pad++;
            continue;
        }
        double want = mb->want[(bt * t->m + row) * t->n + col];
        double err = fabs(mb->c[i] - want) / fmax(1.0, fabs(want));
        if (!(err <= worst)) worst = isnan(err) ? INFINITY : err;
    }
    int ok = worst <= 1e-4 && bad_pad == 0;
    if (!ok)
        fprintf(stderr,
                "%s: m=%d n=%d k=%d trans_b=%d batch=%d bias=%d act=%d alpha=%g pad=%d "
                "share_b=%d: max rel err %g, %d padding cells overwritten\n",
                who, t->m, t->n, t->k, t->trans_b, t->batch, t->has_bias, (int)t->act,
                (double)t->alpha, t->pad, t->share_b, worst, bad_pad);
    return ok;
}

static void mm_free(mm_buf *mb) {
    free(mb->a);
    free(mb->b);
    free(mb->c);
    free(mb->bias);
    free(mb->want);
}

static int run_case(const tp_backend_vtable *vt, void *ctx, const mm_case *t, const char *who) {
    mm_buf mb;
    mm_setup(t, &mb);
    for (size_t i = 0; i < mb.c_len; i++) mb.c[i] = SENTINEL;
    tp_status s = vt->matmul(ctx, &mb.args);
    int ok = s == TP_OK && mm_check(t, &mb, who);
    if (s != TP_OK) fprintf(stderr, "%s: matmul returned %s\n", who, tp_strerror(s));
    mm_free(&mb);
    return ok;
}

static const mm_case cases[] = {
    /* m  n    k   tb batch bias act               alpha pad share */
    {1, 1, 1, 0, 1, 0, TP_ACT_NONE, 1.0f, 0, 0},
    {1, 16, 8, 1, 1, 1, TP_ACT_NONE, 1.0f, 0, 0},
    {1, 768, 768, 1, 1, 1, TP_ACT_GELU, 1.0f, 0, 0},
    {7, 13, 5, 0, 1, 0, TP_ACT_NONE, 1.0f, 0, 0},
    {7, 13, 5, 1, 1, 0, TP_ACT_NONE, 1.0f, 0, 0},
    {7, 13, 5, 0, 1, 1, TP_ACT_RELU, 1.0f, 3, 0},
    {7, 13, 5, 1, 1, 1, TP_ACT_TANH, 1.0f, 3, 0},
    {128, 768, 768, 1, 1, 1, TP_ACT_NONE, 1.0f, 0, 0},
    {128, 768, 768, 0, 1, 0, TP_ACT_GELU, 1.0f, 0, 0},
    {33, 64, 17, 1, 1, 1, TP_ACT_GELU, 1.0f, 0, 0},
    {33, 64, 17, 1, 1, 1, TP_ACT_GELU_TANH, 1.0f, 0, 0},
    {33, 64, 17, 1, 1, 1, TP_ACT_RELU, 1.0f, 0, 0},
    {33, 64, 17, 1, 1, 1, TP_ACT_SILU, 1.0f, 0, 0},
    {33, 64, 17, 1, 1, 1, TP_ACT_TANH, 1.0f, 0, 0},
    {9, 9, 64, 1, 1, 0, TP_ACT_NONE, 0.125f, 0, 0},
    {9, 9, 64, 0, 1, 1, TP_ACT_NONE, 0.125f, 0, 0},
    {9, 9, 64, 1, 1, 1, TP_ACT_SILU, -2.5f, 2, 0},
    {5, 6, 4, 0, 3, 0, TP_ACT_NONE, 1.0f, 0, 0},
    {5, 6, 4, 1, 3, 0, TP_ACT_NONE, 1.0f, 1, 0},
    {7, 13, 5, 1, 3, 1, TP_ACT_GELU, 1.0f, 4, 0},
    {7, 13, 5, 0, 3, 1, TP_ACT_SILU, 0.5f, 4, 0},
    {7, 13, 5, 0, 3, 1, TP_ACT_NONE, 0.5f, 0, 0},
    {7, 13, 5, 1, 3, 1, TP_ACT_NONE, 0.5f, 4, 0},
    {7, 13, 5, 1, 3, 1, TP_ACT_RELU, 0.5f, 0, 1},
    {16, 16, 64, 1, 3, 0, TP_ACT_NONE, 0.125f, 2, 0},
    {7, 13, 5, 1, 3, 1, TP_ACT_RELU, 1.0f, 1, 1},
    {11, 8, 0, 1, 2, 1, TP_ACT_GELU, 1.0f, 0, 0},
};

typedef struct thread_arg {
    const tp_backend_vtable *vt;
    void *ctx;
    int thread;
    int failures;
} thread_arg;

/* Many distinct shapes, so that a caching backend both hits and evicts while the
 * other thread uses the same entries. */
static void *hammer(void *p) {
    thread_arg *ta = p;
    for (int round = 0; round < 2; round++)
        for (int s = 0; s < 72; s++) {
            mm_case t = {1 + s % 9, 4 + (s * 7) % 29, 1 + (s * 5) % 23, s & 1, 1 + (s % 3 == 0),
                         s % 4 != 0, (tp_activation)(s % 6), (s % 5 == 0) ? 0.5f : 1.0f,
                         s % 2, 0};
            if (!run_case(ta->vt, ta->ctx, &t, "concurrent")) ta->failures++;
        }
    return NULL;
}

/* Prepared weights (bf16, int8): products of 1..4 rows run on the backend's own
 * few-row kernels, wider ones on oneDNN's matmul. Both against the double reference
 * within the compute type's tolerance, and the few-row results against the same rows
 * of an 8-row product on the same prepared weight (same A conversion; only the
 * summation order differs). Shapes with tails in n and k, both layouts of B, bias
 * and every activation. */
static void test_prepared(const tp_backend_vtable *vt, void *ctx, const char *name) {
    static const struct { int n, k; } shapes[] = {{1, 1}, {3, 70}, {100, 130}, {64, 64},
                                                  {257, 768}, {768, 3072}};
    static const tp_dtype types[] = {TP_BF16, TP_I8};
    for (size_t ti = 0; ti < 2; ti++) {
        if (!vt->supports_dtype(ctx, types[ti])) {
            printf("%s: no %s kernels on this CPU\n", name, types[ti] == TP_BF16 ? "bf16" : "int8");
            continue;
        }
        const double tol = types[ti] == TP_BF16 ? 0.02 : 0.05;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
            for (int tb = 0; tb < 2; tb++) {
                const int n = shapes[si].n, k = shapes[si].k, M = 8;
                float *w = malloc((size_t)n * k * sizeof *w), *a = malloc((size_t)M * k * sizeof *a);
                float *wide = malloc((size_t)M * n * sizeof *wide), *few = malloc((size_t)M * n * sizeof *few);
                float *bias = malloc((size_t)n * sizeof *bias);
                for (size_t i = 0; i < (size_t)n * k; i++) w[i] = frand();
                for (size_t i = 0; i < (size_t)M * k; i++) a[i] = frand() * 2.0f;
                for (int j = 0; j < n; j++) bias[j] = frand();
                tp_weight_desc wd = {sizeof wd, types[ti], w, n, k, tb ? k : n, tb};
                void *h = NULL;
                CHECK_STATUS(vt->prepare_weight(ctx, &wd, &h), TP_OK);
                for (int act = TP_ACT_NONE; h && act <= TP_ACT_TANH; act++) {
                    tp_matmul_args g = {sizeof g, M, n, k, a, k, 0, w, tb ? k : n, 0, tb, wide, n, 0,
                                        1, 1.0f, act % 2 ? bias : NULL, (tp_activation)act};
                    CHECK_STATUS(vt->matmul_prepared(ctx, &g, h), TP_OK);
                    for (int m = 1; m <= 5; m++) {
                        for (size_t i = 0; i < (size_t)M * n; i++) few[i] = SENTINEL;
                        g.m = m, g.c = few;
                        CHECK_STATUS(vt->matmul_prepared(ctx, &g, h), TP_OK);
                        g.m = M, g.c = wide;
                        double worst_ref = 0, worst_wide = 0;
                        int spilled = 0;
                        for (int r = 0; r < m; r++)
                            for (int j = 0; j < n; j++) {
                                double want = act % 2 ? bias[j] : 0;
                                for (int i = 0; i < k; i++)
                                    want += (double)a[(size_t)r * k + i] *
                                            (tb ? w[(size_t)j * k + i] : w[(size_t)i * n + j]);
                                want = act_ref(want, (tp_activation)act);
                                const double got = few[(size_t)r * n + j];
                                const double e1 = fabs(got - want) / fmax(1.0, fabs(want) + sqrt(k));
                                const double e2 = fabs(got - wide[(size_t)r * n + j]) / fmax(1.0, fabs(got));
                                worst_ref = isnan(e1) || e1 > worst_ref ? (isnan(e1) ? INFINITY : e1) : worst_ref;
                                worst_wide = isnan(e2) || e2 > worst_wide ? (isnan(e2) ? INFINITY : e2) : worst_wide;
                            }
                        for (size_t i = (size_t)m * n; i < (size_t)M * n; i++) spilled += few[i] != SENTINEL;
                        CHECK_MSG(worst_ref <= tol && worst_wide <= 1e-4 && !spilled,
                                  "%s %s n=%d k=%d trans_b=%d act=%d m=%d: %g from the reference, "
                                  "%g from the 8-row product, %d cells past m written",
                                  name, types[ti] == TP_BF16 ? "bf16" : "int8", n, k, tb, act, m,
                                  worst_ref, worst_wide, spilled);
                    }
                }
                if (h) vt->release_weight(ctx, h);
                free(w), free(a), free(wide), free(few), free(bias);
            }
    }
}

/* Prepared weights against products of many rows (oneDNN's matmul, or the backend's
 * own AMX kernel where the CPU has one: 16- and 32-row blocks, a row count that fills
 * neither, a tail of columns, rows in more than one chunk), within the compute type's
 * tolerance of the double reference, every activation, C at a stride wider than n. */
static void test_prepared_rows(const tp_backend_vtable *vt, void *ctx, const char *name) {
    static const struct { int m, n, k; } shapes[] = {{37, 100, 130}, {130, 257, 768}, {16, 64, 64}, {600, 40, 3072}};
    static const tp_dtype types[] = {TP_BF16, TP_I8, TP_F32};
    static const char *const names[] = {"bf16", "int8", "fp32 packed"};
    for (size_t ti = 0; ti < 3; ti++) {
        if (!vt->supports_dtype(ctx, types[ti])) continue;
        const double tol = types[ti] == TP_BF16 ? 0.02 : types[ti] == TP_I8 ? 0.05 : 1e-4;
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int m = shapes[si].m, n = shapes[si].n, k = shapes[si].k, ldc = n + 3;
            float *w = malloc((size_t)n * k * sizeof *w), *a = malloc((size_t)m * k * sizeof *a);
            float *c = malloc((size_t)m * ldc * sizeof *c), *bias = malloc((size_t)n * sizeof *bias);
            double *dot = malloc((size_t)m * n * sizeof *dot);
            for (size_t i = 0; i < (size_t)n * k; i++) w[i] = frand();
            for (size_t i = 0; i < (size_t)m * k; i++) a[i] = frand() * 2.0f;
            for (int j = 0; j < n; j++) bias[j] = frand();
            for (int r = 0; r < m; r++)
                for (int j = 0; j < n; j++) {
                    double s = 0;
                    for (int i = 0; i < k; i++) s += (double)a[(size_t)r * k + i] * w[(size_t)j * k + i];
                    dot[(size_t)r * n + j] = s;
                }
            tp_weight_desc wd = {sizeof wd, types[ti], w, n, k, k, 1};
            void *h = NULL;
            /* fp32: the backend packs only where its kernel wants another layout */
            const tp_status ps = vt->prepare_weight(ctx, &wd, &h);
            CHECK_MSG(ps == TP_OK || (types[ti] == TP_F32 && ps == TP_ERR_UNSUPPORTED),
                      "%s %s n=%d k=%d: prepare_weight: %s", name, names[ti], n, k, tp_strerror(ps));
            for (int act = TP_ACT_NONE; h && act <= TP_ACT_TANH; act++) {
                for (size_t i = 0; i < (size_t)m * ldc; i++) c[i] = SENTINEL;
                tp_matmul_args g = {sizeof g, m, n, k, a, k, 0, w, k, 0, 1, c, ldc, 0,
                                    1, 1.0f, act % 2 ? bias : NULL, (tp_activation)act};
                CHECK_STATUS(vt->matmul_prepared(ctx, &g, h), TP_OK);
                double worst = 0;
                int spilled = 0;
                for (int r = 0; r < m; r++) {
                    for (int j = 0; j < n; j++) {
                        const double want = act_ref(dot[(size_t)r * n + j] + (act % 2 ? bias[j] : 0),
                                                    (tp_activation)act);
                        const double e = fabs(c[(size_t)r * ldc + j] - want) / fmax(1.0, fabs(want) + sqrt(k));
                        worst = isnan(e) || e > worst ? (isnan(e) ? INFINITY : e) : worst;
                    }
                    for (int j = n; j < ldc; j++) spilled += c[(size_t)r * ldc + j] != SENTINEL;
                }
                CHECK_MSG(worst <= tol && !spilled,
                          "%s %s m=%d n=%d k=%d act=%d: %g from the reference, %d cells past n written",
                          name, names[ti], m, n, k, act, worst, spilled);
                /* row by row (the few-row kernels) the same numbers come out: the
                 * conversion of A is per row, and the sums differ only in their order */
                float *one = malloc((size_t)n * sizeof *one);
                double apart = 0;
                for (int r = 0; one && r < m; r++) {
                    tp_matmul_args g1 = g;
                    g1.m = 1, g1.a = a + (size_t)r * k, g1.c = one;
                    CHECK_STATUS(vt->matmul_prepared(ctx, &g1, h), TP_OK);
                    for (int j = 0; j < n; j++) {
                        const double e = fabs(one[j] - c[(size_t)r * ldc + j]) / fmax(1.0, fabs(one[j]));
                        apart = isnan(e) || e > apart ? (isnan(e) ? INFINITY : e) : apart;
                    }
                }
                CHECK_MSG(one && apart <= 1e-4, "%s %s m=%d n=%d k=%d act=%d: %g from the same rows one at a time",
                          name, names[ti], m, n, k, act, apart);
                free(one);
            }
            if (h) vt->release_weight(ctx, h);
            free(w), free(a), free(c), free(bias), free(dot);
        }
    }
}

/* matmul_bf16 (attention's products in a bf16 model) against A and B rounded to bf16
 * and summed in double: the shapes of a BERT head (q·kᵀ, p·v), tails in m, n and k,
 * strides with padding, alpha. A backend without the fast path on this CPU says
 * TP_ERR_UNSUPPORTED and writes nothing. */
static void test_matmul_bf16(const tp_backend_vtable *vt, void *ctx, const char *name) {
    static const mm_case bf16_cases[] = {
        {128, 128, 64, 1, 12, 0, TP_ACT_NONE, 1.0f, 0, 0},  /* q·kᵀ, 12 heads */
        {128, 64, 128, 0, 12, 0, TP_ACT_NONE, 1.0f, 0, 0},  /* p·v */
        {37, 45, 20, 1, 3, 0, TP_ACT_NONE, 0.125f, 3, 0},   /* tails, alpha, padding */
        {9, 20, 37, 0, 5, 0, TP_ACT_NONE, 1.0f, 5, 0},
        {130, 70, 66, 0, 1, 0, TP_ACT_NONE, 1.0f, 0, 0},    /* one entry, on the team */
    };
    int ran = 0, declined = 0;
    for (size_t i = 0; i < sizeof bf16_cases / sizeof bf16_cases[0]; i++) {
        const mm_case *t = &bf16_cases[i];
        mm_buf mb;
        mm_setup(t, &mb);
        for (int bt = 0; bt < t->batch; bt++)
            for (int r = 0; r < t->m; r++)
                for (int j = 0; j < t->n; j++)
                    mb.want[((size_t)bt * t->m + r) * t->n + j] = bf16_ref_dot(&mb.args, bt, r, j);
        for (size_t c = 0; c < mb.c_len; c++) mb.c[c] = SENTINEL;
        const tp_status st = vt->matmul_bf16(ctx, &mb.args);
        if (st == TP_ERR_UNSUPPORTED) {
            declined++;
            int touched = 0;
            for (size_t c = 0; c < mb.c_len; c++) touched += mb.c[c] != SENTINEL;
            CHECK_MSG(touched == 0, "%s: matmul_bf16 declined but wrote %d cells", name, touched);
        } else {
            ran++;
            CHECK_STATUS(st, TP_OK);
            CHECK(mm_check(t, &mb, name));
        }
        mm_free(&mb);
    }
    CHECK_MSG(ran == 0 || declined == 0, "%s: matmul_bf16 ran %d cases and declined %d", name,
              ran, declined);
    /* bias and activation are not its business */
    mm_buf mb;
    const mm_case biased = {16, 16, 16, 1, 1, 1, TP_ACT_NONE, 1.0f, 0, 0};
    mm_setup(&biased, &mb);
    CHECK_STATUS(vt->matmul_bf16(ctx, &mb.args), TP_ERR_UNSUPPORTED);
    mm_free(&mb);
    printf("%s: matmul_bf16 %s\n", name, ran ? "on this CPU's fast path" : "declined on this CPU");
}

static void test_backend(const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/lib/tpipe/backends/%s.so", TP_BUILD_DIR, name);
    /* Both backends are part of the build: a missing one is a failure, not a skip. */
    CHECK_MSG(access(path, F_OK) == 0, "%s not built (%s)", name, path);
    if (access(path, F_OK) != 0) return;
    void *so = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    CHECK_MSG(so != NULL, "dlopen %s: %s", path, dlerror());
    if (!so) return;
    tp_module_entry_fn entry;
    *(void **)&entry = dlsym(so, TP_MODULE_ENTRY_SYMBOL);
    CHECK(entry != NULL);
    if (!entry) return;
    const tp_module_descriptor *d = entry();
    CHECK(d != NULL && d == entry());
    CHECK(d->struct_size >= sizeof(tp_module_descriptor));
    CHECK(d->abi_version == TP_ABI_CURRENT);
    CHECK(d->kind == TP_MODULE_BACKEND);
    CHECK(strcmp(d->name, name) == 0);
    CHECK(d->version && d->version[0]);
    CHECK(d->license && strcmp(d->license, "MIT") == 0);
    CHECK(d->description && d->description[0]);
    const tp_backend_vtable *vt = d->vtable;
    CHECK(vt && vt->struct_size >= sizeof(tp_backend_vtable));
    CHECK(vt->create && vt->destroy && vt->describe && vt->matmul);

    char why[256] = "";
    void *ctx = NULL;
    tp_backend_config cfg = {sizeof cfg, 0};
    CHECK_STATUS(vt->create(&cfg, &ctx, why, sizeof why), TP_OK);
    if (!ctx) {
        fprintf(stderr, "%s: create failed: %s\n", name, why);
        return;
    }
    printf("%s: %s\n", name, vt->describe(ctx));

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(run_case(vt, ctx, &cases[i], name));
    /* a second pass reuses whatever the backend cached */
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        CHECK(run_case(vt, ctx, &cases[i], name));

    /* arguments that cannot describe a product */
    tp_matmul_args bad = {sizeof bad, 2, 2, 2, NULL, 1, 0, NULL, 2, 0, 0, NULL, 2, 0, 1, 1.0f,
                          NULL, TP_ACT_NONE};
    float a[4] = {0}, b[4] = {0}, c[4] = {0};
    bad.a = a, bad.b = b, bad.c = c;
    CHECK_STATUS(vt->matmul(ctx, &bad), TP_ERR_INVALID_ARGUMENT); /* lda < k */
    bad.lda = 2;
    bad.m = -1;
    CHECK_STATUS(vt->matmul(ctx, &bad), TP_ERR_INVALID_ARGUMENT);
    bad.m = 0;
    CHECK_STATUS(vt->matmul(ctx, &bad), TP_OK);

    thread_arg ta[2] = {{vt, ctx, 0, 0}, {vt, ctx, 1, 0}};
    pthread_t th[2];
    for (int i = 0; i < 2; i++) CHECK(pthread_create(&th[i], NULL, hammer, &ta[i]) == 0);
    for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
    CHECK(ta[0].failures == 0 && ta[1].failures == 0);
    if (vt->prepare_weight) test_prepared(vt, ctx, name);
    if (vt->prepare_weight) test_prepared_rows(vt, ctx, name);
    if (vt->struct_size >= offsetof(tp_backend_vtable, matmul_bf16) + sizeof vt->matmul_bf16 &&
        vt->matmul_bf16)
        test_matmul_bf16(vt, ctx, name);
    vt->destroy(ctx);

    /* an explicit thread count shows in describe() */
    cfg.num_threads = 1;
    CHECK_STATUS(vt->create(&cfg, &ctx, why, sizeof why), TP_OK);
    if (ctx) {
        CHECK_CONTAINS(vt->describe(ctx), "1 thread");
        CHECK(run_case(vt, ctx, &cases[7], name));
        vt->destroy(ctx);
    }
    /* the library stays loaded: OpenBLAS and oneDNN keep thread pools we cannot stop */
}

int main(void) {
    test_backend("openblas");
    test_backend("onednn");
    return CHECK_DONE();
}
