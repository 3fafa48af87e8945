/* quantize.h: the per-row int8 quantization of A that every int8 product path of this
 * backend applies (oneDNN's matmul, the few-row kernels, the AMX kernel), written once
 * so that they agree bit for bit: q = round(x / s) (nearest even, saturating), s =
 * max |x| / 127 over the row. Header-only AVX-512 helpers, inlined into each caller
 * (the library is built for the baseline ISA; callers check the CPU first). Pure
 * functions: thread-safe. */
#ifndef TP_ONEDNN_QUANTIZE_H
#define TP_ONEDNN_QUANTIZE_H

#include <immintrin.h>

#define QUANT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl"), always_inline))

/* The row's scale into *scale; returns 1/scale in every lane (0 for a row of zeros). */
QUANT_AVX512 static inline __m512 quant_row_inverse(const float *x, int k, float *scale) {
    const int body = k - k % 16;
    __m512 mx = _mm512_setzero_ps();
    for (int i = 0; i < body; i += 16) mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(x + i)));
    if (body < k)
        mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_maskz_loadu_ps((__mmask16)((1u << (k - body)) - 1),
                                                                   x + body)));
    const float amax = _mm512_reduce_max_ps(mx);
    *scale = amax / 127.0f;
    return _mm512_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
}

/* Inputs x[0..16) quantized (only the first `left` read when fewer; the rest 0). */
QUANT_AVX512 static inline __m128i quant_16(const float *x, int left, __m512 inverse) {
    const __mmask16 in = left >= 16 ? 0xffff : (__mmask16)((1u << left) - 1);
    return _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(_mm512_maskz_loadu_ps(in, x), inverse)));
}

#endif
