// AVX-512 kernel for bitsandbytes 4-bit quantization, chosen at run time when the CPU has
// AVX-512F/BW. It must give the bytes of quantize_4bit_blocks_reference (bnb_4bit.cpp): the same
// float32 operations in the same order per element (one IEEE multiply, then comparisons), the
// same .ftz flushing, the same NaN behaviour (ordered comparisons are false for NaN). Only whole
// blocks take this path; a short last block goes through the reference.
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as
// "maybe uninitialized"; a false positive, silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#include "formats/bnb_4bit_blocks.h"

namespace lowbit::bnb::detail {
namespace {

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_AVX512 __attribute__((target("avx512f,avx512bw")))

constexpr int kLanes = 16;

// 16 elements of `dtype` at `p` as float32 (f16 and bf16 widen exactly).
LOWBIT_AVX512 inline __m512 load16_as_f32(DType dtype, const std::byte* p) {
  if (dtype == DType::f32) return _mm512_loadu_ps(p);
  const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (dtype == DType::f16) return _mm512_cvtph_ps(halves);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));  // bf16
}

// Lanes whose exponent field is 0 (zero or subnormal) become a zero of the same sign.
LOWBIT_AVX512 inline __m512 flush_subnormal16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __mmask16 tiny = _mm512_testn_epi32_mask(bits, _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_ps(x, tiny, _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(int(0x80000000u)))));
}

// Lanes holding NaN or Inf (exponent field all ones).
LOWBIT_AVX512 inline __mmask16 non_finite16(__m512 x) {
  const __m512i exponent = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7f800000));
  return _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(0x7f800000));
}

// Per lane: how many of `thresholds` x exceeds (ordered compare: NaN exceeds none).
template <size_t N>
LOWBIT_AVX512 inline __m512i count_exceeded16(__m512 x, const std::array<float, N>& thresholds) {
  __m512i count = _mm512_setzero_si512();
  const __m512i one = _mm512_set1_epi32(1);
  for (float threshold : thresholds) {
    const __mmask16 above = _mm512_cmp_ps_mask(x, _mm512_set1_ps(threshold), _CMP_GT_OQ);
    count = _mm512_mask_add_epi32(count, above, count, one);
  }
  return count;
}

LOWBIT_AVX512 inline __m512i codes16(QuantType type, __m512 x, __m512 scale) {
  const __m512 v = flush_subnormal16(_mm512_mul_ps(x, scale));  // mul.ftz
  if (type == QuantType::nf4) return count_exceeded16(v, tables::kNf4Thresholds);
  const __m512 magnitude = _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7fffffff)));
  const __m512i rank = count_exceeded16(magnitude, tables::kFp4AbsThresholds);
  const __m512i code_of_rank = _mm512_setr_epi32(0, 1, 6, 7, 4, 5, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0);
  const __m512i code = _mm512_permutexvar_epi32(rank, code_of_rank);
  const __mmask16 negative = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
  return _mm512_mask_or_epi32(code, negative, code, _mm512_set1_epi32(8));
}

// 16 codes (one per 32-bit lane) -> 8 bytes, element 2k in the high nibble of byte k.
LOWBIT_AVX512 inline void store_packed16(__m512i codes, uint8_t* out) {
  const __m128i bytes = _mm512_cvtepi32_epi8(codes);  // c0 .. c15
  // As 16-bit words w_k = c_2k | c_2k+1 << 8; byte k = c_2k << 4 | c_2k+1.
  const __m128i high = _mm_and_si128(_mm_slli_epi16(bytes, 4), _mm_set1_epi16(0x00f0));
  const __m128i low = _mm_srli_epi16(bytes, 8);
  const __m128i words = _mm_or_si128(high, low);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(out), _mm_packus_epi16(words, words));
}

LOWBIT_AVX512 int64_t quantize_4bit_blocks_avx512(QuantType type, const TensorView& input, int64_t blocksize,
                                                  int64_t first_block, int64_t last_block, uint8_t* packed,
                                                  float* absmax) {
  const int64_t elements = input.elements();
  const size_t element_size = dtype_size(input.dtype);
  alignas(64) float values[kBlocksizes4bit.back()];
  for (int64_t b = first_block; b < last_block; ++b) {
    const int64_t begin = b * blocksize;
    if (elements - begin < blocksize) {  // the short last block
      const int64_t bad = quantize_4bit_blocks_reference(type, input, blocksize, b, b + 1, packed, absmax);
      if (bad >= 0) return bad;
      continue;
    }
    const std::byte* source = input.bytes.data() + size_t(begin) * element_size;
    __m512 max_magnitude = _mm512_setzero_ps();
    for (int64_t i = 0; i < blocksize; i += kLanes) {
      const __m512 x = load16_as_f32(input.dtype, source + size_t(i) * element_size);
      if (const __mmask16 bad = non_finite16(x)) return begin + i + __builtin_ctz(bad);
      const __m512 flushed = flush_subnormal16(x);
      _mm512_store_ps(values + i, flushed);
      max_magnitude = _mm512_max_ps(max_magnitude, _mm512_abs_ps(flushed));
    }
    absmax[b] = _mm512_reduce_max_ps(max_magnitude);  // all lanes >= 0 and finite: order-free
    const __m512 scale = _mm512_set1_ps(gpu::rcp_approx_ftz(absmax[b]));
    for (int64_t i = 0; i < blocksize; i += kLanes)
      store_packed16(codes16(type, _mm512_load_ps(values + i), scale), packed + (begin + i) / 2);
  }
  return -1;
}

bool cpu_has_avx512() { return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw"); }
#endif

}  // namespace

QuantizeBlocksFn fast_quantize_4bit_blocks() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  static const QuantizeBlocksFn fast = cpu_has_avx512() ? quantize_4bit_blocks_avx512 : nullptr;
  return fast;
#else
  return nullptr;
#endif
}

}  // namespace lowbit::bnb::detail
