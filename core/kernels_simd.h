/* kernels_simd.h: the vector math of the fp32 kernels (exp, the GELU/SiLU
 * activations, softmax and row sums), written once on 16-float GNU C vectors and
 * compiled per ISA by the caller: a function marked TP_SIMD_AVX512 / TP_SIMD_AVX2 that
 * inlines these gets zmm / ymm code, a plain one gets SSE2, and TP_SIMD_DISPATCH
 * picks the widest the CPU runs. Header-only (static inline) so that a backend module
 * can use it without linking the core. Pure functions: thread-safe.
 *
 * Accuracy (checked against double precision by tests/unit/test_kernels.c):
 *   tp_v_exp      ≤ 2 ulp; exactly 0 below -87.3 (never a denormal), +inf past 88.7
 *   GELU (erf)    within 1e-6 relative of x·Φ(x) for x >= 0; for x < 0, where
 *                 x·Φ(x) falls to 0, within 4e-7·|x| absolute (the 1.5e-7 bound of
 *                 the erfc approximation below, and float rounding)
 *   GELU (tanh)   within 1e-6 relative for x >= 0, (1 + |y|/2)·1e-6 for x < 0 (float's
 *                 rounding of y = c(x + 0.044715x³), amplified by e^{2y})
 *   SiLU          within 1e-6 relative */
#ifndef TP_CORE_KERNELS_SIMD_H
#define TP_CORE_KERNELS_SIMD_H

#include <stdint.h>
#include <string.h>

/* 64-byte vectors only ever cross inlined calls here, never an ABI boundary: GCC's
 * note that their passing convention depends on AVX-512 does not apply (it stays
 * off for the file that includes this). */
#pragma GCC diagnostic ignored "-Wpsabi"

typedef float tp_v16f __attribute__((vector_size(64)));
typedef int32_t tp_v16i __attribute__((vector_size(64)));

#define TP_SIMD_INLINE static inline __attribute__((always_inline))
/* with fma, GCC's -ffp-contract=fast (gnu11) fuses a*b+c: results differ from the
 * SSE2 path in the last bit only */
#define TP_SIMD_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
#define TP_SIMD_AVX2 __attribute__((target("avx2,fma")))

/* 2: AVX-512F, 1: AVX2+FMA, 0: baseline x86-64 (or another architecture). */
static inline int tp_simd_level(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return 1;
#endif
    return 0;
}

/* Defines the function NAME(PARAMS) that calls NAME##_body(ARGS) compiled for the
 * widest ISA the CPU has. The body must be TP_SIMD_INLINE. */
#if defined(__x86_64__) || defined(__i386__)
#define TP_SIMD_DISPATCH(ret, name, params, args)                                     \
    TP_SIMD_AVX512 static ret name##_avx512 params { return name##_body args; }      \
    TP_SIMD_AVX2 static ret name##_avx2 params { return name##_body args; }          \
    static ret name##_base params { return name##_body args; }                       \
    static ret name params {                                                          \
        switch (tp_simd_level()) {                                                    \
        case 2: return name##_avx512 args;                                            \
        case 1: return name##_avx2 args;                                              \
        default: return name##_base args;                                             \
        }                                                                             \
    }
#else
#define TP_SIMD_DISPATCH(ret, name, params, args) \
    static ret name params { return name##_body args; }
#endif

TP_SIMD_INLINE tp_v16f tp_v_load(const float *p) {
    tp_v16f v;
    memcpy(&v, p, sizeof v);
    return v;
}
TP_SIMD_INLINE void tp_v_store(float *p, tp_v16f v) { memcpy(p, &v, sizeof v); }
TP_SIMD_INLINE tp_v16f tp_v_set1(float x) {
    /* a shuffle of lane 0, not a 16-element initializer: GCC builds the latter lane
     * by lane with masked moves; this is one broadcast */
    const tp_v16f v = {x};
    return __builtin_shuffle(v, (tp_v16i){0});
}
/* m ? a : b per lane, m a comparison's lane mask */
TP_SIMD_INLINE tp_v16f tp_v_select(tp_v16i m, tp_v16f a, tp_v16f b) {
    return (tp_v16f)((m & (tp_v16i)a) | (~m & (tp_v16i)b));
}
TP_SIMD_INLINE tp_v16f tp_v_abs(tp_v16f x) { return (tp_v16f)((tp_v16i)x & 0x7fffffff); }
TP_SIMD_INLINE float tp_v_hsum(tp_v16f v) {
    /* pairwise in a fixed order: the result does not depend on the ISA */
    float s[16];
    memcpy(s, &v, sizeof s);
    for (int w = 8; w > 0; w /= 2)
        for (int i = 0; i < w; i++) s[i] += s[i + w];
    return s[0];
}
TP_SIMD_INLINE float tp_v_hmax(tp_v16f v) {
    float s[16];
    memcpy(s, &v, sizeof s);
    float m = s[0];
    for (int i = 1; i < 16; i++) m = s[i] > m ? s[i] : m;
    return m;
}

/* exp(x): x = n·ln2 + r with |r| ≤ ln2/2 (Cody-Waite, two-part ln2), e^r by its
 * degree-7 Taylor polynomial (truncation 5e-9 relative), 2^n built in the exponent. */
TP_SIMD_INLINE tp_v16f tp_v_exp(tp_v16f x) {
    const tp_v16f hi = tp_v_set1(88.72283172607421875f), lo = tp_v_set1(-87.33654022216796875f);
    const tp_v16i under = x < lo, over = x > hi;
    x = tp_v_select(over, hi, x);
    x = tp_v_select(under, lo, x);
    /* round to nearest by the 1.5·2^23 trick: exact for |n| < 2^22 */
    const tp_v16f magic = tp_v_set1(12582912.0f);
    tp_v16f n = x * tp_v_set1(1.44269504088896341f) + magic;
    n = n - magic;
    tp_v16f r = x - n * tp_v_set1(0.693145751953125f);
    r = r - n * tp_v_set1(1.428606765330187045e-06f);
    tp_v16f p = tp_v_set1(1.0f / 5040.0f);
    p = p * r + tp_v_set1(1.0f / 720.0f);
    p = p * r + tp_v_set1(1.0f / 120.0f);
    p = p * r + tp_v_set1(1.0f / 24.0f);
    p = p * r + tp_v_set1(1.0f / 6.0f);
    p = p * r + tp_v_set1(0.5f);
    p = p * r + tp_v_set1(1.0f);
    p = p * r + tp_v_set1(1.0f);
    /* n in [-126, 128]: 2^n as two factors so that n = 128 (x near the top) works */
    const tp_v16i ni = __builtin_convertvector(n, tp_v16i);
    const tp_v16i h = ni >> 1;
    const tp_v16f s1 = (tp_v16f)((h + 127) << 23), s2 = (tp_v16f)((ni - h + 127) << 23);
    p = p * s1 * s2;
    p = tp_v_select(over, tp_v_set1(__builtin_inff()), p);
    return tp_v_select(under, tp_v_set1(0.0f), p);
}

/* x·Φ(x) = 0.5·x·(1 + erf(x/√2)) with erfc(|z|) = t·P(t)·e^{-z²}, z = x/√2,
 * t = 1/(1 + p|z|), Abramowitz & Stegun's 7.1.26 (error of erfc ≤ 1.5e-7 absolute
 * on all of z ≥ 0), taken as the small term itself when x < 0 so that the tail never
 * suffers 1 - (1 - erfc) cancellation. One formula over the whole range: a Taylor
 * series for |z| < 1 beside it (both computed for every lane) had cost 40% more for
 * a relative error of 1.6e-7 instead of 6e-7 near 0, below anything a product of
 * float inputs resolves. */
TP_SIMD_INLINE tp_v16f tp_v_gelu(tp_v16f x) {
    const tp_v16f z = x * tp_v_set1(0.70710678118654752f);
    const tp_v16f az = tp_v_abs(z);
    const tp_v16f t = tp_v_set1(1.0f) / (tp_v_set1(1.0f) + tp_v_set1(0.3275911f) * az);
    tp_v16f p = tp_v_set1(1.061405429f);
    p = p * t + tp_v_set1(-1.453152027f);
    p = p * t + tp_v_set1(1.421413741f);
    p = p * t + tp_v_set1(-0.284496736f);
    p = p * t + tp_v_set1(0.254829592f);
    const tp_v16f erfc = p * t * tp_v_exp(-(z * z));
    /* x >= 0: 0.5·x·(2 - erfc); x < 0: 0.5·x·erfc */
    return tp_v_set1(0.5f) * x * tp_v_select(x < tp_v_set1(0.0f), erfc, tp_v_set1(2.0f) - erfc);
}

/* 0.5·x·(1 + tanh(y)) with 1 + tanh(y) = 2 - 2/(e^{2y} + 1) for y >= 0 and
 * 2/(e^{2|y|} + 1) for y < 0: no overflow and no cancellation. */
TP_SIMD_INLINE tp_v16f tp_v_gelu_tanh(tp_v16f x) {
    const tp_v16f y = tp_v_set1(0.7978845608028654f) * (x + tp_v_set1(0.044715f) * x * x * x);
    const tp_v16f e = tp_v_exp(tp_v_set1(2.0f) * tp_v_abs(y));
    const tp_v16f q = tp_v_set1(2.0f) / (e + tp_v_set1(1.0f));
    const tp_v16f one_plus = tp_v_select(y < tp_v_set1(0.0f), q, tp_v_set1(2.0f) - q);
    return tp_v_set1(0.5f) * x * one_plus;
}

TP_SIMD_INLINE tp_v16f tp_v_silu(tp_v16f x) {
    return x / (tp_v_set1(1.0f) + tp_v_exp(-x));
}

/* max of row[0..n) (-inf when n is 0) */
TP_SIMD_INLINE float tp_v_row_max(const float *row, int n) {
    int i = 0;
    tp_v16f vmax = tp_v_set1(-__builtin_inff());
    for (; i + 16 <= n; i += 16) {
        const tp_v16f v = tp_v_load(row + i);
        vmax = tp_v_select(v > vmax, v, vmax);
    }
    float max = tp_v_hmax(vmax);
    for (; i < n; i++) max = row[i] > max ? row[i] : max;
    return max;
}

/* In-place softmax of row[0..n) whose max is known (a masking pass may find it on its
 * way): e^(x - max) with its sum (16 partial sums), then · 1/sum. */
TP_SIMD_INLINE void tp_v_softmax_row_with_max(float *row, int n, float max) {
    int i;
    const tp_v16f vm = tp_v_set1(max);
    tp_v16f acc = tp_v_set1(0.0f);
    for (i = 0; i + 16 <= n; i += 16) {
        const tp_v16f e = tp_v_exp(tp_v_load(row + i) - vm);
        tp_v_store(row + i, e);
        acc += e;
    }
    /* the tail joins the lanes before they are summed (its missing lanes are exp(-inf)
     * = +0): element j always adds into lane j % 16, so entries that come out exactly 0
     * (masked keys, a batch's padding) leave the sum's bits alone whatever n is */
    if (i < n) {
        float tail[16];
        for (int j = 0; j < 16; j++) tail[j] = i + j < n ? row[i + j] - max : -__builtin_inff();
        const tp_v16f e = tp_v_exp(tp_v_load(tail));
        tp_v_store(tail, e);
        acc += e;
        for (int j = 0; i + j < n; j++) row[i + j] = tail[j];
    }
    const float sum = tp_v_hsum(acc);
    const float inv = 1.0f / sum;
    const tp_v16f vinv = tp_v_set1(inv);
    for (i = 0; i + 16 <= n; i += 16) tp_v_store(row + i, tp_v_load(row + i) * vinv);
    for (; i < n; i++) row[i] *= inv;
}

/* In-place softmax of row[0..n): max, then as above, as torch.softmax computes it. */
TP_SIMD_INLINE void tp_v_softmax_row(float *row, int n) {
    tp_v_softmax_row_with_max(row, n, tp_v_row_max(row, n));
}

#endif
