/* test_kernels.c: the reference kernels against naive double-precision
 * computations and closed forms, and the backend dispatch (fallback, struct_size,
 * failure reporting). */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "backend.h"
#include "bf16_ref.h"
#include "check.h"
#include "kernels.h"
#include "models/attention.h"

static uint32_t rng = 12345;
static float frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (float)((rng >> 8) & 0xffffff) / 8388608.0f - 1.0f;
}
static float *rand_buf(size_t n) {
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

static double act_ref(double x, tp_activation act) {
    switch (act) {
    case TP_ACT_NONE: return x;
    case TP_ACT_GELU: return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    case TP_ACT_GELU_TANH: /* 1 + tanh(y) = 2 / (1 + e^{-2y}): no rounding to 0 */
        return x / (1.0 + exp(-2.0 * sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
    case TP_ACT_RELU: return x > 0 ? x : 0;
    case TP_ACT_SILU: return x / (1.0 + exp(-x));
    case TP_ACT_TANH: return tanh(x);
    }
    return x;
}

/* Runs the ref matmul on a random problem and returns the worst error against a
 * naive double computation (relative to the row's magnitude). */
static double check_matmul(int m, int n, int k, int batch, int trans_b, float alpha, int with_bias,
                           tp_activation act, int pad) {
    const int lda = k + pad, ldb = (trans_b ? k : n) + pad, ldc = n + pad;
    const int64_t sa = (int64_t)m * lda + 3, sb = (int64_t)(trans_b ? n : k) * ldb + 5,
                  sc = (int64_t)m * ldc + 7;
    float *A = rand_buf((size_t)(sa * batch)), *B = rand_buf((size_t)(sb * batch));
    float *C = rand_buf((size_t)(sc * batch)); /* garbage in C must be overwritten */
    float *bias = with_bias ? rand_buf((size_t)n) : NULL;
    tp_matmul_args a = {.struct_size = sizeof a, .m = m, .n = n, .k = k,
                        .a = A, .lda = lda, .stride_a = sa,
                        .b = B, .ldb = ldb, .stride_b = sb, .trans_b = trans_b,
                        .c = C, .ldc = ldc, .stride_c = sc,
                        .batch = batch, .alpha = alpha, .bias = bias, .activation = act};
    tp__ref_matmul(&a);
    double worst = 0;
    for (int b = 0; b < batch; b++)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                double s = 0;
                for (int p = 0; p < k; p++) {
                    double av = A[b * sa + (int64_t)i * lda + p];
                    double bv = trans_b ? B[b * sb + (int64_t)j * ldb + p]
                                        : B[b * sb + (int64_t)p * ldb + j];
                    s += av * bv;
                }
                s = alpha * s + (bias ? bias[j] : 0.0);
                s = act_ref(s, act);
                double d = fabs(s - C[b * sc + (int64_t)i * ldc + j]);
                if (d > worst) worst = d;
            }
    free(A);
    free(B);
    free(C);
    free(bias);
    return worst;
}

static void test_matmul(void) {
    /* sizes crossing the 64-column and 128-deep panels, both B layouts */
    for (int t = 0; t <= 1; t++) {
        CHECK_NEAR(check_matmul(1, 1, 1, 1, t, 1.0f, 0, TP_ACT_NONE, 0), 0, 1e-6);
        CHECK_NEAR(check_matmul(7, 5, 3, 1, t, 1.0f, 0, TP_ACT_NONE, 0), 0, 1e-5);
        CHECK_NEAR(check_matmul(9, 130, 300, 1, t, 1.0f, 1, TP_ACT_NONE, 0), 0, 1e-4);
        CHECK_NEAR(check_matmul(33, 64, 128, 1, t, 1.0f, 1, TP_ACT_GELU, 0), 0, 1e-4);
        CHECK_NEAR(check_matmul(4, 70, 129, 3, t, 0.125f, 1, TP_ACT_NONE, 5), 0, 1e-4);
        CHECK_NEAR(check_matmul(6, 17, 16, 4, t, 0.25f, 0, TP_ACT_NONE, 11), 0, 1e-5);
    }
    const tp_activation acts[] = {TP_ACT_GELU, TP_ACT_GELU_TANH, TP_ACT_RELU, TP_ACT_SILU,
                                  TP_ACT_TANH};
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        CHECK_NEAR(check_matmul(5, 9, 20, 2, 1, 1.0f, 1, acts[i], 2), 0, 1e-5);
    /* k = 0: the product is empty, C = act(bias) */
    CHECK_NEAR(check_matmul(3, 4, 0, 1, 1, 1.0f, 1, TP_ACT_RELU, 1), 0, 0);
}

static void test_layer_norm(void) {
    const int rows = 5, cols = 37;
    float *x = rand_buf((size_t)rows * cols), *g = rand_buf(cols), *b = rand_buf(cols);
    for (int i = 0; i < rows * cols; i++) x[i] = 3.0f + 10.0f * x[i]; /* offset + scale */
    double *want = malloc(sizeof(double) * rows * cols);
    const float eps = 1e-5f;
    for (int r = 0; r < rows; r++) {
        double mean = 0, var = 0;
        for (int i = 0; i < cols; i++) mean += x[r * cols + i];
        mean /= cols;
        for (int i = 0; i < cols; i++) var += (x[r * cols + i] - mean) * (x[r * cols + i] - mean);
        var /= cols; /* biased, as torch's layer_norm */
        for (int i = 0; i < cols; i++)
            want[r * cols + i] = (x[r * cols + i] - mean) / sqrt(var + eps) * g[i] + b[i];
    }
    tp__ref_layer_norm(x, rows, cols, g, b, eps);
    double worst = 0;
    for (int i = 0; i < rows * cols; i++) worst = fmax(worst, fabs(x[i] - want[i]));
    CHECK_NEAR(worst, 0, 2e-6);

    /* a constant row: the variance is 0 and eps alone keeps it finite */
    float c[4] = {2, 2, 2, 2};
    tp__ref_layer_norm(c, 1, 4, NULL, NULL, 1e-12f);
    for (int i = 0; i < 4; i++) CHECK(c[i] == 0.0f);
    free(x);
    free(g);
    free(b);
    free(want);
}

static void test_activations(void) {
    const float xs[] = {-6.0f, -3.0f, -1.0f, -0.5f, -1e-3f, 0.0f, 1e-3f, 0.5f, 1.0f, 2.5f, 8.0f};
    const size_t n = sizeof xs / sizeof xs[0];
    const tp_activation acts[] = {TP_ACT_NONE, TP_ACT_GELU, TP_ACT_GELU_TANH, TP_ACT_RELU,
                                  TP_ACT_SILU, TP_ACT_TANH};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        float y[sizeof xs / sizeof xs[0]];
        memcpy(y, xs, sizeof y);
        tp__activate(y, n, acts[a]);
        for (size_t i = 0; i < n; i++)
            CHECK_MSG(fabs(y[i] - act_ref(xs[i], acts[a])) <= 1e-6 * (1 + fabs(xs[i])),
                      "activation %d at %g: %.9g vs %.9g", (int)acts[a], xs[i], y[i],
                      act_ref(xs[i], acts[a]));
    }
    /* closed forms: gelu(1) = Φ(1) = 0.8413447460685429 */
    float g1 = 1.0f;
    tp__activate(&g1, 1, TP_ACT_GELU);
    CHECK_NEAR(g1, 0.8413447460685429, 1e-7);
}

static void test_softmax(void) {
    float x[2][4] = {{1, 2, 3, 4}, {1000, 1000, -1000, 999}};
    tp__softmax_rows(&x[0][0], 2, 4);
    double z = exp(1) + exp(2) + exp(3) + exp(4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(x[0][i], exp(i + 1) / z, 1e-7);
    /* large logits: max subtraction keeps it finite */
    double z2 = 2 + exp(-1);
    CHECK_NEAR(x[1][0], 1 / z2, 1e-7);
    CHECK_NEAR(x[1][1], 1 / z2, 1e-7);
    CHECK(x[1][2] == 0.0f);
    CHECK_NEAR(x[1][3], exp(-1) / z2, 1e-7);
    /* a row of the additive mask value (torch's finfo.min) is uniform, not NaN */
    float masked[3] = {-3.4028235e38f, -3.4028235e38f, -3.4028235e38f};
    tp__softmax_rows(masked, 1, 3);
    for (int i = 0; i < 3; i++) CHECK_NEAR(masked[i], 1.0 / 3, 1e-7);
    /* entries that come out exactly 0 (a batch's padding keys) leave the others' bits
     * as they are, wherever the row ends: 21 values alone, then with 0-27 more of the
     * mask value (tails of every length, and whole vectors of them) */
    for (int trial = 0; trial < 16; trial++) {
        float *base = rand_buf(21), alone[21], padded[48];
        for (int i = 0; i < 21; i++) base[i] *= 8; /* spread, so that sums round */
        memcpy(alone, base, sizeof alone);
        tp__softmax_rows(alone, 1, 21);
        for (int extra = 0; extra <= 27; extra++) {
            memcpy(padded, base, sizeof alone);
            for (int i = 21; i < 21 + extra; i++) padded[i] = -3.4028235e38f;
            tp__softmax_rows(padded, 1, 21 + extra);
            CHECK_MSG(memcmp(alone, padded, sizeof alone) == 0,
                      "softmax of 21 + %d padding differs (trial %d)", extra, trial);
        }
        free(base);
    }
}

/* log-softmax over a vocabulary-sized row with a tail and -inf entries (banned
 * tokens), against double precision */
static void test_log_softmax(void) {
    enum { V = 50021 };
    float *x = malloc(2 * V * sizeof *x);
    double *want = malloc(V * sizeof *want);
    for (int i = 0; i < 2 * V; i++) x[i] = (float)((i * 7919) % 2003) / 100.0f - 10.0f;
    x[5] = x[V - 1] = -INFINITY;
    double mx = -INFINITY, sum = 0;
    for (int i = 0; i < V; i++) mx = fmax(mx, x[i]);
    for (int i = 0; i < V; i++) sum += exp((double)x[i] - mx);
    for (int i = 0; i < V; i++) want[i] = x[i] - mx - log(sum);
    tp__log_softmax_rows(x, 2, V);
    double worst = 0;
    for (int i = 0; i < V; i++)
        if (isfinite(want[i])) worst = fmax(worst, fabs(x[i] - want[i]));
    CHECK_MSG(worst < 1e-5, "log-softmax off by %.3g", worst);
    CHECK(x[5] == -INFINITY && x[V - 1] == -INFINITY);
    double total = 0; /* the second row, on its own: its probabilities sum to 1 */
    for (int i = V; i < 2 * V; i++) total += exp((double)x[i]);
    CHECK_NEAR(total, 1.0, 1e-5);
    float one[3] = {2.0f, 2.0f, 2.0f};
    tp__log_softmax_rows(one, 1, 3);
    for (int i = 0; i < 3; i++) CHECK_NEAR(one[i], -log(3.0), 1e-7);
    free(x), free(want);
}

static void test_add(void) {
    float y[3] = {1, 2, 3}, x[3] = {0.5f, -2, 10};
    tp__add(y, x, 3);
    CHECK(y[0] == 1.5f && y[1] == 0.0f && y[2] == 13.0f);
}

/* ---- dispatch */

static int fake_calls;
static tp_status fake_matmul_fail(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    (void)a;
    fake_calls++;
    return TP_ERR_NOMEM;
}
static tp_status fake_matmul_ok(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    fake_calls++;
    tp__ref_matmul(a);
    return TP_OK;
}
static tp_status fake_layer_norm(void *ctx, float *x, int rows, int cols, const float *g,
                                 const float *b, float eps) {
    (void)ctx; (void)x; (void)rows; (void)cols; (void)g; (void)b; (void)eps;
    fake_calls += 100;
    return TP_OK;
}

static void test_dispatch(void) {
    const tp_module_descriptor *d = tp__ref_backend_descriptor();
    CHECK(d && strcmp(d->name, "ref") == 0);
    CHECK(d->kind == TP_MODULE_BACKEND && d->abi_version == TP_ABI_CURRENT);
    CHECK(d->struct_size == sizeof(tp_module_descriptor));
    const tp_backend_vtable *vt = d->vtable;
    CHECK(vt && vt->struct_size == sizeof *vt && vt->matmul && vt->layer_norm && vt->create &&
          vt->destroy && vt->describe);
    void *ctx = (void *)1;
    char why[64];
    CHECK_STATUS(vt->create(NULL, &ctx, why, sizeof why), TP_OK);
    CHECK(vt->describe(ctx) && vt->describe(ctx)[0]);
    vt->destroy(ctx);

    /* tp__linear on the ref backend and with no backend at all */
    float x[2 * 3] = {1, 2, 3, 4, 5, 6};
    float w[2 * 3] = {1, 0, -1, 0.5f, 0.5f, 0.5f};
    float bias[2] = {2.25f, -10};
    float y[4];
    tp__backend ref = {.vt = vt, .ctx = NULL, .name = "ref"};
    tp_error err;
    CHECK_STATUS(tp__linear(&ref, x, 2, 3, w, bias, 2, TP_ACT_RELU, y, &err), TP_OK);
    CHECK(y[0] == 0.25f && y[1] == 0.0f && y[2] == 0.25f && y[3] == 0.0f);
    CHECK_STATUS(tp__linear(NULL, x, 2, 3, w, bias, 2, TP_ACT_NONE, y, &err), TP_OK);
    CHECK(y[1] == -7.0f && y[3] == -2.5f);

    /* a failing backend: TP_ERR_BACKEND naming it */
    tp_backend_vtable failing = {.struct_size = sizeof failing, .matmul = fake_matmul_fail};
    tp__backend fb = {.vt = &failing, .name = "flaky"};
    fake_calls = 0;
    CHECK_STATUS(tp__linear(&fb, x, 2, 3, w, NULL, 2, TP_ACT_NONE, y, &err), TP_ERR_BACKEND);
    CHECK(err.status == TP_ERR_BACKEND);
    CHECK_CONTAINS(err.message, "flaky");
    CHECK(fake_calls == 1);

    /* layer_norm NULL: ref fallback; a vtable too short for layer_norm: never read */
    tp_backend_vtable partial = {.struct_size = sizeof partial, .matmul = fake_matmul_ok};
    tp__backend pb = {.vt = &partial, .name = "partial"};
    float row[4] = {1, 2, 3, 4};
    CHECK_STATUS(tp__layer_norm(&pb, row, 1, 4, NULL, NULL, 1e-5f, &err), TP_OK);
    CHECK_NEAR(row[0], -1.5 / sqrt(1.25 + 1e-5), 1e-6);
    tp_backend_vtable old = {.struct_size = offsetof(tp_backend_vtable, layer_norm),
                             .matmul = fake_matmul_ok, .layer_norm = fake_layer_norm};
    tp__backend ob = {.vt = &old, .name = "old"};
    fake_calls = 0;
    float row2[4] = {1, 2, 3, 4};
    CHECK_STATUS(tp__layer_norm(&ob, row2, 1, 4, NULL, NULL, 1e-5f, &err), TP_OK);
    CHECK(fake_calls == 0);
    CHECK_NEAR(row2[3], 1.5 / sqrt(1.25 + 1e-5), 1e-6);
    old.struct_size = sizeof old;
    CHECK_STATUS(tp__layer_norm(&ob, row2, 1, 4, NULL, NULL, 1e-5f, &err), TP_OK);
    CHECK(fake_calls == 100);
    CHECK_STATUS(tp__linear(&ob, x, 2, 3, w, NULL, 2, TP_ACT_NONE, y, &err), TP_OK);
    CHECK(fake_calls == 101 && y[0] == -2.0f);

    /* bad arguments are refused before any backend sees them */
    tp_matmul_args bad = {.struct_size = sizeof bad, .m = 2, .n = 2, .k = 3, .a = x, .lda = 2,
                          .b = w, .ldb = 3, .trans_b = 1, .c = y, .ldc = 2, .batch = 1,
                          .alpha = 1};
    CHECK_STATUS(tp__matmul(&ref, &bad, &err), TP_ERR_INVALID_ARGUMENT);
    CHECK_CONTAINS(err.message, "lda");
}

/* The vector activations over a dense sweep against double precision, with the
 * bounds kernels_simd.h states. */
static void test_activation_sweep(void) {
    enum { N = 40001 };
    float *x = malloc(N * sizeof *x), *y = malloc(N * sizeof *y);
    const tp_activation acts[] = {TP_ACT_GELU, TP_ACT_GELU_TANH, TP_ACT_SILU};
    for (size_t a = 0; a < sizeof acts / sizeof acts[0]; a++) {
        for (int i = 0; i < N; i++) x[i] = y[i] = -20.0f + 40.0f * (float)i / (N - 1);
        tp__activate(y, N, acts[a]);
        double worst = 0;
        int bad = -1;
        for (int i = 0; i < N; i++) {
            const double want = act_ref(x[i], acts[a]), err = fabs(y[i] - want);
            /* GELU for x < 0: 4e-7·|x| absolute (x·Φ(x) falls to 0 there); the tanh
             * form for x < 0: float's rounding of y = c(x + 0.044715x³) is amplified
             * by e^{2y}, so (1 + |y|/2)·1e-6 relative */
            const double y = 0.7978845608028654 * (x[i] + 0.044715 * x[i] * x[i] * x[i]);
            const double tol = acts[a] == TP_ACT_GELU && x[i] < 0.0f ? 4e-7 * fabs(x[i])
                               : acts[a] == TP_ACT_GELU_TANH && x[i] < 0.0f
                                   ? (1.0 + fabs(y) / 2) * 1e-6 * fabs(want) + 1e-37
                                   : 1e-6 * fabs(want) + 1e-37;
            if (err > tol && bad < 0) bad = i;
            if (fabs(want) > 1e-30) worst = fmax(worst, err / fabs(want));
        }
        CHECK_MSG(bad < 0, "activation %d at %.9g: %.9g vs %.9g (worst relative %.2e)",
                  (int)acts[a], bad < 0 ? 0.0 : x[bad], bad < 0 ? 0.0 : y[bad],
                  bad < 0 ? 0.0 : act_ref(x[bad], acts[a]), worst);
    }
    /* huge inputs stay finite */
    float e[2] = {-1e30f, 1e30f};
    tp__activate(e, 2, TP_ACT_GELU);
    CHECK(e[0] == 0.0f && e[1] == 1e30f);
    float s[3] = {-1e30f, 1e30f, 100.0f};
    tp__activate(s, 3, TP_ACT_SILU);
    CHECK(s[0] == 0.0f && s[1] == 1e30f && s[2] == 100.0f);
    free(x);
    free(y);
}

/* The fused residual + LayerNorm: the same numbers as the add then the norm, on
 * any thread count. */
static void test_add_layer_norm(void) {
    const int rows = 9, cols = 77;
    float *x = rand_buf((size_t)rows * cols), *r = rand_buf((size_t)rows * cols);
    float *g = rand_buf(cols), *b = rand_buf(cols);
    float *x1 = malloc(sizeof(float) * rows * cols), *x2 = malloc(sizeof(float) * rows * cols);
    memcpy(x1, x, sizeof(float) * rows * cols);
    memcpy(x2, x, sizeof(float) * rows * cols);
    tp__add(x1, r, (size_t)rows * cols);
    tp__ref_layer_norm(x1, rows, cols, g, b, 1e-12f);
    tp__add_layer_norm(x2, r, rows, cols, g, b, 1e-12f, 3);
    CHECK(memcmp(x1, x2, sizeof(float) * rows * cols) == 0);
    free(x), free(r), free(g), free(b), free(x1), free(x2);
}

/* tp__attention (fused for tq >= 4, the step path below) against a double-precision
 * evaluation, with a key mask (trailing padding), a causal window, a bias and nkv
 * key/value heads (grouped-query attention when fewer than nh); head_major: K and V
 * handed over head by head (head_stride), as the seq2seq models keep cross-attention's;
 * 2: and the query rows apart (rows_apart, beams cross-attending together). */
/* A backend whose matmul_bf16 rounds A and B to bf16 (nearest even) and sums in double
 * (bf16_ref.h): the core's bf16 attention path (attention.h) on any CPU. Counts its
 * calls. */
static int bf16_calls;
static tp_status test_matmul_bf16(void *ctx, const tp_matmul_args *a) {
    (void)ctx;
    bf16_calls++;
    for (int e = 0; e < a->batch; e++)
        for (int i = 0; i < a->m; i++)
            for (int j = 0; j < a->n; j++)
                a->c[e * a->stride_c + (int64_t)i * a->ldc + j] = (float)bf16_ref_dot(a, e, i, j);
    return TP_OK;
}
static const tp_backend_vtable bf16_vt = {.struct_size = sizeof bf16_vt,
                                          .matmul_bf16 = test_matmul_bf16};

/* bf16: the bf16 path (a.bf16) on the backend above, checked that it ran. */
static double attention_error_bf16(int nh, int nkv, int d, int tq, int tk, int masked_tail,
                                   int causal_past, int with_bias, int head_major, int bf16) {
    const int ld = nh * d + 3; /* heads side by side, rows padded */
    float *q = rand_buf((size_t)tq * ld), *k = rand_buf((size_t)tk * ld);
    float *v = rand_buf((size_t)tk * ld), *out = calloc((size_t)tq * ld, sizeof(float));
    float *mask = calloc((size_t)tk, sizeof(float));
    float *bias = with_bias ? rand_buf((size_t)nh * tq * tk) : NULL;
    for (int j = tk - masked_tail; j < tk; j++) mask[j] = -3.4028235e38f;
    if (tk > 2) mask[1] = -3.4028235e38f; /* one hidden key in the middle */
    tp__attn_args a = {
        .n_heads = nh, .kv_heads = nkv, .head_dim = d, .tq = tq, .tk = tk, .q = q, .ldq = ld,
        .k = k, .ldk = ld, .v = v, .ldv = ld, .key_mask = mask, .causal_past = causal_past,
        .scale = 1.0f / sqrtf((float)d), .out = out, .ldo = ld, .bias = bias, .bf16 = bf16,
    };
    tp_error err;
    tp__backend ref = {.vt = tp__ref_backend_descriptor()->vtable, .name = "ref"};
    if (bf16) ref = (tp__backend){.vt = &bf16_vt, .name = "bf16-test"};
    const int g = nkv > 0 ? nh / nkv : 1; /* query heads per key/value head */
    const int kvh = nkv > 0 ? nkv : nh;
    float *kh = NULL, *vh = NULL;
    if (head_major) {
        kh = malloc(sizeof(float) * kvh * tk * d), vh = malloc(sizeof(float) * kvh * tk * d);
        for (int h = 0; h < kvh; h++)
            for (int j = 0; j < tk; j++)
                for (int c = 0; c < d; c++) {
                    kh[((size_t)h * tk + j) * d + c] = k[j * ld + h * d + c];
                    vh[((size_t)h * tk + j) * d + c] = v[j * ld + h * d + c];
                }
        a.k = kh, a.v = vh, a.ldk = a.ldv = d, a.head_stride = (size_t)tk * d;
        a.rows_apart = head_major == 2;
    }
    const int calls = bf16_calls;
    CHECK_STATUS(tp__attention(&ref, &a, &err), TP_OK);
    if (bf16) /* q·kᵀ and p·v where the path applies, else the fp32 kernels */
        CHECK(bf16_calls - calls == (tq >= 4 && head_major != 2 && (nkv == 0 || nkv == nh) ? 2 : 0));
    double worst = 0;
    double *p = malloc(sizeof(double) * tk);
    for (int h = 0; h < nh; h++)
        for (int i = 0; i < tq; i++) {
            double max = -INFINITY, sum = 0;
            for (int j = 0; j < tk; j++) {
                double s = 0;
                for (int c = 0; c < d; c++)
                    s += (double)q[i * ld + h * d + c] * k[j * ld + h / g * d + c];
                s *= a.scale;
                if (bias) s += bias[((size_t)h * tq + i) * tk + j];
                const int last = causal_past >= 0 ? causal_past + i : tk - 1;
                p[j] = j > last ? -3.4028235e38 : s + mask[j];
                max = fmax(max, p[j]);
            }
            for (int j = 0; j < tk; j++) sum += p[j] = exp(p[j] - max);
            for (int c = 0; c < d; c++) {
                double o = 0;
                for (int j = 0; j < tk; j++) o += p[j] / sum * v[j * ld + h / g * d + c];
                worst = fmax(worst, fabs(o - out[i * ld + h * d + c]));
            }
        }
    free(q), free(k), free(v), free(out), free(mask), free(bias), free(p), free(kh), free(vh);
    return worst;
}

static double attention_error_as(int nh, int nkv, int d, int tq, int tk, int masked_tail,
                                 int causal_past, int with_bias, int head_major) {
    return attention_error_bf16(nh, nkv, d, tq, tk, masked_tail, causal_past, with_bias,
                                head_major, 0);
}

static double attention_error(int nh, int nkv, int d, int tq, int tk, int masked_tail,
                              int causal_past, int with_bias) {
    return attention_error_as(nh, nkv, d, tq, tk, masked_tail, causal_past, with_bias, 0);
}

/* tp__heads_major: [S, NH·D] -> [NH, S, D] */
static void test_heads_major(void) {
    enum { S = 5, NH = 3, D = 4 };
    float x[S * NH * D], out[S * NH * D];
    for (int i = 0; i < S * NH * D; i++) x[i] = (float)i;
    tp__heads_major(x, S, NH, D, out);
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < S; t++)
            for (int c = 0; c < D; c++)
                CHECK(out[(h * S + t) * D + c] == x[t * NH * D + h * D + c]);
    const int src[] = {0, 0, 0, 2, 2, 1};
    CHECK(tp__source_run(src, 0, 6) == 3);
    CHECK(tp__source_run(src, 3, 6) == 5);
    CHECK(tp__source_run(src, 5, 6) == 6);
    CHECK(tp__source_run(NULL, 2, 6) == 3);
}

static void test_attention(void) {
    CHECK_NEAR(attention_error(3, 0, 20, 11, 37, 5, -1, 0), 0, 2e-6);  /* fused, d tail */
    CHECK_NEAR(attention_error(2, 0, 64, 9, 40, 0, -1, 1), 0, 2e-6);   /* fused, bias (T5) */
    CHECK_NEAR(attention_error(2, 0, 32, 6, 10, 0, 4, 0), 0, 2e-6);    /* fused, causal */
    CHECK_NEAR(attention_error(6, 2, 32, 7, 12, 0, 5, 0), 0, 2e-6);    /* fused, grouped */
    CHECK_NEAR(attention_error(2, 0, 32, 20, 40, 3, 20, 1), 0, 2e-6);  /* fused, causal edge inside a vector of keys */
    CHECK_NEAR(attention_error(1, 0, 8, 5, 5, 5, -1, 0), 0, 2e-6);     /* every key hidden */
    CHECK_NEAR(attention_error(4, 0, 16, 1, 13, 2, 12, 0), 0, 2e-6);   /* step */
    CHECK_NEAR(attention_error(3, 0, 20, 1, 9, 0, 8, 0), 0, 2e-6);     /* step, d tail */
    CHECK_NEAR(attention_error(2, 0, 88, 3, 30, 0, 27, 1), 0, 2e-6);   /* step, 3 rows, bias */
    CHECK_NEAR(attention_error(15, 5, 64, 1, 300, 0, 299, 0), 0, 2e-6); /* step, grouped */
    CHECK_NEAR(attention_error(16, 0, 64, 2, 200, 7, -1, 0), 0, 2e-6); /* step, padded keys */
    CHECK_NEAR(attention_error(2, 0, 8, 1, 6, 6, -1, 0), 0, 2e-6);     /* step, all hidden */
    /* head-major K/V (a source's cross-attention, beams' queries together) */
    CHECK_NEAR(attention_error_as(16, 0, 64, 4, 200, 7, -1, 0, 1), 0, 2e-6); /* fused */
    CHECK_NEAR(attention_error_as(16, 0, 64, 4, 256, 9, -1, 0, 2), 0, 2e-6); /* 4 beams apart */
    CHECK_NEAR(attention_error_as(3, 0, 20, 7, 37, 5, -1, 1, 2), 0, 2e-6);   /* 7 apart, bias */
    CHECK_NEAR(attention_error_as(3, 0, 20, 3, 37, 5, -1, 0, 1), 0, 2e-6);   /* step, d tail */
    CHECK_NEAR(attention_error_as(6, 2, 32, 1, 12, 0, 5, 0, 1), 0, 2e-6);    /* step, grouped */
    /* bf16 (a bf16 model on a backend with matmul_bf16): operands rounded to 8 bits, so
     * within 2e-2 of the fp32 evaluation; the path declines grouped heads, rows apart
     * and fewer than 4 query rows (the fp32 kernels then run, to 2e-6) */
    CHECK_NEAR(attention_error_bf16(12, 0, 64, 128, 128, 9, -1, 0, 0, 1), 0, 2e-2); /* encoder */
    CHECK_NEAR(attention_error_bf16(3, 0, 20, 11, 37, 5, -1, 0, 0, 1), 0, 2e-2);    /* tails */
    CHECK_NEAR(attention_error_bf16(2, 0, 64, 9, 40, 0, -1, 1, 0, 1), 0, 2e-2);     /* bias */
    CHECK_NEAR(attention_error_bf16(2, 0, 32, 20, 40, 3, 20, 1, 0, 1), 0, 2e-2);    /* causal */
    CHECK_NEAR(attention_error_bf16(16, 0, 64, 4, 200, 7, -1, 0, 1, 1), 0, 2e-2);   /* head-major */
    CHECK_NEAR(attention_error_bf16(1, 0, 8, 5, 5, 5, -1, 0, 0, 1), 0, 2e-2);       /* all hidden */
    CHECK_NEAR(attention_error_bf16(6, 2, 32, 7, 12, 0, 5, 0, 0, 1), 0, 2e-6);      /* grouped */
    CHECK_NEAR(attention_error_bf16(16, 0, 64, 4, 256, 9, -1, 0, 2, 1), 0, 2e-6);   /* apart */
    CHECK_NEAR(attention_error_bf16(4, 0, 16, 1, 13, 2, 12, 0, 0, 1), 0, 2e-6);     /* step */
}

int main(void) {
    test_activation_sweep();
    test_add_layer_norm();
    test_attention();
    test_heads_major();
    test_matmul();
    test_layer_norm();
    test_activations();
    test_softmax();
    test_log_softmax();
    test_add();
    test_dispatch();
    return CHECK_DONE();
}
