/* amx.c: see amx.h. Compiled for the baseline ISA; the tile code is marked for AMX
 * and runs only where amx_bf16_supported() said yes. */
#define _GNU_SOURCE
#include "amx.h"

#include <omp.h>
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

int amx_bf16_supported(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    if (!(d & (1u << 22)) || !(d & (1u << 24))) return 0; /* AMX-BF16, AMX-TILE */
    /* the kernel keeps the 8 KB tile state off until the process asks (and refuses
     * where it cannot save it) */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* ldtilecfg's 64-byte operand: palette 1, every tile 16 rows of 64 bytes */
typedef struct amx_config {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16")))

/* The first row block to meet a panel of B reads it from memory: tile loads leave
 * the prefetchers behind (one thread ran at a third of its in-cache rate on a model's
 * weights), so that block fetches the panel's lines AMX_AHEAD steps of K ahead. */
enum { AMX_AHEAD = 4 };
static inline void prefetch_b(const uint16_t *b, int i, int kpad) {
    if (i + AMX_AHEAD * 32 >= kpad) return;
    const char *p = (const char *)(b + (size_t)(i + AMX_AHEAD * 32) * 64);
    for (int r = 0; r < 16; r++) {
        _mm_prefetch(p + 256 * r, _MM_HINT_T0);
        _mm_prefetch(p + 256 * r + 64, _MM_HINT_T0);
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
block(const uint16_t *a, int kpad, const uint16_t *b, int two_rows, int cold, const float *bias,
      float *out, long ld) {
    const uint16_t *a1 = a + 16 * (size_t)kpad;
    start_c(bias, two_rows);
    for (int i = 0; i < kpad; i += 32) {
        const uint16_t *bi = b + (size_t)i * 64;
        if (cold) prefetch_b(b, i, kpad);
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
void amx_pack_rows(const float *a, int m, int k, int lda, uint16_t *x, int kpad) {
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

typedef struct amx_job {
    const uint16_t *w, *x;
    int n, kpad, m, chunk, groups;
    const mv_out *o;
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
    const int blocks = (q->n + AMX_BLOCK - 1) / AMX_BLOCK;
    const int g = j % q->groups, r_begin = (j / q->groups) * q->chunk;
    const int r_end = q->m < r_begin + q->chunk ? q->m : r_begin + q->chunk;
    const int b_begin = (int)((int64_t)blocks * g / q->groups);
    const int b_end = (int)((int64_t)blocks * (g + 1) / q->groups);
    float *pending = NULL;
    int pending_rows = 0;
    for (int nb = b_begin; nb < b_end; nb++) {
        const int n0 = nb * AMX_BLOCK, cols = q->n - n0 < AMX_BLOCK ? q->n - n0 : AMX_BLOCK;
        const uint16_t *b = q->w + (size_t)(n0 / 64) * q->kpad * 64 + (n0 % 64) * 2;
        for (int r0 = r_begin; r0 < r_end; r0 += AMX_BLOCK) {
            const int rows = r_end - r0 < AMX_BLOCK ? r_end - r0 : AMX_BLOCK;
            const uint16_t *a = q->x + (size_t)r0 * q->kpad; /* tile row r0 / 16 */
            const int whole = cols == AMX_BLOCK && (rows == 16 || rows == AMX_BLOCK);
            float *c = o->c + (size_t)r0 * o->ldc + n0;
            const float *bias = whole && o->bias ? o->bias + n0 : NULL;
            float *out = whole ? c : buf;
            const long ld = whole ? o->ldc : AMX_BLOCK;
            if (rows > 16)
                block(a, q->kpad, b, 1, r0 == r_begin, bias, out, ld);
            else
                block(a, q->kpad, b, 0, r0 == r_begin, bias, out, ld);
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

AMX_TARGET static void run_jobs(const amx_job *q, int first, int stride, int jobs) {
    amx_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) cfg.colsb[t] = 64, cfg.rows[t] = 16;
    _tile_loadconfig(&cfg);
    float buf[AMX_BLOCK * AMX_BLOCK] __attribute__((aligned(64)));
    for (int j = first; j < jobs; j += stride) run_job(q, j, buf);
    _tile_release();
}

void amx_bf16(const uint16_t *w, int n, int kpad, const uint16_t *x, int m, const mv_out *o,
              int threads) {
    const int team = threads > 0 ? threads : 1;
    const int blocks = (n + AMX_BLOCK - 1) / AMX_BLOCK;
    int chunk = AMX_A_BYTES / (2 * kpad) / AMX_BLOCK * AMX_BLOCK;
    if (chunk < AMX_BLOCK) chunk = AMX_BLOCK;
    const int chunks = (m + chunk - 1) / chunk;
    const amx_job q = {w, x, n, kpad, m, chunk, blocks < team ? blocks : team, o};
    const int jobs = chunks * q.groups;
#pragma omp parallel num_threads(team) if (jobs > 1)
    run_jobs(&q, omp_get_thread_num(), omp_get_num_threads(), jobs);
}

#else

int amx_bf16_supported(void) { return 0; }

void amx_pack_rows(const float *a, int m, int k, int lda, uint16_t *x, int kpad) {
    (void)a, (void)m, (void)k, (void)lda, (void)x, (void)kpad;
}

void amx_bf16(const uint16_t *w, int n, int kpad, const uint16_t *x, int m, const mv_out *o,
              int threads) {
    (void)w, (void)n, (void)kpad, (void)x, (void)m, (void)o, (void)threads;
}

#endif
