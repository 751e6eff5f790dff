// AVX-512 kernels for bitsandbytes' LLM.int8 row-wise codec (the avx512 CPU target). They must
// give the bytes of the scalar rows in bnb_int8.cpp: the same float32 operations per element in
// the same order (flush, multiply, flush, round half to even), and the same NaN rule (a zero row's
// 0 * Inf becomes code 0).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's _mm512_undefined_* false positive
#endif
#include <cstdint>

#include "formats/bnb_int8_rows.h"
#include "kernels/cpu/bnb_avx512.h"
#include "kernels/cpu/simd_kernels.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/gpu_rcp_approx.h"

namespace lowbit::bnb::detail {
namespace {

#ifdef LOWBIT_BNB_HAVE_AVX512
using namespace avx512;

// The lanes of the 16 columns from c that lie inside the row.
inline __mmask16 lanes_in_row(int64_t c, int64_t cols) {
  return cols - c >= 16 ? __mmask16(0xffff) : __mmask16((1u << (cols - c)) - 1);
}

// Two passes over the row (it stays in L1): SCB = max |x|, then the codes.
LOWBIT_AVX512 int64_t quantize_int8_rows_avx512(DType dtype, const std::byte* input, int64_t cols, int64_t first_row,
                                                int64_t last_row, int8_t* cb, float* scb) {
  const size_t element_size = dtype_size(dtype);
  for (int64_t r = first_row; r < last_row; ++r) {
    const std::byte* row = input + size_t(r * cols) * element_size;
    __m512 max_magnitude = _mm512_setzero_ps();
    for (int64_t c = 0; c < cols; c += 16) {
      _mm_prefetch(reinterpret_cast<const char*>(row + size_t(c) * element_size) + kPrefetchBytes, _MM_HINT_T0);
      const __m512 x = load16_as_f32(dtype, row + size_t(c) * element_size, lanes_in_row(c, cols));
      if (const __mmask16 bad = non_finite16(x)) return r * cols + c + __builtin_ctz(bad);
      max_magnitude = _mm512_max_ps(max_magnitude, _mm512_abs_ps(flush_subnormal16(x)));
    }
    scb[r] = _mm512_reduce_max_ps(max_magnitude);  // lanes >= 0, finite: the order does not matter
    const __m512 scale = _mm512_set1_ps(gpu::div_approx_ftz(127.0f, scb[r]));  // +Inf for a zero row
    int8_t* codes = cb + r * cols;
    for (int64_t c = 0; c < cols; c += 16) {
      const __mmask16 lanes = lanes_in_row(c, cols);
      const __m512 x = load16_as_f32(dtype, row + size_t(c) * element_size, lanes);
      const __m512 v = flush_subnormal16(_mm512_mul_ps(flush_subnormal16(x), scale));  // mul.ftz
      // Rounds half to even (the MXCSR default, as nearbyint); NaN lanes (0 * Inf) give code 0.
      const __mmask16 is_number = _mm512_cmp_ps_mask(v, v, _CMP_ORD_Q);
      _mm512_mask_cvtepi32_storeu_epi8(codes + c, lanes, _mm512_maskz_cvtps_epi32(is_number, v));
    }
  }
  return -1;
}

// 16 codes from `codes` (lanes outside `lanes` read as 0) as float32 (float(CB) * SCB) * 1/127.
LOWBIT_AVX512 inline __m512 dequantize16(const int8_t* codes, __m512 row_scale, __mmask16 lanes = 0xffff) {
  const __m512i widened = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(lanes, codes));
  return _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(widened), row_scale), _mm512_set1_ps(kInt8DequantScale));
}

template <bool kStream>
LOWBIT_AVX512 void dequantize_rows_half(const int8_t* cb, const float* scb, int64_t cols, int64_t first_row,
                                        int64_t last_row, DType out_dtype, uint16_t* out) {
  for (int64_t r = first_row; r < last_row; ++r) {
    const __m512 row_scale = _mm512_set1_ps(scb[r]);
    const int8_t* codes = cb + r * cols;
    uint16_t* destination = out + r * cols;
    int64_t c = 0;
    for (; c + 32 <= cols; c += 32) {  // 32 outputs: one 64-byte store
      _mm_prefetch(reinterpret_cast<const char*>(codes + c) + kPrefetchBytes, _MM_HINT_T0);
      const __m256i low = to_half16(out_dtype, dequantize16(codes + c, row_scale));
      const __m256i high = to_half16(out_dtype, dequantize16(codes + c + 16, row_scale));
      store64<kStream>(destination + c, _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1));
    }
    for (; c < cols; c += 16) {  // the row's tail (never with streaming: rows are whole lines then)
      const __mmask16 lanes = lanes_in_row(c, cols);
      _mm256_mask_storeu_epi16(destination + c, lanes, to_half16(out_dtype, dequantize16(codes + c, row_scale, lanes)));
    }
  }
}

template <bool kStream>
LOWBIT_AVX512 void dequantize_rows_f32(const int8_t* cb, const float* scb, int64_t cols, int64_t first_row,
                                       int64_t last_row, float* out) {
  for (int64_t r = first_row; r < last_row; ++r) {
    const __m512 row_scale = _mm512_set1_ps(scb[r]);
    const int8_t* codes = cb + r * cols;
    float* destination = out + r * cols;
    int64_t c = 0;
    for (; c + 16 <= cols; c += 16) store64<kStream>(destination + c, _mm512_castps_si512(dequantize16(codes + c, row_scale)));
    if (c < cols) {
      const __mmask16 lanes = lanes_in_row(c, cols);
      _mm512_mask_storeu_ps(destination + c, lanes, dequantize16(codes + c, row_scale, lanes));
    }
  }
}

LOWBIT_AVX512 void dequantize_int8_rows_avx512(const int8_t* cb, const float* scb, int64_t cols, int64_t first_row,
                                               int64_t last_row, DType out_dtype, std::byte* out, bool stream) {
  if (out_dtype == DType::f32) {
    float* destination = reinterpret_cast<float*>(out);
    if (stream) dequantize_rows_f32<true>(cb, scb, cols, first_row, last_row, destination);
    else dequantize_rows_f32<false>(cb, scb, cols, first_row, last_row, destination);
  } else {
    uint16_t* destination = reinterpret_cast<uint16_t*>(out);
    if (stream) dequantize_rows_half<true>(cb, scb, cols, first_row, last_row, out_dtype, destination);
    else dequantize_rows_half<false>(cb, scb, cols, first_row, last_row, out_dtype, destination);
  }
  if (stream) _mm_sfence();  // non-temporal stores are weakly ordered: fence before reporting done
}
#endif

}  // namespace

QuantizeInt8RowsFn avx512_quantize_int8_rows() { return LOWBIT_BNB_AVX512_OR_NULL(quantize_int8_rows_avx512); }

DequantizeInt8RowsFn avx512_dequantize_int8_rows() { return LOWBIT_BNB_AVX512_OR_NULL(dequantize_int8_rows_avx512); }

}  // namespace lowbit::bnb::detail
