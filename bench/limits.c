/* limits.c: tpipe-limits, the machine's own limits for the figures in
 * docs/benchmarks.md: sgemm GFLOP/s of each compute backend (large squares and the
 * encoder's shapes) against the cores' theoretical fp32 peak, and the memory read
 * bandwidth against the bytes one decoding step of GPT-2 reads; then, per compute type a
 * backend has, the GEMM rate on the encoder's shapes and the rate at which products
 * of one and four rows (a decoding step, four beams) stream their weights.
 *
 *   tpipe-limits [--threads N] [--backend NAME]... [--backend-dir DIR] [--mb N]
 *                [--weights-bytes N] [--quick]
 *
 * Backends are loaded from their modules directly (the SDK's descriptor and vtable),
 * as the runtime loads them, from DIR (default: ../lib/tpipe/backends next to this
 * executable). Run it pinned, e.g. `taskset -c 0,1 tpipe-limits --threads 2`.
 *
 * The peak is an estimate, printed with its assumptions: fp32 FMA lanes per cycle of
 * the widest vector unit cpuid reports (AVX-512: 2 units of 16 lanes, AVX2: 2 of 8)
 * × 2 flops × the clock /proc/cpuinfo reports (often the base clock under a
 * hypervisor; turbo can exceed it, heavy AVX-512 lowers it) × threads.
 * The bandwidth is a streaming sum over a buffer much larger than the last-level
 * cache, split over the threads. Single-threaded apart from the timed work. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tpipe_backend.h"
#include "tpipe_module.h"
#include "../core/kernels_simd.h"

/* GPT-2 small (124,439,808 parameters) in fp32: every weight is read once per step
 * (the tied embedding as the LM head) */
#define GPT2_FP32_BYTES (124439808.0 * 4.0)

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------- peak */

static double cpu_mhz(void) {
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return 0.0;
    char line[512];
    double mhz = 0.0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "cpu MHz", 7) == 0) {
            const char *colon = strchr(line, ':');
            if (colon) mhz = atof(colon + 1);
            break;
        }
    fclose(f);
    return mhz;
}

static const char *vector_unit(int *lanes, int *units) {
    *lanes = 4, *units = 2;
    const char *name = "SSE (4 fp32 lanes)";
#if defined(__x86_64__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) {
        *lanes = 16;
        name = "AVX-512 (16 fp32 lanes)";
    } else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        *lanes = 8;
        name = "AVX2+FMA (8 fp32 lanes)";
    }
#endif
    return name;
}

/* ---------------------------------------------------------------- bandwidth */

typedef struct bw_job {
    const float *p;
    size_t n;
    float sum;
} bw_job;

TP_SIMD_INLINE float stream_sum_body(const float *p, size_t n) {
    tp_v16f a0 = tp_v_set1(0.0f), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 += tp_v_load(p + i);
        a1 += tp_v_load(p + i + 16);
        a2 += tp_v_load(p + i + 32);
        a3 += tp_v_load(p + i + 48);
    }
    float s = tp_v_hsum(a0 + a1 + a2 + a3);
    for (; i < n; i++) s += p[i];
    return s;
}
TP_SIMD_DISPATCH(float, stream_sum, (const float *p, size_t n), (p, n))

static void *bw_thread(void *arg) {
    bw_job *j = arg;
    j->sum = stream_sum(j->p, j->n);
    return NULL;
}

/* GB/s of `threads` threads each summing its slice of buf[n]; median of `reps`. */
static double read_bandwidth(const float *buf, size_t n, int threads, int reps, float *sink) {
    double t[16];
    if (reps > 16) reps = 16;
    for (int r = 0; r < reps; r++) {
        pthread_t th[64];
        bw_job jobs[64];
        const double t0 = now_s();
        for (int i = 0; i < threads; i++) {
            jobs[i].p = buf + n * (size_t)i / (size_t)threads;
            jobs[i].n = n * (size_t)(i + 1) / (size_t)threads - n * (size_t)i / (size_t)threads;
            if (i > 0) pthread_create(&th[i], NULL, bw_thread, &jobs[i]);
        }
        bw_thread(&jobs[0]);
        for (int i = 1; i < threads; i++) pthread_join(th[i], NULL);
        t[r] = now_s() - t0;
        for (int i = 0; i < threads; i++) *sink += jobs[i].sum;
    }
    qsort(t, (size_t)reps, sizeof t[0], cmp_double);
    return (double)n * sizeof(float) / t[reps / 2] / 1e9;
}

/* ---------------------------------------------------------------- sgemm */

typedef struct backend {
    const char *name;
    const tp_backend_vtable *vt;
    void *ctx;
} backend;

static int open_backend(const char *dir, const char *name, int threads, backend *out) {
    char path[PATH_MAX + 64];
    if ((size_t)snprintf(path, sizeof path, "%s/%s.so", dir, name) >= sizeof path) {
        printf("%-9s not loaded: path too long\n", name);
        return 0;
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        printf("%-9s not loaded: %s\n", name, dlerror());
        return 0;
    }
    const tp_module_descriptor *(*entry)(void);
    *(void **)&entry = dlsym(h, TP_MODULE_ENTRY_SYMBOL);
    const tp_module_descriptor *d = entry ? entry() : NULL;
    if (!d || d->kind != TP_MODULE_BACKEND || !d->vtable) {
        printf("%-9s not loaded: %s is not a backend module\n", name, path);
        return 0;
    }
    out->name = name;
    out->vt = d->vtable;
    tp_backend_config cfg = {.struct_size = sizeof cfg, .num_threads = threads};
    char why[256] = "";
    if (out->vt->create(&cfg, &out->ctx, why, sizeof why) != TP_OK) {
        printf("%-9s not loaded: %s\n", name, why);
        return 0;
    }
    printf("%-9s %s\n", name, out->vt->describe ? out->vt->describe(out->ctx) : "");
    return 1;
}

/* Median seconds of C[m×n] = A[m×k]·op(W), W [n×k] (trans_b) or [k×n], in `dtype`:
 * fp32 through matmul on the weight in place, bf16/int8 through a weight prepared once
 * (matmul_prepared), as the models run them. With `stream`, the runs rotate over copies of W that together
 * exceed any last-level cache (1 GB), so that W comes from memory as in a decoding
 * step, which reads every layer once. 0 where the backend does not compute the type. */
enum { MAX_COPIES = 64 };
static double product_time(const backend *be, tp_dtype dtype, int m, int n, int k, int trans_b,
                           int stream, double budget) {
    const double bytes = (double)n * k * (dtype == TP_F32 ? 4 : dtype == TP_BF16 ? 2 : 1);
    int copies = stream ? (int)(1e9 / bytes) + 1 : 1;
    if (copies > MAX_COPIES) copies = MAX_COPIES;
    const int prepared = dtype != TP_F32;
    float *a = malloc((size_t)m * k * sizeof(float));
    float *c = malloc((size_t)m * n * sizeof(float));
    float *w[MAX_COPIES] = {0};
    void *handle[MAX_COPIES] = {0};
    double t[64];
    int runs = 0, ready = a && c;
    for (int i = 0; ready && i < (prepared ? 1 : copies); i++) {
        if (!(w[i] = malloc((size_t)n * k * sizeof(float)))) ready = 0;
        for (size_t e = 0; ready && e < (size_t)n * k; e++)
            w[i][e] = (float)((e * 5 + (size_t)i) % 11) * 0.01f - 0.05f;
    }
    if (ready) for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((i * 7) % 13) * 0.01f - 0.06f;
    for (int i = 0; ready && prepared && i < copies; i++) {
        const tp_weight_desc d = {.struct_size = sizeof d, .dtype = dtype, .data = w[0],
                                  .n = n, .k = k, .ld = trans_b ? k : n, .trans_b = trans_b};
        ready = be->vt->prepare_weight && be->vt->prepare_weight(be->ctx, &d, &handle[i]) == TP_OK;
    }
    if (ready) {
        const double start = now_s();
        for (int it = 0; runs < 64 && (runs < 3 || now_s() - start < budget); it++) {
            const int i = it % copies;
            tp_matmul_args args = {
                .struct_size = sizeof args, .m = m, .n = n, .k = k, .a = a, .lda = k,
                .b = prepared ? w[0] : w[i], .ldb = trans_b ? k : n, .trans_b = trans_b, .c = c, .ldc = n,
                .batch = 1, .alpha = 1.0f,
            };
            const double t0 = now_s();
            const tp_status st = prepared ? be->vt->matmul_prepared(be->ctx, &args, handle[i])
                                          : be->vt->matmul(be->ctx, &args);
            if (st != TP_OK) break;
            if (it >= copies) t[runs++] = now_s() - t0; /* the first round: JIT, threads, pages */
        }
    }
    for (int i = 0; i < copies; i++) {
        if (handle[i] && be->vt->release_weight) be->vt->release_weight(be->ctx, handle[i]);
        free(w[i]);
    }
    free(a), free(c);
    if (!runs) return 0.0;
    qsort(t, (size_t)runs, sizeof t[0], cmp_double);
    return t[runs / 2];
}

static void exe_dir(char *out, size_t cap) {
    char self[PATH_MAX - 32];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0) {
        snprintf(out, cap, "lib/tpipe/backends");
        return;
    }
    self[len] = '\0';
    char *slash = strrchr(self, '/');
    if (slash) *slash = '\0';
    snprintf(out, cap, "%s/../lib/tpipe/backends", self);
}

int main(int argc, char **argv) {
    int threads = 2, quick = 0, nbe = 0;
    size_t mb = 0;
    double weights = GPT2_FP32_BYTES;
    const char *names[8];
    char dir[PATH_MAX];
    exe_dir(dir, sizeof dir);
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--backend") && v && nbe < 8) names[nbe++] = argv[++i];
        else if (!strcmp(argv[i], "--backend-dir") && v) snprintf(dir, sizeof dir, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--mb") && v) mb = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--weights-bytes") && v) weights = atof(argv[++i]);
        else if (!strcmp(argv[i], "--quick")) quick = 1;
        else {
            fprintf(stderr,
                    "usage: tpipe-limits [--threads N] [--backend NAME]... [--backend-dir DIR]\n"
                    "                    [--mb N] [--weights-bytes N] [--quick]\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "tpipe-limits: --threads wants 1..64\n");
        return 2;
    }
    if (!nbe) names[nbe++] = "openblas", names[nbe++] = "onednn";
    if (!mb) mb = quick ? 64 : 2048;

    int lanes, units;
    const char *unit = vector_unit(&lanes, &units);
    const double mhz = cpu_mhz();
    const double peak = (double)units * lanes * 2.0 * mhz * 1e6 * threads / 1e9;
    printf("threads   %d\n", threads);
    printf("peak      %.0f GFLOP/s fp32 = %d threads x %d FMA units x %s x 2 flops x %.0f MHz\n"
           "          (assumed: 2 FMA units per core, the clock /proc/cpuinfo reports)\n",
           peak, threads, units, unit, mhz);

    /* bandwidth */
    const size_t n = mb * 1024 * 1024 / sizeof(float);
    float *buf = malloc(n * sizeof(float));
    if (!buf) {
        fprintf(stderr, "tpipe-limits: cannot allocate %zu MB\n", mb);
        return 1;
    }
    for (size_t i = 0; i < n; i++) buf[i] = 1.0f; /* touch every page before timing */
    float sink = 0.0f;
    const double bw = read_bandwidth(buf, n, threads, quick ? 3 : 7, &sink);
    free(buf);
    printf("read      %.1f GB/s (streaming sum over %zu MB, %d threads; checksum %g)\n", bw, mb,
           threads, (double)sink);
    printf("decode    GPT-2 fp32 reads %.1f MB per step: at most %.1f steps/s at this "
           "bandwidth\n",
           weights / 1e6, bw * 1e9 / weights);

    /* sgemm */
    static const struct { int m, n, k, trans_b; const char *what; } shapes[] = {
        {2048, 2048, 2048, 0, "square"},
        {4096, 4096, 4096, 0, "square"},
        {128, 768, 768, 1, "encoder b1 q/k/v/o, W^T"},
        {128, 3072, 768, 1, "encoder b1 ffn1, W^T"},
        {128, 768, 3072, 1, "encoder b1 ffn2, W^T"},
        {2048, 768, 768, 1, "encoder b16 q/k/v/o, W^T"},
        {2048, 3072, 768, 1, "encoder b16 ffn1, W^T"},
        {2048, 768, 3072, 1, "encoder b16 ffn2, W^T"},
    };
    for (int b = 0; b < nbe; b++) {
        backend be;
        if (!open_backend(dir, names[b], threads, &be)) continue;
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
            int m = shapes[s].m, nn = shapes[s].n, k = shapes[s].k;
            if (quick) m = m > 256 ? 256 : m, nn = nn > 256 ? 256 : nn, k = k > 256 ? 256 : k;
            const double t =
                product_time(&be, TP_F32, m, nn, k, shapes[s].trans_b, 0, quick ? 0.05 : 1.0);
            const double r = t > 0 ? 2.0 * m * nn * k / t / 1e9 : 0.0;
            printf("  %-8s %4dx%4dx%4d %-26s %7.1f GFLOP/s  %5.1f%% of peak\n", names[b], m,
                   nn, k, shapes[s].what, r, peak > 0 ? 100.0 * r / peak : 0.0);
        }
        /* the compute types' GEMM rate (AMX where oneDNN uses it) on the encoder's shapes,
         * and the decoding products' weight stream against the read bandwidth */
        static const struct { tp_dtype dtype; const char *name; double bytes; } types[] = {
            {TP_F32, "fp32", 4.0}, {TP_BF16, "bf16", 2.0}, {TP_I8, "int8", 1.0}};
        static const struct { int m, n, k; const char *what; } gemms[] = {
            {128, 768, 768, "encoder b1 q/k/v/o, W^T"},
            {128, 3072, 768, "encoder b1 ffn1, W^T"},
            {128, 768, 3072, "encoder b1 ffn2, W^T"},
            {2048, 3072, 768, "encoder b16 ffn1, W^T"},
            {2048, 768, 3072, "encoder b16 ffn2, W^T"},
        };
        static const struct { int n, k, trans_b; const char *what; } streams[] = {
            {3072, 768, 0, "gpt2 ffn1 (k x n)"}, {768, 3072, 0, "gpt2 ffn2 (k x n)"},
            {50257, 768, 1, "gpt2 lm head"}, {2560, 960, 1, "smollm2 gate"},
            {960, 2560, 1, "smollm2 down"}};
        for (size_t d = 1; d < sizeof types / sizeof types[0]; d++)
            for (size_t s = 0; s < sizeof gemms / sizeof gemms[0]; s++) {
                int m = gemms[s].m, nn = gemms[s].n, k = gemms[s].k;
                if (quick) m = m > 256 ? 256 : m, nn = nn > 256 ? 256 : nn, k = k > 256 ? 256 : k;
                const double t = product_time(&be, types[d].dtype, m, nn, k, 1, 0, quick ? 0.05 : 1.0);
                if (t > 0)
                    printf("  %-8s %4dx%4dx%4d %-26s %7.1f GFLOP/s  %s\n", names[b], m, nn, k,
                           gemms[s].what, 2.0 * m * nn * k / t / 1e9, types[d].name);
            }
        for (size_t d = 0; d < sizeof types / sizeof types[0]; d++)
            for (size_t s = 0; s < sizeof streams / sizeof streams[0]; s++)
                for (int m = 1; m <= 4; m += 3) {
                    int nn = streams[s].n, k = streams[s].k;
                    if (quick) nn = nn > 1024 ? 1024 : nn;
                    const double t =
                        product_time(&be, types[d].dtype, m, nn, k, streams[s].trans_b, !quick,
                                     quick ? 0.05 : 1.0);
                    const double gbs = (double)nn * k * types[d].bytes / t / 1e9;
                    if (t > 0)
                        printf("  %-8s %d row%s x %5dx%4d %-18s %s %6.1f GB/s of weights  %5.1f%% "
                               "of read\n",
                               names[b], m, m > 1 ? "s" : " ", nn, k, streams[s].what,
                               types[d].name, gbs, bw > 0 ? 100.0 * gbs / bw : 0.0);
                }
        if (be.vt->destroy) be.vt->destroy(be.ctx);
    }
    return 0;
}
