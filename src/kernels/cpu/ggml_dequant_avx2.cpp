// AVX2 dequantizers of the legacy types and the k-quants, for CPUs without AVX-512 (the scalar loops ran
// there): ggml_dequant_avx512.cpp's kernels at 8 values per instruction, and q3_K's and q6_K's, which
// the AVX-512 target borrows. Per value the
// operations of the scalar loops in the same order: code to float, times the scale, then plus / minus the
// offset, each rounded on its own (contraction off for this file).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "kernels/cpu/simd_kernels.h"

#include <cstdint>

#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_kquants.h"
#include "lowbit/formats/ggml_legacy.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx2_dequant_stores.h"

#define LOWBIT_GGML_DEQUANT_AVX2 1
#endif

namespace lowbit::ggml {

#if LOWBIT_GGML_DEQUANT_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

using cpu::avx2::by_output;
using cpu::avx2::Store8;
using cpu::avx2::store8;
using enum cpu::avx2::Store8;

// 8 bytes, each widened to a 32-bit lane.
LOWBIT_AVX2 inline __m256i load8_u8(const uint8_t* p) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
}
LOWBIT_AVX2 inline __m256i low_nibbles(__m256i bytes) { return _mm256_and_si256(bytes, _mm256_set1_epi32(0xF)); }
LOWBIT_AVX2 inline __m256i high_nibbles(__m256i bytes) { return _mm256_srli_epi32(bytes, 4); }

// ---- legacy: value j of a block in the low nibble of qs[j], value j+16 in the high nibble ----

// Bit 4 of the 8 values from `first` (0, 8, 16 or 24): bits first.. of q5's 32-bit qh word, as 0 or 16.
LOWBIT_AVX2 inline __m256i fifth_bits(uint32_t qh, int first) {
  const __m256i shifted = _mm256_srlv_epi32(_mm256_set1_epi32(int32_t(qh >> first)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  return _mm256_slli_epi32(_mm256_and_si256(shifted, _mm256_set1_epi32(1)), 4);
}

// The 8 codes of values [first, first + 8) of a legacy 4-bit block (plus bit 4 for q5's).
LOWBIT_AVX2 inline __m256i nibble_codes(const uint8_t* qs, int first) {
  const __m256i bytes = load8_u8(qs + first % 16);
  return first < 16 ? low_nibbles(bytes) : high_nibbles(bytes);
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q4_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4_0*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d));
    for (int first = 0; first < 32; first += 8)
      store8<S>(y + first, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(nibble_codes(b[i].qs, first), _mm256_set1_epi32(8))), d));
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q4_1_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4_1*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d)), m = _mm256_set1_ps(f16_to_f32(b[i].m));
    for (int first = 0; first < 32; first += 8)
      store8<S>(y + first, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(nibble_codes(b[i].qs, first)), d), m));
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q5_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5_0*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d));
    const uint32_t qh = legacy::fifth_bits_word(b[i].qh);
    for (int first = 0; first < 32; first += 8) {
      const __m256i code = _mm256_or_si256(nibble_codes(b[i].qs, first), fifth_bits(qh, first));
      store8<S>(y + first, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_sub_epi32(code, _mm256_set1_epi32(16))), d));
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q5_1_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5_1*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d)), m = _mm256_set1_ps(f16_to_f32(b[i].m));
    const uint32_t qh = legacy::fifth_bits_word(b[i].qh);
    for (int first = 0; first < 32; first += 8) {
      const __m256i code = _mm256_or_si256(nibble_codes(b[i].qs, first), fifth_bits(qh, first));
      store8<S>(y + first, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(code), d), m));
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q8_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ8_0*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d));
    for (int first = 0; first < 32; first += 8) {
      const __m256i q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(b[i].qs + first)));
      store8<S>(y + first, _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
    }
  }
}

// ---- q4_K / q5_K: sub-block j's 32 codes are the low (j even) or high (j odd) nibbles of qs[32*(j/2)...] ----

// Value = dj * code - mj (kquants::value_scale_min), for a super-block's 8 sub-blocks; `FifthBit` (q5_K)
// adds 16 where bit j of qh[l] is set.
template <bool FifthBit, Store8 S>
LOWBIT_AVX2 inline void dequantize_scale_min_block(float d, float dmin, const uint8_t* scales, const uint8_t* qs,
                                                   const uint8_t* qh, float* y) {
  for (int j = 0; j < 8; ++j) {
    const kquants::ScaleMin sm = kquants::scale_min_k4(scales, j);
    const __m256 dj = _mm256_set1_ps(kquants::sub_block_factor(d, sm.scale));
    const __m256 mj = _mm256_set1_ps(kquants::sub_block_factor(dmin, sm.min));
    for (int part = 0; part < 4; ++part) {
      const __m256i bytes = load8_u8(qs + 32 * (j / 2) + 8 * part);
      __m256i code = j % 2 ? high_nibbles(bytes) : low_nibbles(bytes);
      if (FifthBit) {
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(load8_u8(qh + 8 * part), j), _mm256_set1_epi32(1));
        code = _mm256_or_si256(code, _mm256_slli_epi32(high, 4));
      }
      store8<S>(y + 32 * j + 8 * part, _mm256_sub_ps(_mm256_mul_ps(dj, _mm256_cvtepi32_ps(code)), mj));
    }
  }
}

// q2_K: sub-block j's 16 codes are the 2-bit fields of kquants::two_bit_offset/shift; value =
// (d * scale) * code - (dmin * min), scale and min the nibbles of scales[j] (kquants::scale_min_q2).
template <Store8 S>
LOWBIT_AVX2 void dequantize_q2_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ2K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 16; ++j) {
      const kquants::ScaleMin sm = kquants::scale_min_q2(b[i].scales[j]);
      const __m256 dl = _mm256_set1_ps(kquants::sub_block_factor(d, sm.scale));
      const __m256 ml = _mm256_set1_ps(kquants::sub_block_factor(dmin, sm.min));
      const int shift = kquants::two_bit_shift(j);
      for (int part = 0; part < 2; ++part) {
        const __m256i bytes = load8_u8(b[i].qs + kquants::two_bit_offset(j) + 8 * part);
        const __m256i code = _mm256_and_si256(_mm256_srli_epi32(bytes, shift), _mm256_set1_epi32(3));
        store8<S>(y + 16 * j + 8 * part, _mm256_sub_ps(_mm256_mul_ps(dl, _mm256_cvtepi32_ps(code)), ml));
      }
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q4_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues)
    dequantize_scale_min_block<false, S>(f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), b[i].scales, b[i].qs, nullptr, y);
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_q5_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues)
    dequantize_scale_min_block<true, S>(f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), b[i].scales, b[i].qs, b[i].qh, y);
}

// q3_K: value = (d * s) * (low - 4 where the hmask bit is clear), 16-value sub-block j's low 2 bits at
// kquants::two_bit_offset/shift, its high bit bit j / 2 of hmask[16 (j % 2) + l].
template <Store8 S>
LOWBIT_AVX2 void dequantize_q3_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ3K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const __m256 dl = _mm256_set1_ps(kquants::sub_block_factor(d, kquants::scale_q3(b[i].scales, j)));
      const int shift = kquants::two_bit_shift(j), high_bit = j / 2;
      for (int part = 0; part < 2; ++part) {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(load8_u8(b[i].qs + kquants::two_bit_offset(j) + 8 * part), shift),
                                             _mm256_set1_epi32(3));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(load8_u8(b[i].hmask + 16 * (j % 2) + 8 * part), high_bit),
                                              _mm256_set1_epi32(1));
        const __m256i missing_high = _mm256_slli_epi32(_mm256_xor_si256(high, _mm256_set1_epi32(1)), 2);  // 4 or 0
        const __m256 code = _mm256_cvtepi32_ps(_mm256_sub_epi32(low, missing_high));
        store8<S>(y + 16 * j + 8 * part, _mm256_mul_ps(dl, code));
      }
    }
  }
}

// q6_K: value = (d * s) * (6-bit code - 32), sub-block j's low nibbles in ql, high 2 bits in qh.
template <Store8 S>
LOWBIT_AVX2 void dequantize_q6_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ6K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < 16; ++j) {
      const int h = j / 8, k = (j % 8) / 2, first = 16 * (j % 2);
      const __m256 dl = _mm256_set1_ps(kquants::sub_block_factor(d, b[i].scales[j]));
      const uint8_t* ql = b[i].ql + 64 * h + 32 * (k & 1) + first;
      const uint8_t* qh = b[i].qh + 32 * h + first;
      for (int part = 0; part < 2; ++part) {
        const __m256i low = _mm256_and_si256(_mm256_srli_epi32(load8_u8(ql + 8 * part), 4 * (k / 2)), _mm256_set1_epi32(0xF));
        const __m256i high = _mm256_and_si256(_mm256_srli_epi32(load8_u8(qh + 8 * part), 2 * k), _mm256_set1_epi32(3));
        const __m256i code = _mm256_sub_epi32(_mm256_or_si256(low, _mm256_slli_epi32(high, 4)), _mm256_set1_epi32(32));
        store8<S>(y + 16 * j + 8 * part, _mm256_mul_ps(dl, _mm256_cvtepi32_ps(code)));
      }
    }
  }
}

constexpr DequantVectorKernels kAvx2Kernels = {
    by_output<dequantize_q4_0_blocks<streaming>, dequantize_q4_0_blocks<aligned>, dequantize_q4_0_blocks<unaligned>>,
    by_output<dequantize_q4_1_blocks<streaming>, dequantize_q4_1_blocks<aligned>, dequantize_q4_1_blocks<unaligned>>,
    by_output<dequantize_q5_0_blocks<streaming>, dequantize_q5_0_blocks<aligned>, dequantize_q5_0_blocks<unaligned>>,
    by_output<dequantize_q5_1_blocks<streaming>, dequantize_q5_1_blocks<aligned>, dequantize_q5_1_blocks<unaligned>>,
    by_output<dequantize_q8_0_blocks<streaming>, dequantize_q8_0_blocks<aligned>, dequantize_q8_0_blocks<unaligned>>,
    by_output<dequantize_q2_K_blocks<streaming>, dequantize_q2_K_blocks<aligned>, dequantize_q2_K_blocks<unaligned>>,
    by_output<dequantize_q4_K_blocks<streaming>, dequantize_q4_K_blocks<aligned>, dequantize_q4_K_blocks<unaligned>>,
    by_output<dequantize_q5_K_blocks<streaming>, dequantize_q5_K_blocks<aligned>, dequantize_q5_K_blocks<unaligned>>,
    by_output<dequantize_q3_K_blocks<streaming>, dequantize_q3_K_blocks<aligned>, dequantize_q3_K_blocks<unaligned>>,
    by_output<dequantize_q6_K_blocks<streaming>, dequantize_q6_K_blocks<aligned>, dequantize_q6_K_blocks<unaligned>>};

}  // namespace

const DequantVectorKernels* avx2_dequant_kernels() { return &kAvx2Kernels; }

#else

const DequantVectorKernels* avx2_dequant_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml
