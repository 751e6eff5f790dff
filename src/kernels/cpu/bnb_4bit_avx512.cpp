// AVX-512 kernel for bitsandbytes 4-bit quantization (the avx512 CPU target). It must give the
// bytes of quantize_4bit_blocks_reference (bnb_4bit.cpp): the same float32 operations in the same
// order per element (one IEEE multiply, then comparisons), the same .ftz flushing, the same NaN
// behaviour (ordered comparisons are false for NaN). Only whole blocks take this path; a short last
// block goes through the reference.
// GCC 12 reports its own _mm512_undefined_* placeholders inside the intrinsics as
// "maybe uninitialized"; a false positive, silenced for this file only.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <algorithm>
#include <cstdint>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cpu/bnb_avx512.h"
#include "kernels/cpu/simd_kernels.h"

namespace lowbit::bnb::detail {
namespace {

#ifdef LOWBIT_BNB_HAVE_AVX512
using namespace avx512;

constexpr int kLanes = 16;

// The thresholds, padded to 16 lanes with +Inf (never exceeded), for a register lookup.
template <size_t N>
constexpr std::array<float, 16> padded_thresholds(const std::array<float, N>& thresholds) {
  std::array<float, 16> padded{};
  for (size_t i = 0; i < 16; ++i) padded[i] = i < N ? thresholds[i] : __builtin_inff();
  return padded;
}
constexpr std::array<float, 16> kNf4Thresholds16 = padded_thresholds(tables::kNf4Thresholds);
constexpr std::array<float, 16> kFp4AbsThresholds16 = padded_thresholds(tables::kFp4AbsThresholds);

// Per lane: how many of the ascending thresholds x exceeds, by binary search (log2(16) steps of a
// register permute and one compare, instead of one compare per threshold). Exceeding threshold
// i means exceeding all below it, so the count is the search's final position; an ordered
// compare is false for NaN, which exceeds none, as in the reference.
LOWBIT_AVX512 inline __m512i count_exceeded16(__m512 x, __m512 thresholds, int first_step) {
  __m512i count = _mm512_setzero_si512();
  for (int step = first_step; step > 0; step >>= 1) {
    const __m512i probe = _mm512_add_epi32(count, _mm512_set1_epi32(step - 1));
    const __mmask16 above = _mm512_cmp_ps_mask(x, _mm512_permutexvar_ps(probe, thresholds), _CMP_GT_OQ);
    count = _mm512_mask_add_epi32(count, above, count, _mm512_set1_epi32(step));
  }
  return count;
}

LOWBIT_AVX512 inline __m512i codes16(QuantType type, __m512 x, __m512 scale) {
  const __m512 v = flush_subnormal16(_mm512_mul_ps(x, scale));  // mul.ftz
  if (type == QuantType::nf4) return count_exceeded16(v, _mm512_loadu_ps(kNf4Thresholds16.data()), 8);  // 15 thresholds
  const __m512 magnitude = _mm512_abs_ps(v);
  const __m512i rank = count_exceeded16(magnitude, _mm512_loadu_ps(kFp4AbsThresholds16.data()), 4);  // 7 thresholds
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
      _mm_prefetch(reinterpret_cast<const char*>(source + size_t(i) * element_size) + kPrefetchBytes, _MM_HINT_T0);
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


// bitsandbytes' dQuantize (bnb::quantize_dynamic_8bit, lowbit/formats/bnb_4bit.h) on 16 lanes: the same 7-step
// binary search over the 256-entry map, with gathers for the probes, and the same float32
// midpoints. A NaN lane fails every comparison and ends at code 0, as in the reference.
LOWBIT_AVX512 void quantize_dynamic_8bit_avx512(const float* centred, int64_t count, float scale,
                                                const std::array<float, 256>& map, uint8_t* codes) {
  const __m512 scale16 = flush_subnormal16(_mm512_set1_ps(scale));
  for (int64_t i = 0; i < count; i += 16) {
    const __mmask16 lanes = count - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (count - i)) - 1);
    const __m512 x = flush_subnormal16(_mm512_mul_ps(flush_subnormal16(_mm512_maskz_loadu_ps(lanes, centred + i)), scale16));
    __m512i pivot = _mm512_set1_epi32(127), upper_pivot = _mm512_set1_epi32(255), lower_pivot = _mm512_setzero_si512();
    __m512 lower = _mm512_set1_ps(-1.0f), upper = _mm512_set1_ps(1.0f);
    for (int step = 64; step > 0; step >>= 1) {
      const __m512 probe = _mm512_i32gather_ps(pivot, map.data(), 4);
      const __mmask16 above = _mm512_cmp_ps_mask(x, probe, _CMP_GT_OQ);
      lower_pivot = _mm512_mask_mov_epi32(lower_pivot, above, pivot);
      lower = _mm512_mask_mov_ps(lower, above, probe);
      upper_pivot = _mm512_mask_mov_epi32(upper_pivot, __mmask16(~above), pivot);
      upper = _mm512_mask_mov_ps(upper, __mmask16(~above), probe);
      pivot = _mm512_mask_add_epi32(_mm512_sub_epi32(pivot, _mm512_set1_epi32(step)), above, pivot, _mm512_set1_epi32(step));
    }
    upper = _mm512_mask_mov_ps(upper, _mm512_cmpeq_epi32_mask(upper_pivot, _mm512_set1_epi32(255)), _mm512_set1_ps(map[255]));
    lower = _mm512_mask_mov_ps(lower, _mm512_cmpeq_epi32_mask(lower_pivot, _mm512_setzero_si512()), _mm512_set1_ps(map[0]));
    const __m512 value = _mm512_i32gather_ps(pivot, map.data(), 4);
    const __m512 half = _mm512_set1_ps(0.5f);
    const __mmask16 above = _mm512_cmp_ps_mask(x, value, _CMP_GT_OQ);
    const __mmask16 take_upper = above & _mm512_cmp_ps_mask(x, _mm512_mul_ps(_mm512_add_ps(upper, value), half), _CMP_GT_OQ);
    const __mmask16 take_lower = __mmask16(~above) & _mm512_cmp_ps_mask(x, _mm512_mul_ps(_mm512_add_ps(lower, value), half), _CMP_LT_OQ);
    const __m512i code = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(pivot, take_upper, upper_pivot), take_lower, lower_pivot);
    _mm512_mask_cvtepi32_storeu_epi8(codes + i, lanes, code);
  }
}
#endif

}  // namespace

QuantizeDynamic8bitFn avx512_quantize_dynamic_8bit() { return LOWBIT_BNB_AVX512_OR_NULL(quantize_dynamic_8bit_avx512); }

QuantizeBlocksFn avx512_quantize_4bit_blocks() { return LOWBIT_BNB_AVX512_OR_NULL(quantize_4bit_blocks_avx512); }

}  // namespace lowbit::bnb::detail
