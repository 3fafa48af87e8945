/* amx.c: see amx.h. Compiled for the baseline ISA; the tile code is marked for AMX
 * and runs only where amx_bf16_supported() said yes. */
#define _GNU_SOURCE
#include "amx.h"
#include "quantize.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#endif


enum {
    AMX_BLOCK = 32,      /* rows and columns of C per block */
    AMX_A_BYTES = 1 << 20, /* a row chunk of A: half the L2 of the cores it was tuned on */
};

#if defined(__x86_64__) && defined(SYS_arch_prctl)

enum { ARCH_REQ_XCOMP_PERM = 0x1023, XFEATURE_XTILEDATA = 18 };

/* CPUID.(7,0).EDX bit `feature` (22 AMX-BF16, 25 AMX-INT8) and AMX-TILE (24), and the
 * tile state granted: the kernel keeps the 8 KB of it off until the process asks (and
 * refuses where it cannot save it). */
static int amx_supported(int feature) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << feature)) || !(d & (1u << 24))) return 0;
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

int amx_bf16_supported(void) { return amx_supported(22); }
int amx_int8_supported(void) { return amx_supported(25); }

/* ldtilecfg's 64-byte operand: palette 1, every tile 16 rows of 64 bytes */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))
#define AMX_INT8_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512dq")))

/* Every block fetches B's lines AMX_AHEAD steps of K ahead into L1: tile loads leave
 * the hardware prefetchers behind, from memory and from L2 alike. On the accelerator
 * machine this took 128-row products from 537-898 to 716-1291 GFLOP/s, the panel in
 * cache or not; fetching only for the first row block to meet a panel, or 4 steps
 * ahead, or A's lines too, ran slower. */
enum { AMX_AHEAD = 2 };
static inline void prefetch_b(const uint16_t *b, int i, int kpad) {
    if (i + AMX_AHEAD * 32 >= kpad) return;
    const char *p = (const char *)(b + (size_t)(i + AMX_AHEAD * 32) * 64);
    for (int r = 0; r < 16; r++) {
        _mm_prefetch(p + 256 * r, _MM_HINT_T0);
        _mm_prefetch(p + 256 * r + 64, _MM_HINT_T0);
    }
}

/* The next 32 columns' weights, fetched into L2 a few lines per K step while this
 * panel meets its row blocks: the first block to meet a panel otherwise waits on L3
 * for every line (the L1 prefetches above are too few and too late for that), which
 * held a 128-row product near the rate of a product whose every block reads L3.
 * Measured on the accelerator machine in paired runs against the kernel without it
 * (weights cycled through 48 MB, 2 threads): 7-51% faster on the encoder shapes of
 * 64-512 rows, faster in 25-30 of 30 pairs on each; prefetcht2 gained a little less,
 * spreading the panel over half the row blocks less still. BERT-base NER's bf16
 * forward at 128 tokens: 62.9 -> 52.6 ms (docs/backends.md). */
typedef struct next_panel {
    const char *row;        /* the row being fetched */
    long row_stride;        /* bytes between rows */
    int col, row_lines;     /* the row's next line; lines per row */
    int rows_left, per_step;
} next_panel;

/* rows of row_lines lines, spread over `steps` K steps */
static next_panel next_panel_at(const void *row, long row_stride, int row_lines, int rows,
                                int steps) {
    const int lines = rows * row_lines;
    return (next_panel){(const char *)row, row_stride, 0, row_lines, rows,
                        (lines + steps - 1) / steps};
}

static inline void fetch_next_panel(next_panel *p) {
    for (int i = 0; i < p->per_step && p->rows_left > 0; i++) {
        _mm_prefetch(p->row + 64 * p->col, _MM_HINT_T1);
        if (++p->col == p->row_lines) p->col = 0, p->row += p->row_stride, p->rows_left--;
    }
}

/* C's four tiles start from the bias (a tile load of stride 0 repeats its 16 values
 * on every row) or from zero. */
AMX_TARGET static void start_c(const float *bias, int two_rows) {
    if (bias) {
        _tile_loadd(0, bias, 0);
        _tile_loadd(1, bias + 16, 0);
        if (two_rows) {
            _tile_loadd(2, bias, 0);
            _tile_loadd(3, bias + 16, 0);
        }
    } else {
        _tile_zero(0);
        _tile_zero(1);
        if (two_rows) {
            _tile_zero(2);
            _tile_zero(3);
        }
    }
}

/* Tiles: 0-3 C (rows 0-15 / 16-31 × columns 0-15 / 16-31), 4-5 A, 6-7 B. A: tiles of
 * 16 rows × 32 bf16, stored whole (amx_pack_rows), 1 KB apart along K; B: 16 pairs of
 * rows, each 16 columns × 2, at the layout's stride of 128 bf16 (256 bytes). The block
 * goes to out, rows `ld` floats apart. A last block of at most 16 rows (two_rows 0)
 * uses tiles 0, 1, 4, 6 and 7 only; inlined with a constant two_rows, each caller gets
 * its own loop without the test. */
AMX_TARGET static inline __attribute__((always_inline)) void
block(const uint16_t *a, int kpad, const uint16_t *b, int two_rows, const float *bias,
      float *out, long ld, next_panel *next) {
    const uint16_t *a1 = a + 16 * (size_t)kpad;
    start_c(bias, two_rows);
    for (int i = 0; i < kpad; i += 32) {
        const uint16_t *bi = b + (size_t)i * 64;
        prefetch_b(b, i, kpad);
        fetch_next_panel(next);
        _tile_loadd(4, a + 16 * i, 64);
        _tile_loadd(6, bi, 256);
        _tile_loadd(7, bi + 32, 256);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        if (two_rows) {
            _tile_loadd(5, a1 + 16 * i, 64);
            _tile_dpbf16ps(2, 5, 6);
            _tile_dpbf16ps(3, 5, 7);
        }
    }
    _tile_stored(0, out, 4 * ld);
    _tile_stored(1, out + 16, 4 * ld);
    if (two_rows) {
        _tile_stored(2, out + 16 * ld, 4 * ld);
        _tile_stored(3, out + 16 * ld + 16, 4 * ld);
    }
}

/* Writes rows × cols of the block at (r0, n0) from buf through the epilogue. */
static void store_block(const float *buf, int rows, int cols, int r0, int n0, const mv_out *o) {
    for (int r = 0; r < rows; r++)
        mv_epilogue(buf + r * AMX_BLOCK, cols, o->bias ? o->bias + n0 : NULL, o->activation,
                    o->c + (size_t)(r0 + r) * o->ldc + n0);
}

/* Rows of fp32 A to bf16 tiles: tile (rb, kb) holds rows 16rb.. and columns 32kb..
 * as 16 × 32 bf16, at x + (rb · kpad/32 + kb) · 512; rounding to nearest even
 * (vcvtneps2bf16, which every AMX CPU has). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void pack_rows(const float *a, int m, int k, int lda, uint16_t *x, int kpad) {
    const int rows = amx_rows(m);
    for (int r = 0; r < rows; r++) {
        const float *ar = r < m ? a + (size_t)r * lda : NULL;
        uint16_t *xr = x + (size_t)(r / 16) * 16 * kpad + (size_t)(r % 16) * 32;
        for (int i = 0; i < kpad; i += 16) {
            const int left = ar ? k - i : 0;
            const __mmask16 in = left >= 16 ? 0xffff : left > 0 ? (__mmask16)((1u << left) - 1) : 0;
            const __m256bh v = _mm512_cvtneps_pbh(in ? _mm512_maskz_loadu_ps(in, ar + i) : _mm512_setzero_ps());
            _mm256_storeu_si256((__m256i *)(xr + (size_t)(i / 32) * 512 + i % 32), (__m256i)v);
        }
    }
}

/* How a product's work is shared out: jobs of one row chunk (A's rows in L2) by one
 * group of 32-column blocks, as many groups as threads. */
typedef struct amx_split {
    int m, chunk, blocks, groups, jobs;
} amx_split;

static amx_split split_work(int m, int n, size_t row_bytes, int team) {
    amx_split p = {.m = m, .blocks = (n + AMX_BLOCK - 1) / AMX_BLOCK};
    p.chunk = (int)(AMX_A_BYTES / row_bytes) / AMX_BLOCK * AMX_BLOCK;
    if (p.chunk < AMX_BLOCK) p.chunk = AMX_BLOCK;
    p.groups = p.blocks < team ? p.blocks : team;
    p.jobs = (m + p.chunk - 1) / p.chunk * p.groups;
    return p;
}

/* Job j's rows [*r0, *r1) and column blocks [*b0, *b1). */
static inline void split_job(const amx_split *p, int j, int *r0, int *r1, int *b0, int *b1) {
    const int g = j % p->groups;
    *r0 = (j / p->groups) * p->chunk;
    *r1 = p->m < *r0 + p->chunk ? p->m : *r0 + p->chunk;
    *b0 = (int)((int64_t)p->blocks * g / p->groups);
    *b1 = (int)((int64_t)p->blocks * (g + 1) / p->groups);
}

typedef struct amx_job {
    const uint16_t *w, *x;
    int n, kpad;
    const mv_out *o;
    amx_split split;
} amx_job;

/* The activation over a whole block of C, in place. */
static void activate_block(float *c, int ldc, int rows, int act) {
    for (int r = 0; r < rows; r++) mv_epilogue(c + (size_t)r * ldc, AMX_BLOCK, NULL, act, c + (size_t)r * ldc);
}

/* Job j: row chunk j / groups, column group j % groups. Inside, each 32-column panel
 * of B meets every 32-row block of the chunk while it is in L1/L2. Whole blocks (all
 * 16 or 32 rows, 32 columns) start from the bias and go straight to C; reading back
 * what a tile store just wrote stalls, so a block's activation waits until the next
 * block is computed. Partial blocks go through buf and store_block. */
AMX_TARGET static void run_job(const amx_job *q, int j, float *buf) {
    const mv_out *o = q->o;
    int r_begin, r_end, b_begin, b_end;
    split_job(&q->split, j, &r_begin, &r_end, &b_begin, &b_end);
    float *pending = NULL;
    int pending_rows = 0;
    const int steps = (r_end - r_begin + AMX_BLOCK - 1) / AMX_BLOCK * (q->kpad / 32);
    for (int nb = b_begin; nb < b_end; nb++) {
        const int n0 = nb * AMX_BLOCK, cols = q->n - n0 < AMX_BLOCK ? q->n - n0 : AMX_BLOCK;
        const uint16_t *b = q->w + (size_t)(n0 / 64) * q->kpad * 64 + (n0 % 64) * 2;
        /* the next panel, if this job has one: kpad / 2 pairs of rows, two lines each,
         * 256 bytes apart */
        const int more = nb + 1 < b_end, n1 = more ? n0 + AMX_BLOCK : n0;
        next_panel next = next_panel_at(q->w + (size_t)(n1 / 64) * q->kpad * 64 + (n1 % 64) * 2,
                                        256, 2, more ? q->kpad / 2 : 0, steps);
        for (int r0 = r_begin; r0 < r_end; r0 += AMX_BLOCK) {
            const int rows = r_end - r0 < AMX_BLOCK ? r_end - r0 : AMX_BLOCK;
            const uint16_t *a = q->x + (size_t)r0 * q->kpad; /* tile row r0 / 16 */
            const int whole = cols == AMX_BLOCK && (rows == 16 || rows == AMX_BLOCK);
            float *c = o->c + (size_t)r0 * o->ldc + n0;
            const float *bias = whole && o->bias ? o->bias + n0 : NULL;
            float *out = whole ? c : buf;
            const long ld = whole ? o->ldc : AMX_BLOCK;
            if (rows > 16)
                block(a, q->kpad, b, 1, bias, out, ld, &next);
            else
                block(a, q->kpad, b, 0, bias, out, ld, &next);
            if (pending) activate_block(pending, o->ldc, pending_rows, o->activation);
            pending = NULL;
            if (!whole)
                store_block(buf, rows, cols, r0, n0, o);
            else if (o->activation)
                pending = c, pending_rows = rows;
        }
    }
    if (pending) activate_block(pending, o->ldc, pending_rows, o->activation);
}

/* This thread's tile configuration: palette 1, every tile 16 rows of 64 bytes. GCC 12
 * does not count ldtilecfg as a read of its operand: inlined into a caller, the stores
 * of the rows and widths were dropped as dead (tiles of 0 rows, then a fault), hence
 * the compiler barrier. */
__attribute__((target("amx-tile"))) static void tiles_on(void) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    __asm__ volatile("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

__attribute__((target("amx-tile"))) static void tiles_off(void) { _tile_release(); }

AMX_TARGET static void run_jobs(const amx_job *q, int first, int stride, int jobs) {
    tiles_on();
    float buf[AMX_BLOCK * AMX_BLOCK] __attribute__((aligned(64)));
    for (int j = first; j < jobs; j += stride) run_job(q, j, buf);
    _tile_release();
}

/* The team converts A's rows, 16 (one tile row) at a time, then meets at a barrier
 * before the products: on one thread the conversion kept the other idle for a few
 * percent of an encoder forward. */
static inline int group_rows(int m, int g) { return m - 16 * g < 16 ? m - 16 * g : 16; }

void amx_bf16(const uint16_t *w, int n, int k, int kpad, const float *a, int m, int lda,
              uint16_t *x, const mv_out *o, int threads) {
    const int team = threads > 0 ? threads : 1;
    const amx_job q = {w, x, n, kpad, o, split_work(m, n, 2 * (size_t)kpad, team)};
#pragma omp parallel num_threads(team) if (q.split.jobs > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int g = t; g < amx_rows(m) / 16; g += nt)
            pack_rows(a + (size_t)16 * g * lda, group_rows(m, g), k, lda, x + (size_t)16 * g * kpad, kpad);
#pragma omp barrier
        run_jobs(&q, t, nt, q.split.jobs);
    }
}

/* ---------------------------------------------------------------- bf16, two activations */

/* B [k×n] (row stride ldb; trans_b: stored [n×k]) into the weights' layout: element
 * (i, j) at (j / 64)·kpad·64 + (i / 2)·128 + (j % 64)·2 + i % 2, zero past k and n.
 * Stored [n×k], each of B's rows is one column of pairs of k, 32 bits each, 256 bytes
 * apart (a scatter); stored [k×n], two rows of B interleave into one row of pairs. */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
static void pack_b(const float *b, int ldb, int trans_b, int n, int k, int kpad, uint16_t *w) {
    memset(w, 0, (size_t)((n + 63) / 64) * kpad * 64 * sizeof *w);
    if (trans_b) {
        const __m512i apart = _mm512_mullo_epi32(
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
            _mm512_set1_epi32(64));
        for (int j = 0; j < n; j++) {
            int32_t *col = (int32_t *)(w + (size_t)(j / 64) * kpad * 64) + j % 64;
            const float *bj = b + (size_t)j * ldb;
            for (int i = 0; i < k; i += 32) {
                const int left = k - i;
                const __mmask16 lo = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
                const __mmask16 hi = left >= 32 ? 0xffff : left > 16 ? (__mmask16)((1u << (left - 16)) - 1) : 0;
                const __m512 x0 = _mm512_maskz_loadu_ps(lo, bj + i);
                const __m512 x1 = hi ? _mm512_maskz_loadu_ps(hi, bj + i + 16) : _mm512_setzero_ps();
                /* words 0-15 from x0, 16-31 from x1: dword t holds inputs i + 2t, i + 2t + 1 */
                const __m512i pairs = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
                _mm512_i32scatter_epi32(col + (size_t)(i / 2) * 64, apart, pairs, 4);
            }
        }
        return;
    }
    for (int i = 0; i < k; i += 2) {
        const float *r0 = b + (size_t)i * ldb, *r1 = i + 1 < k ? r0 + ldb : NULL;
        for (int j = 0; j < n; j += 16) {
            const int left = n - j;
            const __mmask16 in = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
            const __m256i h0 = (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(in, r0 + j));
            const __m256i h1 = r1 ? (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(in, r1 + j))
                                  : _mm256_setzero_si256();
            const __m512i pairs = _mm512_or_si512(_mm512_cvtepu16_epi32(h0),
                                                  _mm512_slli_epi32(_mm512_cvtepu16_epi32(h1), 16));
            int32_t *row = (int32_t *)(w + (size_t)(j / 64) * kpad * 64) + (size_t)(i / 2) * 64 + j % 64;
            _mm512_mask_storeu_epi32(row, in, pairs);
        }
    }
}

static void scale_rows(float *c, int ldc, int m, int n, float alpha) {
    if (alpha != 1.0f)
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) c[(size_t)r * ldc + j] *= alpha;
}

/* One entry of amx_bf16_activations on the calling thread, whose tiles are configured
 * (an attention head: a few microseconds of tile work, so no team of its own and no
 * tile configuration per call, which had cost more than the products). w, x: room for
 * the packed B and A; buf: a block's partial results. */
AMX_TARGET static void entry_on_thread(const float *a, int lda, const float *b, int ldb,
                                       int trans_b, float *c, int ldc, int m, int n, int k,
                                       int kpad, float alpha, uint16_t *w, uint16_t *x,
                                       float *buf) {
    pack_b(b, ldb, trans_b, n, k, kpad, w);
    pack_rows(a, m, k, lda, x, kpad);
    const mv_out o = {.c = c, .ldc = ldc, .bias = NULL, .activation = 0};
    const amx_job q = {w, x, n, kpad, &o, split_work(m, n, 2 * (size_t)kpad, 1)};
    for (int j = 0; j < q.split.jobs; j++) run_job(&q, j, buf);
    scale_rows(c, ldc, m, n, alpha);
}

int amx_bf16_activations(const float *a, int lda, int64_t stride_a, const float *b, int ldb,
                         int64_t stride_b, int trans_b, float *c, int ldc, int64_t stride_c,
                         int m, int n, int k, int batch, float alpha, int threads) {
    const int kpad = (k + 31) & ~31, team = threads > 0 ? threads : 1;
    const size_t wsize = (size_t)((n + 63) / 64) * kpad * 64, xsize = (size_t)amx_rows(m) * kpad;
    if (batch < team) { /* each product on the whole team */
        uint16_t *w = aligned_alloc(64, wsize * 2), *x = aligned_alloc(64, xsize * 2);
        for (int e = 0; w && x && e < batch; e++) {
            pack_b(b + e * stride_b, ldb, trans_b, n, k, kpad, w);
            const mv_out o = {.c = c + e * stride_c, .ldc = ldc, .bias = NULL, .activation = 0};
            amx_bf16(w, n, k, kpad, a + e * stride_a, m, lda, x, &o, team);
            scale_rows(c + e * stride_c, ldc, m, n, alpha);
        }
        const int ok = w && x;
        free(w), free(x);
        return ok ? 0 : -1;
    }
    int failed = 0;
#pragma omp parallel num_threads(team) reduction(| : failed)
    {
        uint16_t *w = aligned_alloc(64, wsize * 2), *x = aligned_alloc(64, xsize * 2);
        float buf[AMX_BLOCK * AMX_BLOCK] __attribute__((aligned(64)));
        failed = !w || !x;
        if (!failed) {
            tiles_on();
            /* a contiguous share of the heads, as the core splits the softmax rows
             * between these two calls and the projections split q, k and v's columns:
             * each head's q, k, v, scores and p then stay in the L2 of the core that
             * made them. Every other head (e = t, t + nt, ...) had come from the other
             * core's: on the accelerator machine its packing took half as long again
             * (DistilBERT bf16 b1 attention 2.8-2.9 -> 2.1-2.3 ms) */
            const int t = omp_get_thread_num(), nt = omp_get_num_threads();
            const int e0 = (int)((int64_t)batch * t / nt), e1 = (int)((int64_t)batch * (t + 1) / nt);
            for (int e = e0; e < e1; e++)
                entry_on_thread(a + e * stride_a, lda, b + e * stride_b, ldb, trans_b,
                                c + e * stride_c, ldc, m, n, k, kpad, alpha, w, x, buf);
            tiles_off();
        }
        free(w), free(x);
    }
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------- int8 */

/* The int8 weights stay as matvec.h streams them, [n×k] with k contiguous, which is
 * how AMX reads its first operand: so the weights are that operand (16 outputs × 64
 * inputs per tile) and the activations the second, packed four inputs per 32-bit cell
 * (amx_pack_int8). Each tile then holds Cᵀ (16 outputs × 16 rows), turned back in the
 * epilogue with a 16×16 transpose. */

/* r[i] lane j <- r[j] lane i */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* then s[4i + e], 128-bit lane L: rows 4i..4i+3 of column 4L + e */
    for (int i = 0; i < 4; i++) {
        const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int e = 0; e < 4; e++) {
        const __m512 a0 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0x88);
        const __m512 a1 = _mm512_shuffle_f32x4(r[e], r[4 + e], 0xdd);
        const __m512 b0 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0x88);
        const __m512 b1 = _mm512_shuffle_f32x4(r[8 + e], r[12 + e], 0xdd);
        t[e] = _mm512_shuffle_f32x4(a0, b0, 0x88);
        t[4 + e] = _mm512_shuffle_f32x4(a1, b1, 0x88);
        t[8 + e] = _mm512_shuffle_f32x4(a0, b0, 0xdd);
        t[12 + e] = _mm512_shuffle_f32x4(a1, b1, 0xdd);
    }
    for (int i = 0; i < 16; i++) r[i] = t[i];
}

/* Rows of fp32 A quantized (quantize.h) straight into the layout amx_int8 loads: per
 * 16 rows, cell t (inputs 4t..4t+3) of row r at 32-bit cell 16t + r; zero past m and
 * past k. */
__attribute__((target("avx512f,avx512bw,avx512vl")))
static void quantize_pack(const float *a, int m, int k, int lda, int8_t *x, int kpad, float *xscale) {
    memset(x, 0, (size_t)amx_rows(m) * kpad);
    for (int r = 0; r < m; r++) {
        const float *ar = a + (size_t)r * lda;
        int32_t *cells = (int32_t *)(x + (size_t)(r / 16) * 16 * kpad) + r % 16;
        const __m512 inverse = quant_row_inverse(ar, k, xscale + r);
        for (int i = 0; i < k; i += 16) {
            const __m128i v = quant_16(ar + i, k - i, inverse);
            int32_t *c = cells + (size_t)(i / 4) * 16;
            c[0] = _mm_extract_epi32(v, 0), c[16] = _mm_extract_epi32(v, 1);
            c[32] = _mm_extract_epi32(v, 2), c[48] = _mm_extract_epi32(v, 3);
        }
    }
}

typedef struct amx_int8_job {
    const int8_t *w, *x;
    int n, k, kpad;
    const float *wscale, *xscale;
    const mv_out *o;
    amx_split split;
} amx_int8_job;

/* A block's sums as the tiles stored them: quadrant (a, b) at s + (2b + a) · 256 holds
 * outputs n0 + 16a.. by rows m0 + 16b.. . Scaled as oneDNN's post-ops do (× column
 * scale, × row scale), transposed, biased and stored into C; the activation then runs
 * over the block's rows, 32 columns a call (per 16-column piece, the calls had cost
 * as much as the products of a 768-input layer). */
__attribute__((target("avx512f,avx512bw,avx512vl,avx512dq")))
static void int8_block_out(const amx_int8_job *q, const int32_t *s, int n0, int m0, int mrows) {
    const mv_out *o = q->o;
    for (int b = 0; 16 * b < mrows; b++) {
        const int mb = mrows - 16 * b < 16 ? mrows - 16 * b : 16;
        const __m512 xs = _mm512_maskz_loadu_ps((__mmask16)((1u << mb) - 1), q->xscale + m0 + 16 * b);
        for (int a = 0; a < 2 && n0 + 16 * a < q->n; a++) {
            const int c0 = n0 + 16 * a, cols = q->n - c0 < 16 ? q->n - c0 : 16;
            const __mmask16 in = (__mmask16)((1u << cols) - 1);
            const int32_t *t = s + (2 * b + a) * 256;
            __m512 v[16];
            for (int i = 0; i < 16; i++) {
                const __m512 ws = _mm512_set1_ps(i < cols ? q->wscale[c0 + i] : 0.0f);
                v[i] = _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(t + 16 * i)), ws), xs);
            }
            transpose16(v);
            const __m512 bias = o->bias ? _mm512_maskz_loadu_ps(in, o->bias + c0) : _mm512_setzero_ps();
            float *c = o->c + (size_t)(m0 + 16 * b) * o->ldc + c0;
            for (int r = 0; r < mb; r++)
                _mm512_mask_storeu_ps(c + (size_t)r * o->ldc, in, _mm512_add_ps(v[r], bias));
        }
    }
    if (o->activation) {
        const int cols = q->n - n0 < AMX_BLOCK ? q->n - n0 : AMX_BLOCK;
        for (int r = 0; r < mrows; r++) {
            float *c = o->c + (size_t)(m0 + r) * o->ldc + n0;
            mv_epilogue(c, cols, NULL, o->activation, c);
        }
    }
}

/* Every block fetches its 32 weight rows' lines AMX_AHEAD steps of K ahead, as
 * prefetch_b does for bf16. */
static inline void prefetch_w(const int8_t *w, int k, int i, int kpad) {
    if (i + AMX_AHEAD * 64 >= kpad) return;
    for (int r = 0; r < 32; r++) _mm_prefetch((const char *)(w + (size_t)r * k + i + AMX_AHEAD * 64), _MM_HINT_T0);
}

/* Tiles: 0-3 sums (quadrants as int8_block_out reads them), 4-5 the weights' 32
 * outputs, 6-7 the rows' 16 + 16. A block's sums are stored into one half of `s`
 * while the other half's block goes through the epilogue: reading back what a tile
 * store just wrote stalls. */
AMX_INT8_TARGET static void run_int8_job(const amx_int8_job *q, int j, int32_t *s) {
    int r_begin, r_end, b_begin, b_end;
    split_job(&q->split, j, &r_begin, &r_end, &b_begin, &b_end);
    int pending = 0, pn0 = 0, pm0 = 0, prows = 0, half = 0;
    const int steps = (r_end - r_begin + AMX_BLOCK - 1) / AMX_BLOCK * (q->kpad / 64);
    for (int nb = b_begin; nb < b_end; nb++) {
        const int n0 = nb * AMX_BLOCK;
        const int8_t *w0 = q->w + (size_t)n0 * q->k, *w1 = w0 + 16 * (size_t)q->k;
        /* the next panel (next_panel above): up to 32 weight rows of k bytes */
        const int left = nb + 1 < b_end ? q->n - n0 - AMX_BLOCK : 0;
        next_panel next = next_panel_at(left > 0 ? w0 + AMX_BLOCK * (size_t)q->k : w0, q->k,
                                        (q->k + 63) / 64, left < AMX_BLOCK ? left : AMX_BLOCK, steps);
        for (int m0 = r_begin; m0 < r_end; m0 += AMX_BLOCK) {
            const int mrows = r_end - m0 < AMX_BLOCK ? r_end - m0 : AMX_BLOCK;
            const int8_t *x0 = q->x + (size_t)m0 * q->kpad, *x1 = x0 + 16 * (size_t)q->kpad;
            int32_t *out = s + half * 1024;
            _tile_zero(0);
            _tile_zero(1);
            if (mrows > 16) {
                _tile_zero(2);
                _tile_zero(3);
                for (int i = 0; i < q->kpad; i += 64) {
                    prefetch_w(w0, q->k, i, q->kpad);
                    fetch_next_panel(&next);
                    _tile_loadd(4, w0 + i, q->k);
                    _tile_loadd(5, w1 + i, q->k);
                    _tile_loadd(6, x0 + i * 16, 64);
                    _tile_loadd(7, x1 + i * 16, 64);
                    _tile_dpbssd(0, 4, 6);
                    _tile_dpbssd(1, 5, 6);
                    _tile_dpbssd(2, 4, 7);
                    _tile_dpbssd(3, 5, 7);
                }
                _tile_stored(2, out + 512, 64);
                _tile_stored(3, out + 768, 64);
            } else {
                for (int i = 0; i < q->kpad; i += 64) {
                    prefetch_w(w0, q->k, i, q->kpad);
                    fetch_next_panel(&next);
                    _tile_loadd(4, w0 + i, q->k);
                    _tile_loadd(5, w1 + i, q->k);
                    _tile_loadd(6, x0 + i * 16, 64);
                    _tile_dpbssd(0, 4, 6);
                    _tile_dpbssd(1, 5, 6);
                }
            }
            _tile_stored(0, out, 64);
            _tile_stored(1, out + 256, 64);
            if (pending) int8_block_out(q, s + (half ^ 1) * 1024, pn0, pm0, prows);
            pending = 1, pn0 = n0, pm0 = m0, prows = mrows, half ^= 1;
        }
    }
    if (pending) int8_block_out(q, s + (half ^ 1) * 1024, pn0, pm0, prows);
}

AMX_INT8_TARGET static void run_int8_jobs(const amx_int8_job *q, int first, int stride, int jobs) {
    tiles_on();
    int32_t s[2 * 1024] __attribute__((aligned(64)));
    for (int j = first; j < jobs; j += stride) run_int8_job(q, j, s);
    _tile_release();
}

void amx_int8(const int8_t *w, int n, int k, int kpad, const float *wscale, const float *a, int m,
              int lda, int8_t *x, float *xscale, const mv_out *o, int threads) {
    const int team = threads > 0 ? threads : 1;
    const amx_int8_job q = {w, x, n, k, kpad, wscale, xscale, o,
                            split_work(m, n, (size_t)kpad, team)};
#pragma omp parallel num_threads(team) if (q.split.jobs > 1)
    {
        const int t = omp_get_thread_num(), nt = omp_get_num_threads();
        for (int g = t; g < amx_rows(m) / 16; g += nt)
            quantize_pack(a + (size_t)16 * g * lda, group_rows(m, g), k, lda,
                          x + (size_t)16 * g * kpad, kpad, xscale + 16 * g);
#pragma omp barrier
        run_int8_jobs(&q, t, nt, q.split.jobs);
    }
}

#else

int amx_bf16_supported(void) { return 0; }

int amx_int8_supported(void) { return 0; }

void amx_bf16(const uint16_t *w, int n, int k, int kpad, const float *a, int m, int lda,
              uint16_t *x, const mv_out *o, int threads) {
    (void)w, (void)n, (void)k, (void)kpad, (void)a, (void)m, (void)lda, (void)x, (void)o,
        (void)threads;
}

int amx_bf16_activations(const float *a, int lda, int64_t stride_a, const float *b, int ldb,
                         int64_t stride_b, int trans_b, float *c, int ldc, int64_t stride_c,
                         int m, int n, int k, int batch, float alpha, int threads) {
    (void)a, (void)lda, (void)stride_a, (void)b, (void)ldb, (void)stride_b, (void)trans_b, (void)c,
        (void)ldc, (void)stride_c, (void)m, (void)n, (void)k, (void)batch, (void)alpha,
        (void)threads;
    return -1;
}

void amx_int8(const int8_t *w, int n, int k, int kpad, const float *wscale, const float *a, int m,
              int lda, int8_t *x, float *xscale, const mv_out *o, int threads) {
    (void)w, (void)n, (void)k, (void)kpad, (void)wscale, (void)a, (void)m, (void)lda, (void)x,
        (void)xscale, (void)o, (void)threads;
}

#endif
