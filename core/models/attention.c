/* attention.c: multi-head attention of one batch row (see attention.h), computed
 * the way transformers' eager attention does in fp32: scores = q·kᵀ·scale, plus the
 * additive position bias (T5) and masks (finfo(float32).min on hidden keys), softmax, then ·v.
 *
 * Two paths, both on the CPU here rather than through a backend (the products are
 * small, and a library call per head cost more than the arithmetic):
 * - fused (tq >= FUSED_MIN_TQ: encoders, prompts): per head and block of QB query
 *   rows, the score tile QB×tk is made, masked, soft-maxed and multiplied by v while
 *   it sits in L1; the head's kᵀ is packed once per thread.
 * - step (fewer query rows: a decoding step): per head and query row, q·k over the
 *   cached keys as dot products, softmax, then the value rows summed with their
 *   weights; no packing, since each key is read once.
 * - bf16 (a model computing in bf16 or int8, on a backend with matmul_bf16): q·kᵀ of every
 *   head as one batched bf16 product, the masks and softmax here in fp32, p·v as
 *   another; on the accelerator machine's AMX this took a BERT layer's attention at
 *   128 tokens from ~0.49 to ~0.40 ms, of which the softmax here is about a third.
 * Work items are split over the backend's thread count with OpenMP. Keys past the last
 * one a padding key mask lets through are skipped: their weights are exactly 0.
 * Thread-safe: only the caller's buffers and per-call scratch are touched. */
#include "attention.h"

#include <float.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../error.h"
#include "../kernels.h"
#include "../kernels_simd.h"
#include "../profile.h"

/* The tile loops over QB rows must unroll fully (GCC does not at -O2) so that the
 * accumulators live in vector registers: _Pragma("GCC unroll") on each. */
enum {
    FUSED_MIN_TQ = 4, /* below: the step path (a decoding step has tq = 1) */
    QB = 8,           /* query rows per tile */
    KB = 32,          /* key columns per score step (two vectors); kᵀ rows are padded to it */
    STEP_MIN_PARALLEL = 1 << 13 /* q·k multiply-adds below which a step runs on one thread */
};

/* The key/value head query head h reads: with grouped-query attention each serves
 * n_heads / kv_heads consecutive query heads. */
static inline int kv_head(const tp__attn_args *a, int h) {
    return a->kv_heads > 0 ? h / (a->n_heads / a->kv_heads) : h;
}

/* Where K/V head g starts in base (a->k or a->v). */
static inline const float *kv_at(const tp__attn_args *a, const float *base, int g) {
    return base + (size_t)g * (a->head_stride ? a->head_stride : (size_t)a->head_dim);
}

/* Score row i of head h over keys [0, tk), q·k times `scale` (1 where the caller
 * scaled it already): plus the bias, then the causal and key masks (in that order, as
 * transformers adds them), then soft-maxed. One vector pass does the scale, the three
 * additions and the row's max: GCC leaves a scalar loop with a branch per key as it is. */
TP_SIMD_INLINE void mask_softmax_row(const tp__attn_args *a, int h, int i, int tk, float scale,
                                     float *row) {
    const float *b = a->bias ? a->bias + ((size_t)h * a->tq + i) * a->tk : NULL;
    const float *m = a->key_mask;
    const int last = a->causal_past >= 0 ? a->causal_past + i : tk - 1;
    const tp_v16i lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    const tp_v16f vscale = tp_v_set1(scale);
    tp_v16f vmax = tp_v_set1(-__builtin_inff());
    int j = 0;
    for (; j + 16 <= tk; j += 16) {
        tp_v16f x = tp_v_load(row + j) * vscale;
        if (b) x += tp_v_load(b + j);
        if (m) x += tp_v_load(m + j); /* lanes past last are overwritten just below */
        if (j + 15 > last) x = tp_v_select(lane > last - j, tp_v_set1(-FLT_MAX), x);
        tp_v_store(row + j, x);
        vmax = tp_v_select(x > vmax, x, vmax);
    }
    float max = tp_v_hmax(vmax);
    for (; j < tk; j++) {
        float x = row[j] * scale;
        if (b) x += b[j];
        if (j > last) x = -FLT_MAX;
        else if (m) x += m[j];
        row[j] = x;
        max = x > max ? x : max;
    }
    tp_v_softmax_row_with_max(row, tk, max);
}

/* ---------------------------------------------------------------- step path */

/* Σ_d q[d]·k[d] */
TP_SIMD_INLINE float dot(const float *q, const float *k, int D) {
    tp_v16f acc = tp_v_set1(0.0f);
    int d = 0;
    for (; d + 16 <= D; d += 16) acc += tp_v_load(q + d) * tp_v_load(k + d);
    float s = tp_v_hsum(acc);
    for (; d < D; d++) s += q[d] * k[d];
    return s;
}

/* Lane u of the result: the sum of r[u]'s lanes, added up in tp_v_hsum's order (lane
 * i with i + 8, then + 4, + 2, + 1), so that a score is the one dot() would give. Each
 * step folds pairs of vectors: the lower half of a lane group from both plus the upper
 * half from both, which also puts the keys' sums side by side. */
TP_SIMD_INLINE tp_v16f fold(tp_v16f x, tp_v16f y, tp_v16i lo, tp_v16i hi) {
    return __builtin_shuffle(x, y, lo) + __builtin_shuffle(x, y, hi);
}
TP_SIMD_INLINE tp_v16f hsum16(const tp_v16f r[16]) {
    const tp_v16i lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23},
                  lo4 = {0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27},
                  lo2 = {0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29},
                  lo1 = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    tp_v16f t8[8], t4[4], t2[2];
    _Pragma("GCC unroll 8")
    for (int u = 0; u < 8; u++) t8[u] = fold(r[2 * u], r[2 * u + 1], lo8, lo8 + 8);
    _Pragma("GCC unroll 4")
    for (int u = 0; u < 4; u++) t4[u] = fold(t8[2 * u], t8[2 * u + 1], lo4, lo4 + 4);
    _Pragma("GCC unroll 2")
    for (int u = 0; u < 2; u++) t2[u] = fold(t4[2 * u], t4[2 * u + 1], lo2, lo2 + 2);
    return fold(t2[0], t2[1], lo1, lo1 + 1);
}

/* s[j] = (q·k_j)·scale for keys j < n. Sixteen keys at a time, each into its own
 * accumulator: a key alone is a chain of dependent multiply-adds and a horizontal
 * sum, latency-bound; the sixteen are reduced together by hsum16. */
TP_SIMD_INLINE void step_scores(const float *q, const float *k, int ldk, int D, int n,
                                float scale, float *s) {
    const int D16 = D / 16 * 16;
    int j = 0;
    for (; j + 16 <= n; j += 16) {
        const float *kj = k + (size_t)j * ldk;
        tp_v16f acc[16];
        _Pragma("GCC unroll 16")
        for (int u = 0; u < 16; u++) acc[u] = tp_v_set1(0.0f);
        for (int d = 0; d < D16; d += 16) {
            const tp_v16f qv = tp_v_load(q + d);
            _Pragma("GCC unroll 16")
            for (int u = 0; u < 16; u++) acc[u] += qv * tp_v_load(kj + (size_t)u * ldk + d);
        }
        tp_v16f sum = hsum16(acc);
        if (D16 < D) { /* dot()'s scalar tail, key by key */
            float t[16];
            tp_v_store(t, sum);
            for (int u = 0; u < 16; u++)
                for (int d = D16; d < D; d++) t[u] += q[d] * kj[(size_t)u * ldk + d];
            sum = tp_v_load(t);
        }
        tp_v_store(s + j, sum * tp_v_set1(scale));
    }
    for (; j < n; j++) s[j] = dot(q, k + (size_t)j * ldk, D) * scale;
}

/* One query row i of head h: scores over keys [0, tk) into s, masked and soft-maxed,
 * then out = Σ_j s[j]·v[j] (keys of weight exactly 0 skipped). */
TP_SIMD_INLINE void step_row(const tp__attn_args *a, int tk, int h, int i, float *s) {
    const int D = a->head_dim, TK = tk, g = kv_head(a, h);
    const float *q = a->q + (size_t)i * a->ldq + (size_t)h * D;
    const float *k = kv_at(a, a->k, g), *v = kv_at(a, a->v, g);
    /* keys in query i's future are masked below: no product for them */
    const int last = a->causal_past >= 0 ? a->causal_past + i : TK - 1;
    const int seen = last + 1 < TK ? last + 1 : TK;
    step_scores(q, k, a->ldk, D, seen, a->scale, s);
    for (int j = seen < 0 ? 0 : seen; j < TK; j++) s[j] = 0.0f;
    mask_softmax_row(a, h, i, TK, 1.0f, s);
    float *o = a->out + (size_t)i * a->ldo + (size_t)h * D;
    int d0 = 0;
    while (d0 + 16 <= D) { /* up to four vectors of d per pass over the keys */
        const int nv = (D - d0) / 16 < 4 ? (D - d0) / 16 : 4;
        tp_v16f acc[4] = {tp_v_set1(0.0f), tp_v_set1(0.0f), tp_v_set1(0.0f), tp_v_set1(0.0f)};
        for (int j = 0; j < TK; j++) {
            if (s[j] == 0.0f) continue;
            const tp_v16f p = tp_v_set1(s[j]);
            const float *vr = v + (size_t)j * a->ldv + d0;
            _Pragma("GCC unroll 4")
            for (int u = 0; u < 4; u++)
                if (u < nv) acc[u] += p * tp_v_load(vr + 16 * u);
        }
        _Pragma("GCC unroll 4")
        for (int u = 0; u < 4; u++)
            if (u < nv) tp_v_store(o + d0 + 16 * u, acc[u]);
        d0 += 16 * nv;
    }
    for (; d0 < D; d0++) {
        float acc = 0.0f;
        for (int j = 0; j < TK; j++) acc += s[j] * v[(size_t)j * a->ldv + d0];
        o[d0] = acc;
    }
}

/* Work items [begin, end) of (head, query row), head-major; s: tk floats. */
TP_SIMD_INLINE void step_items_body(const tp__attn_args *a, int tk, int begin, int end,
                                    float *s) {
    for (int it = begin; it < end; it++) step_row(a, tk, it / a->tq, it % a->tq, s);
}
TP_SIMD_DISPATCH(void, step_items, (const tp__attn_args *a, int tk, int begin, int end, float *s),
                 (a, tk, begin, end, s))

/* ---------------------------------------------------------------- fused path */

/* In-place transpose of the 16×16 block r. One step per bit b of the index: rows i and
 * i + 2^b (bit b of i clear) trade the lanes whose bit b differs from their row's,
 * which swaps bit b of every element's row and column. */
TP_SIMD_INLINE void swap_lanes(tp_v16f *x, tp_v16f *y, tp_v16i lo, tp_v16i hi) {
    const tp_v16f x0 = *x;
    *x = __builtin_shuffle(x0, *y, lo);
    *y = __builtin_shuffle(x0, *y, hi);
}
TP_SIMD_INLINE void transpose16(tp_v16f r[16]) {
    const tp_v16i lo1 = {0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30},
                  lo2 = {0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29},
                  lo4 = {0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27},
                  lo8 = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    /* hi: the lanes lo leaves out, in the same places */
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 16; i++)
        if (!(i & 1)) swap_lanes(&r[i], &r[i + 1], lo1, lo1 + 1);
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 16; i++)
        if (!(i & 2)) swap_lanes(&r[i], &r[i + 2], lo2, lo2 + 2);
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 16; i++)
        if (!(i & 4)) swap_lanes(&r[i], &r[i + 4], lo4, lo4 + 4);
    _Pragma("GCC unroll 16")
    for (int i = 0; i < 16; i++)
        if (!(i & 8)) swap_lanes(&r[i], &r[i + 8], lo8, lo8 + 8);
}

/* kt[d][j] = k[j][h·D + d] for j < tk, 0 up to the padded width tkp. By 16×16 blocks
 * transposed in registers: element by element, every store of the strided copy went
 * to another cache line. */
TP_SIMD_INLINE void pack_kt(const tp__attn_args *a, int h, int tk, int tkp, float *kt) {
    const int D = a->head_dim, D16 = D / 16 * 16, tk16 = tk / 16 * 16;
    const float *k = kv_at(a, a->k, kv_head(a, h));
    for (int j = 0; j < tk16; j += 16)
        for (int d = 0; d < D16; d += 16) {
            tp_v16f r[16];
            _Pragma("GCC unroll 16")
            for (int u = 0; u < 16; u++) r[u] = tp_v_load(k + (size_t)(j + u) * a->ldk + d);
            transpose16(r);
            _Pragma("GCC unroll 16")
            for (int u = 0; u < 16; u++) tp_v_store(kt + (size_t)(d + u) * tkp + j, r[u]);
        }
    for (int j = 0; j < tk; j++) {
        const float *kr = k + (size_t)j * a->ldk;
        for (int d = j < tk16 ? D16 : 0; d < D; d++) kt[(size_t)d * tkp + j] = kr[d];
    }
    for (int d = 0; d < D; d++)
        for (int j = tk; j < tkp; j++) kt[(size_t)d * tkp + j] = 0.0f;
}

/* One tile: query rows i0.. i0+QB (rows past tq repeat the last one and are not
 * stored) of head h against keys [0, tk), into the output. s: QB×tkp scratch. */
TP_SIMD_INLINE void tile(const tp__attn_args *a, int h, int i0, int tk, int tkp, const float *kt,
                         float *s) {
    const int D = a->head_dim, TQ = a->tq;
    const float *q[QB];
    _Pragma("GCC unroll 8")
    for (int r = 0; r < QB; r++)
        q[r] = a->q + (size_t)(i0 + r < TQ ? i0 + r : TQ - 1) * a->ldq + (size_t)h * D;

    /* scores: s[r][j] = (Σ_d q[r][d]·k[j][d])·scale */
    const tp_v16f scale = tp_v_set1(a->scale);
    for (int j = 0; j < tkp; j += KB) {
        tp_v16f acc[QB][2];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < QB; r++) acc[r][0] = acc[r][1] = tp_v_set1(0.0f);
        for (int d = 0; d < D; d++) {
            const tp_v16f k0 = tp_v_load(kt + (size_t)d * tkp + j);
            const tp_v16f k1 = tp_v_load(kt + (size_t)d * tkp + j + 16);
            _Pragma("GCC unroll 8")
            for (int r = 0; r < QB; r++) {
                const tp_v16f qv = tp_v_set1(q[r][d]);
                acc[r][0] += qv * k0;
                acc[r][1] += qv * k1;
            }
        }
        _Pragma("GCC unroll 8")
        for (int r = 0; r < QB; r++) {
            tp_v_store(s + (size_t)r * tkp + j, acc[r][0] * scale);
            tp_v_store(s + (size_t)r * tkp + j + 16, acc[r][1] * scale);
        }
    }

    const int rows = TQ - i0 < QB ? TQ - i0 : QB;
    for (int r = 0; r < rows; r++) mask_softmax_row(a, h, i0 + r, tk, 1.0f, s + (size_t)r * tkp);

    /* out[r][d] = Σ_j p[r][j]·v[j][d], two vectors of d at a time, then a scalar tail */
    const float *v = kv_at(a, a->v, kv_head(a, h));
    int d0 = 0;
    for (; d0 + 32 <= D; d0 += 32) {
        tp_v16f acc[QB][2];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < QB; r++) acc[r][0] = acc[r][1] = tp_v_set1(0.0f);
        for (int j = 0; j < tk; j++) {
            const float *vr = v + (size_t)j * a->ldv + d0;
            const tp_v16f v0 = tp_v_load(vr), v1 = tp_v_load(vr + 16);
            _Pragma("GCC unroll 8")
            for (int r = 0; r < QB; r++) {
                const tp_v16f p = tp_v_set1(s[(size_t)r * tkp + j]);
                acc[r][0] += p * v0;
                acc[r][1] += p * v1;
            }
        }
        for (int r = 0; r < rows; r++) {
            float *o = a->out + (size_t)(i0 + r) * a->ldo + (size_t)h * D + d0;
            tp_v_store(o, acc[r][0]);
            tp_v_store(o + 16, acc[r][1]);
        }
    }
    for (; d0 + 16 <= D; d0 += 16) {
        tp_v16f acc[QB];
        _Pragma("GCC unroll 8")
        for (int r = 0; r < QB; r++) acc[r] = tp_v_set1(0.0f);
        for (int j = 0; j < tk; j++) {
            const tp_v16f v0 = tp_v_load(v + (size_t)j * a->ldv + d0);
            _Pragma("GCC unroll 8")
            for (int r = 0; r < QB; r++) acc[r] += tp_v_set1(s[(size_t)r * tkp + j]) * v0;
        }
        for (int r = 0; r < rows; r++)
            tp_v_store(a->out + (size_t)(i0 + r) * a->ldo + (size_t)h * D + d0, acc[r]);
    }
    for (; d0 < D; d0++)
        for (int r = 0; r < rows; r++) {
            float acc = 0.0f;
            for (int j = 0; j < tk; j++) acc += s[(size_t)r * tkp + j] * v[(size_t)j * a->ldv + d0];
            a->out[(size_t)(i0 + r) * a->ldo + (size_t)h * D + d0] = acc;
        }
}

/* Work items [begin, end) of (head, query block), head-major; kt is repacked only
 * when the key head changes. */
TP_SIMD_INLINE void fused_items_body(const tp__attn_args *a, int tk, int begin, int end,
                                     float *scratch) {
    const int nqb = (a->tq + QB - 1) / QB, tkp = (tk + KB - 1) / KB * KB;
    float *kt = scratch, *s = scratch + (size_t)a->head_dim * tkp;
    int packed = -1;
    for (int it = begin; it < end; it++) {
        const int h = it / nqb, qb = it % nqb;
        if (kv_head(a, h) != packed) {
            pack_kt(a, h, tk, tkp, kt);
            packed = kv_head(a, h);
        }
        tile(a, h, qb * QB, tk, tkp, kt, s);
    }
}
TP_SIMD_DISPATCH(void, fused_items,
                 (const tp__attn_args *a, int tk, int begin, int end, float *scratch),
                 (a, tk, begin, end, scratch))

/* ---------------------------------------------------------------- bf16 path */

/* Score rows [begin, end) of all heads (head-major, row stride tk), unscaled: scaled,
 * masked and soft-maxed in place. */
TP_SIMD_INLINE void softmax_items_body(const tp__attn_args *a, int tk, float *scores, int begin,
                                       int end) {
    for (int it = begin; it < end; it++)
        mask_softmax_row(a, it / a->tq, it % a->tq, tk, a->scale, scores + (size_t)it * tk);
}
TP_SIMD_DISPATCH(void, softmax_items,
                 (const tp__attn_args *a, int tk, float *scores, int begin, int end),
                 (a, tk, scores, begin, end))

static int bf16_eligible(const tp__attn_args *a) {
    return a->bf16 && a->tq >= FUSED_MIN_TQ && !a->rows_apart &&
           (a->kv_heads <= 0 || a->kv_heads == a->n_heads);
}

/* One row in bf16 through the backend: scores = q·kᵀ of every head in one batched
 * product, the masks and softmax here in fp32, then out = p·v in another. tk: the keys
 * past the right padding left out (plan_row). TP_ERR_UNSUPPORTED, before anything is
 * written, where the backend has no bf16 product for it. */
static tp_status bf16_row(const tp__backend *be, const tp__attn_args *a, int tk, float *scores,
                          int threads, tp_error *err) {
    const int NH = a->n_heads, D = a->head_dim, TQ = a->tq;
    const int64_t kv_stride = a->head_stride ? (int64_t)a->head_stride : D;
    tp_matmul_args qk = {
        .struct_size = sizeof qk, .m = TQ, .n = tk, .k = D,
        .a = a->q, .lda = a->ldq, .stride_a = D,
        .b = a->k, .ldb = a->ldk, .stride_b = kv_stride, .trans_b = 1,
        .c = scores, .ldc = tk, .stride_c = (int64_t)TQ * tk,
        .batch = NH, .alpha = 1.0f,
    };
    TP_TRY(tp__matmul_bf16(be, &qk, err));
    const int items = NH * TQ;
    if (threads > items) threads = items;
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int begin, end;
        tp__thread_share(items, &begin, &end);
        softmax_items(a, tk, scores, begin, end);
    }
    tp_matmul_args pv = {
        .struct_size = sizeof pv, .m = TQ, .n = D, .k = tk,
        .a = scores, .lda = tk, .stride_a = (int64_t)TQ * tk,
        .b = a->v, .ldb = a->ldv, .stride_b = kv_stride, .trans_b = 0,
        .c = a->out, .ldc = a->ldo, .stride_c = D,
        .batch = NH, .alpha = 1.0f,
    };
    const tp_status st = tp__matmul_bf16(be, &pv, err);
    if (st == TP_ERR_UNSUPPORTED) /* it took the first: a change of mind is a failure */
        return tp__error(err, TP_ERR_BACKEND, "attention: the backend's bf16 matmul took q·kᵀ "
                                              "but refused p·v");
    return st;
}

/* ---------------------------------------------------------------- both */

/* What one row needs: its keys (right padding left out), path, work items, scratch. */
typedef struct row_plan {
    int tk, fused, items;
    size_t scratch;
} row_plan;

static row_plan plan_row(const tp__attn_args *a) {
    row_plan p = {0, 0, 0, 0};
    if (a->tq <= 0 || a->n_heads <= 0 || a->head_dim <= 0 || a->tk <= 0) return p;
    int tk = a->tk;
    if (a->key_mask && a->causal_past < 0) {
        /* trailing hidden keys (right padding) get weight exactly 0: leave them out,
         * unless every key is hidden (then softmax spreads evenly over all of them) */
        int last = tk - 1;
        while (last >= 0 && a->key_mask[last] < -0.5f * FLT_MAX) last--;
        if (last >= 0) tk = last + 1;
    }
    const int tkp = (tk + KB - 1) / KB * KB;
    p.tk = tk;
    p.fused = a->tq >= FUSED_MIN_TQ && !a->rows_apart;
    p.items = p.fused ? a->n_heads * ((a->tq + QB - 1) / QB) : a->n_heads * a->tq;
    p.scratch = p.fused ? ((size_t)a->head_dim + QB) * (size_t)tkp : (size_t)tk;
    return p;
}

void tp__heads_major(const float *x, int S, int NH, int D, float *out) {
    for (int h = 0; h < NH; h++)
        for (int t = 0; t < S; t++)
            memcpy(out + ((size_t)h * S + t) * D, x + ((size_t)t * NH + h) * D,
                   (size_t)D * sizeof(float));
}

tp_status tp__project_heads_major(const tp__backend *be, const float *x, int nsrc, int S, int k,
                                  const float *w, const float *b, int NH, int D, float *scratch,
                                  float *out, tp_error *err) {
    const size_t per = (size_t)S * NH * D;
    TP_TRY(tp__linear(be, x, nsrc * S, k, w, b, NH * D, TP_ACT_NONE, scratch, err));
    for (int n = 0; n < nsrc; n++) tp__heads_major(scratch + n * per, S, NH, D, out + n * per);
    return TP_OK;
}

int tp__source_run(const int *src, int b, int B) {
    int end = b + 1;
    while (src && end < B && src[end] == src[b]) end++;
    return end;
}

tp_status tp__cross_attention(const tp__backend *be, const tp__attn_args *first, const int *src,
                              int B, int n, tp__attn_args *rows, tp_error *err) {
    const size_t per_source =
        (size_t)(first->kv_heads > 0 ? first->kv_heads : first->n_heads) * first->head_stride;
    int runs = 0;
    for (int b = 0, end; b < B; b = end, runs++) {
        end = tp__source_run(src, b, B);
        const size_t s = (size_t)(src ? src[b] : b);
        tp__attn_args *a = &rows[runs];
        *a = *first;
        a->tq = (end - b) * n, a->rows_apart = end - b > 1;
        a->q += (size_t)b * n * first->ldq, a->out += (size_t)b * n * first->ldo;
        a->k += s * per_source, a->v += s * per_source;
        if (a->key_mask) a->key_mask += s * (size_t)first->tk;
    }
    return tp__attention_rows(be, rows, runs, err);
}

tp_status tp__attention(const tp__backend *be, const tp__attn_args *a, tp_error *err) {
    return tp__attention_rows(be, a, 1, err);
}

static tp_status attention_rows(const tp__backend *be, const tp__attn_args *rows, int n,
                                tp_error *err);

tp_status tp__attention_rows(const tp__backend *be, const tp__attn_args *rows, int n,
                             tp_error *err) {
    const uint64_t t0 = tp__profile_start();
    const tp_status st = attention_rows(be, rows, n, err);
    tp__profile_stop(TP_PROFILE_ATTENTION, t0, 0);
    return st;
}

/* Every row in bf16 (bf16_row); TP_ERR_UNSUPPORTED, with nothing written, when a row
 * is not eligible or the backend declines the first. */
static tp_status bf16_rows(const tp__backend *be, const tp__attn_args *rows, int n,
                           tp_error *err) {
    size_t most = 0;
    for (int r = 0; r < n; r++) {
        if (!bf16_eligible(&rows[r])) return TP_ERR_UNSUPPORTED;
        const size_t need = (size_t)rows[r].n_heads * rows[r].tq * rows[r].tk;
        if (!rows[r].scores && need > most) most = need;
    }
    float *own = most ? malloc(most * sizeof(float)) : NULL;
    if (most && !own)
        return tp__error(err, TP_ERR_NOMEM, "attention: out of memory for %zu scores", most);
    const int threads = tp__backend_threads(be);
    tp_status st = TP_OK;
    for (int r = 0; r < n && st == TP_OK; r++) {
        const row_plan p = plan_row(&rows[r]);
        if (!p.items) continue;
        st = bf16_row(be, &rows[r], p.tk, rows[r].scores ? rows[r].scores : own, threads, err);
        if (st == TP_ERR_UNSUPPORTED && r > 0)
            st = tp__error(err, TP_ERR_BACKEND, "attention: the backend's bf16 matmul took "
                                                "row 0 but refused row %d", r);
    }
    free(own);
    return st;
}

static tp_status attention_rows(const tp__backend *be, const tp__attn_args *rows, int n,
                                tp_error *err) {
    if (n <= 0) return TP_OK;
    if (rows[0].bf16) {
        const tp_status st = bf16_rows(be, rows, n, err);
        if (st != TP_ERR_UNSUPPORTED) return st;
    }
    /* a beam search's or a small batch's plans on the stack; larger batches allocate */
    row_plan few[16], *plan = n <= 16 ? few : malloc((size_t)n * sizeof *plan);
    if (!plan) return tp__error(err, TP_ERR_NOMEM, "attention: out of memory for %d rows", n);
    int items = 0, all_fused = 1;
    size_t scratch = 0;
    int64_t step_work = 0;
    for (int r = 0; r < n; r++) {
        plan[r] = plan_row(&rows[r]);
        items += plan[r].items;
        all_fused &= plan[r].fused || !plan[r].items;
        scratch = plan[r].scratch > scratch ? plan[r].scratch : scratch;
        if (!plan[r].fused) step_work += (int64_t)plan[r].items * plan[r].tk * rows[r].head_dim;
    }
    int threads = tp__backend_threads(be);
    if (threads > items) threads = items;
    /* a decoding step's few thousand multiply-adds do not pay for waking a team */
    if (!all_fused && step_work < STEP_MIN_PARALLEL) threads = 1;
    int failed = 0;
    (void)threads;
#pragma omp parallel num_threads(threads) if (threads > 1) reduction(| : failed)
    {
        /* this thread's share of the items of all rows, numbered row after row */
        int begin, end;
        tp__thread_share(items, &begin, &end);
        float *buf = begin < end ? malloc(scratch * sizeof(float)) : NULL;
        if (begin < end && !buf) failed = 1;
        for (int r = 0, first = 0; buf && r < n && first < end; first += plan[r].items, r++) {
            const int lo = begin > first ? begin - first : 0;
            const int hi = end - first < plan[r].items ? end - first : plan[r].items;
            if (lo >= hi) continue;
            if (plan[r].fused)
                fused_items(&rows[r], plan[r].tk, lo, hi, buf);
            else
                step_items(&rows[r], plan[r].tk, lo, hi, buf);
        }
        free(buf);
    }
    if (plan != few) free(plan);
    if (failed)
        return tp__error(err, TP_ERR_NOMEM, "attention: out of memory for %zu floats of scratch",
                         scratch);
    return TP_OK;
}
