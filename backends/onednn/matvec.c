/* matvec.c: see matvec.h. The kernels are compiled for AVX-512 with BF16 / VNNI and
 * chosen at run time; the rest of the library is built for the baseline ISA. */
#include "matvec.h"

#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../core/kernels_simd.h"

#include "tpipe_backend.h"

int mv_bf16_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512bf16");
}

int mv_int8_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vnni");
}

enum { MV_AHEAD = 4096 }; /* bytes: how far ahead of the loads the kernels prefetch */

/* As oneDNN's eltwise post-ops compute them (gelu_erf, gelu_tanh, relu, swish, tanh),
 * on kernels_simd.h's vector math: written per element with libm, the activations of
 * a decode step's products took 5% of a beam search's time. */
TP_SIMD_AVX512 static tp_v16f activate16(tp_v16f v, int act) {
    switch (act) {
    case TP_ACT_GELU: return tp_v_gelu(v);
    case TP_ACT_GELU_TANH: return tp_v_gelu_tanh(v);
    case TP_ACT_SILU: return tp_v_silu(v);
    case TP_ACT_RELU: return tp_v_select(v > tp_v_set1(0.0f), v, tp_v_set1(0.0f));
    case TP_ACT_TANH: {
        float t[16];
        tp_v_store(t, v);
        for (int l = 0; l < 16; l++) t[l] = tanhf(t[l]);
        return tp_v_load(t);
    }
    default: return v;
    }
}

TP_SIMD_AVX512 void mv_epilogue(const float *sum, int cols, const float *bias, int act, float *c) {
    for (int j = 0; j < cols; j += 16) {
        const __mmask16 in = cols - j >= 16 ? 0xffff : (__mmask16)((1u << (cols - j)) - 1);
        tp_v16f v = (tp_v16f)_mm512_maskz_loadu_ps(in, sum + j);
        if (bias) v += (tp_v16f)_mm512_maskz_loadu_ps(in, bias + j);
        if (act) v = activate16(v, act);
        _mm512_mask_storeu_ps(c + j, in, (__m512)v);
    }
}

/* Writes one strip's 64 sums of row r (columns n0..), biased, activated. */
static void store_strip(const float *sum, int r, int n0, int n, const mv_out *o) {
    const int end = n - n0 < 64 ? n - n0 : 64;
    mv_epilogue(sum, end, o->bias ? o->bias + n0 : NULL, o->activation,
                o->c + (size_t)r * o->ldc + n0);
}

/* One strip for rows [0, M): M is a constant in each instantiation, so the row loop
 * unrolls and every accumulator stays in a register. */
#define MV_BF16_STRIP(M)                                                                   \
    static void bf16_strip_##M(const uint16_t *ws, int kpairs, const uint16_t *x, int kpad, \
                               float (*sum)[64]) {                                         \
        __m512 acc[M][4];                                                                  \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            _Pragma("GCC unroll 4")                                                        \
            for (int j = 0; j < 4; j++) acc[r][j] = _mm512_setzero_ps();                   \
        for (int p = 0; p < kpairs; p++) {                                                 \
            const uint16_t *b = ws + (size_t)p * 128;                                      \
            _Pragma("GCC unroll 4")                                                        \
            for (int l = 0; l < 4; l++) /* 4 KB ahead: the stream outruns the prefetchers */ \
                _mm_prefetch((const char *)(b + MV_AHEAD / 2 + 32 * l), _MM_HINT_T0);        \
            const __m512bh w0 = (__m512bh)_mm512_loadu_si512(b);                           \
            const __m512bh w1 = (__m512bh)_mm512_loadu_si512(b + 32);                      \
            const __m512bh w2 = (__m512bh)_mm512_loadu_si512(b + 64);                      \
            const __m512bh w3 = (__m512bh)_mm512_loadu_si512(b + 96);                      \
            _Pragma("GCC unroll 4")                                                        \
            for (int r = 0; r < M; r++) {                                                  \
                uint32_t pair;                                                             \
                __builtin_memcpy(&pair, x + (size_t)r * kpad + 2 * p, 4);                  \
                const __m512bh xb = (__m512bh)_mm512_set1_epi32((int)pair);                \
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], w0, xb);                           \
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], w1, xb);                           \
                acc[r][2] = _mm512_dpbf16_ps(acc[r][2], w2, xb);                           \
                acc[r][3] = _mm512_dpbf16_ps(acc[r][3], w3, xb);                           \
            }                                                                              \
        }                                                                                  \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            _Pragma("GCC unroll 4")                                                        \
            for (int j = 0; j < 4; j++) _mm512_storeu_ps(sum[r] + 16 * j, acc[r][j]);      \
    }

/* A block stores 16 pairs × 64 columns; the lanes of w_j hold columns 16j..16j+15,
 * pair-interleaved, which is the operand layout vdpbf16ps multiplies. */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
MV_BF16_STRIP(1)
MV_BF16_STRIP(2)
MV_BF16_STRIP(3)
MV_BF16_STRIP(4)
#pragma GCC pop_options

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
void mv_bf16(const uint16_t *w, int n, int kpad, const uint16_t *x, int m, const mv_out *o,
             int threads) {
    const int strips = (n + 63) / 64, kpairs = kpad / 2;
    const size_t strip_len = (size_t)kpad * 64;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (strips > 1)
    for (int s = 0; s < strips; s++) {
        float sum[MV_MAX_ROWS][64];
        const uint16_t *ws = w + (size_t)s * strip_len;
        switch (m) {
        case 1: bf16_strip_1(ws, kpairs, x, kpad, sum); break;
        case 2: bf16_strip_2(ws, kpairs, x, kpad, sum); break;
        case 3: bf16_strip_3(ws, kpairs, x, kpad, sum); break;
        default: bf16_strip_4(ws, kpairs, x, kpad, sum); break;
        }
        for (int r = 0; r < m; r++) store_strip(sum[r], r, s * 64, n, o);
    }
}

/* Dot products of the rows of x with four weight rows (outputs j..j+3) at once: each
 * 64-byte chunk of x is loaded once per four outputs; rows j+4.. are prefetched at
 * the same offset, which keeps the stream ahead by four rows. */
#define MV_INT8_QUAD(M)                                                                    \
    static void int8_quad_##M(const int8_t *w, int k, int kpad, int nq, const uint8_t *x,  \
                              int32_t (*sum)[4]) {                                         \
        __m512i acc[M][4];                                                                 \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            _Pragma("GCC unroll 4")                                                        \
            for (int q = 0; q < 4; q++) acc[r][q] = _mm512_setzero_si512();                \
        for (int i = 0; i < kpad; i += 64) {                                               \
            const __mmask64 in = k - i >= 64 ? ~0ull : (1ull << (k - i)) - 1;               \
            __m512i wq[4];                                                                 \
            _Pragma("GCC unroll 4")                                                        \
            for (int q = 0; q < 4; q++) {                                                  \
                const int8_t *row = w + (size_t)(q < nq ? q : 0) * k + i;                   \
                _mm_prefetch((const char *)(row + 4 * (size_t)k), _MM_HINT_T0);            \
                wq[q] = q < nq ? _mm512_maskz_loadu_epi8(in, row) : _mm512_setzero_si512(); \
            }                                                                              \
            _Pragma("GCC unroll 4")                                                        \
            for (int r = 0; r < M; r++) {                                                  \
                const __m512i xv = _mm512_loadu_si512(x + (size_t)r * kpad + i);           \
                _Pragma("GCC unroll 4")                                                            \
                for (int q = 0; q < 4; q++) acc[r][q] = _mm512_dpbusd_epi32(acc[r][q], xv, wq[q]); \
            }                                                                              \
        }                                                                                  \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            _Pragma("GCC unroll 4")                                                        \
            for (int q = 0; q < 4; q++) sum[r][q] = _mm512_reduce_add_epi32(acc[r][q]);    \
    }

/* vpdpbusd multiplies unsigned by signed bytes: x arrives as q + 128, and the +128
 * comes back out as 128 · colsum (exact: everything before the scales is integer). */
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni")
MV_INT8_QUAD(1)
MV_INT8_QUAD(2)
MV_INT8_QUAD(3)
MV_INT8_QUAD(4)
#pragma GCC pop_options

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
void mv_int8(const int8_t *w, const float *wscale, const int32_t *colsum, int n, int k,
             const uint8_t *x, int kpad, const float *xscale, int m, const mv_out *o,
             int threads) {
    const int blocks = (n + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (blocks > 4)
    for (int bl = 0; bl < blocks; bl++) {
        const int j0 = 16 * bl, cols = n - j0 < 16 ? n - j0 : 16;
        float y[MV_MAX_ROWS][16];
        for (int j = j0; j < j0 + cols; j += 4) {
            const int nq = j0 + cols - j < 4 ? j0 + cols - j : 4;
            const int8_t *wj = w + (size_t)j * k;
            int32_t isum[MV_MAX_ROWS][4];
            switch (m) {
            case 1: int8_quad_1(wj, k, kpad, nq, x, isum); break;
            case 2: int8_quad_2(wj, k, kpad, nq, x, isum); break;
            case 3: int8_quad_3(wj, k, kpad, nq, x, isum); break;
            default: int8_quad_4(wj, k, kpad, nq, x, isum); break;
            }
            /* the same order as oneDNN's post-ops: × column scale, × row scale, + bias */
            for (int r = 0; r < m; r++)
                for (int q = 0; q < nq; q++)
                    y[r][j - j0 + q] = (float)(isum[r][q] - 128 * colsum[j + q]) * wscale[j + q] * xscale[r];
        }
        for (int r = 0; r < m; r++)
            mv_epilogue(y[r], cols, o->bias ? o->bias + j0 : NULL, o->activation,
                        o->c + (size_t)r * o->ldc + j0);
    }
}

void mv_int8_colsums(const int8_t *w, int n, int k, int32_t *colsum) {
    for (int j = 0; j < n; j++) {
        int32_t t = 0;
        for (int i = 0; i < k; i++) t += w[(size_t)j * k + i];
        colsum[j] = t;
    }
}

/* ---------------------------------------------------------------- fp32, in place */

/* [n×k] weight rows: one output at a time, so the weights are read as one sequential
 * stream, which the hardware prefetchers follow best (four streams, four rows apart,
 * ran at two thirds of this); four partial sums per row of x hide the FMA latency. */
#define MV_F32_DOT(M)                                                                      \
    static void f32_dot_##M(const float *w, int k, const float *x, int lda, float *sum) {  \
        __m512 acc[M][4];                                                                  \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            _Pragma("GCC unroll 4")                                                        \
            for (int u = 0; u < 4; u++) acc[r][u] = _mm512_setzero_ps();                   \
        int i = 0;                                                                         \
        for (; i + 64 <= k; i += 64) {                                                     \
            __m512 wv[4];                                                                  \
            _Pragma("GCC unroll 4")                                                       \
            for (int u = 0; u < 4; u++) {                                                  \
                _mm_prefetch((const char *)(w + i + MV_AHEAD / 4 + 16 * u), _MM_HINT_T0);   \
                wv[u] = _mm512_loadu_ps(w + i + 16 * u);                                   \
            }                                                                              \
            _Pragma("GCC unroll 4")                                                        \
            for (int r = 0; r < M; r++)                                                    \
                _Pragma("GCC unroll 4")                                                    \
                for (int u = 0; u < 4; u++)                                                \
                    acc[r][u] = _mm512_fmadd_ps(_mm512_loadu_ps(x + (size_t)r * lda + i + 16 * u), \
                                                wv[u], acc[r][u]);                         \
        }                                                                                  \
        for (; i < k; i += 16) {                                                           \
            const __mmask16 in = k - i >= 16 ? 0xffff : (__mmask16)((1u << (k - i)) - 1);   \
            const __m512 wv = _mm512_maskz_loadu_ps(in, w + i);                            \
            _Pragma("GCC unroll 4")                                                        \
            for (int r = 0; r < M; r++)                                                    \
                acc[r][0] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(in, x + (size_t)r * lda + i), \
                                            wv, acc[r][0]);                                \
        }                                                                                  \
        _Pragma("GCC unroll 4")                                                            \
        for (int r = 0; r < M; r++)                                                        \
            sum[r] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[r][0], acc[r][1]), \
                                                        _mm512_add_ps(acc[r][2], acc[r][3]))); \
    }

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl")
MV_F32_DOT(1)
MV_F32_DOT(2)
MV_F32_DOT(3)
MV_F32_DOT(4)
#pragma GCC pop_options

/* [k×n] weight rows (GPT-2's Conv1D): each thread sweeps its columns row by row, four
 * rows at a time, its sums kept in `acc` (L1/L2-sized): four sequential streams. Each
 * 16-column piece of the four rows is loaded once for all rows of x, and the same
 * piece MV_KN_AHEAD rows down is fetched: a thread's piece of a row is short (1.5 KB
 * of a 768-column weight on two threads), too short for the hardware prefetcher. */
enum { MV_KN_AHEAD = 8 };
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void f32_rows(const float *w, int ld, int k, int j0, int j1, const float *x, int lda,
                     int m, float *acc) {
    const int len = j1 - j0;
    for (int i = 0; i < m * len; i++) acc[i] = 0.0f;
    for (int i = 0; i < k; i += 4) {
        const int rows = k - i < 4 ? k - i : 4;
        const float *b[4];
        __m512 xb[MV_MAX_ROWS][4];
        _Pragma("GCC unroll 4")
        for (int u = 0; u < 4; u++) b[u] = w + (size_t)(i + (u < rows ? u : 0)) * ld + j0;
        _Pragma("GCC unroll 4")
        for (int r = 0; r < MV_MAX_ROWS; r++)
            _Pragma("GCC unroll 4")
            for (int u = 0; u < 4; u++)
                xb[r][u] = _mm512_set1_ps(r < m && u < rows ? x[(size_t)r * lda + i + u] : 0.0f);
        for (int j = 0; j < len; j += 16) {
            const __mmask16 in = len - j >= 16 ? 0xffff : (__mmask16)((1u << (len - j)) - 1);
            __m512 wv[4];
            _Pragma("GCC unroll 4")
            for (int u = 0; u < 4; u++) {
                _mm_prefetch((const char *)(b[u] + j + MV_KN_AHEAD * (size_t)ld), _MM_HINT_T0);
                wv[u] = _mm512_maskz_loadu_ps(in, b[u] + j);
            }
            _Pragma("GCC unroll 4")
            for (int r = 0; r < MV_MAX_ROWS; r++) {
                if (r >= m) break;
                float *ar = acc + (size_t)r * len + j;
                __m512 s = _mm512_maskz_loadu_ps(in, ar);
                _Pragma("GCC unroll 4")
                for (int u = 0; u < 4; u++) s = _mm512_fmadd_ps(xb[r][u], wv[u], s);
                _mm512_mask_storeu_ps(ar, in, s);
            }
        }
    }
}

int mv_f32_supported(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw");
}

__attribute__((target("avx512f,avx512bw,avx512vl")))
int mv_f32(const float *w, int ld, int trans_b, int n, int k, const float *x, int lda, int m,
           const mv_out *o, int threads) {
    if (trans_b) {
        const int blocks = (n + 15) / 16;
#pragma omp parallel for schedule(static) num_threads(threads > 0 ? threads : 1) if (blocks > 1)
        for (int bl = 0; bl < blocks; bl++) {
            const int j0 = 16 * bl, cols = n - j0 < 16 ? n - j0 : 16;
            float y[MV_MAX_ROWS][16];
            for (int j = j0; j < j0 + cols; j++) {
                float sum[MV_MAX_ROWS];
                const float *wj = w + (size_t)j * ld;
                switch (m) {
                case 1: f32_dot_1(wj, k, x, lda, sum); break;
                case 2: f32_dot_2(wj, k, x, lda, sum); break;
                case 3: f32_dot_3(wj, k, x, lda, sum); break;
                default: f32_dot_4(wj, k, x, lda, sum); break;
                }
                for (int r = 0; r < m; r++) y[r][j - j0] = sum[r];
            }
            for (int r = 0; r < m; r++)
                mv_epilogue(y[r], cols, o->bias ? o->bias + j0 : NULL, o->activation,
                            o->c + (size_t)r * o->ldc + j0);
        }
        return 1;
    }
    const int team = threads > 0 ? threads : 1;
    int failed = 0;
#pragma omp parallel num_threads(team) reduction(|| : failed)
    {
        /* whole cache lines per thread */
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        const int per = ((n + nt - 1) / nt + 15) & ~15;
        const int j0 = t * per < n ? t * per : n, j1 = j0 + per < n ? j0 + per : n;
        if (j1 > j0) {
            float *acc = malloc((size_t)m * (j1 - j0) * sizeof *acc);
            if (!acc) {
                failed = 1;
            } else {
                f32_rows(w, ld, k, j0, j1, x, lda, m, acc);
                for (int r = 0; r < m; r++)
                    mv_epilogue(acc + (size_t)r * (j1 - j0), j1 - j0, o->bias ? o->bias + j0 : NULL,
                                o->activation, o->c + (size_t)r * o->ldc + j0);
                free(acc);
            }
        }
    }
    return !failed;
}
