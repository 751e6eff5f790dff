// AVX2 dequantizers of tq1_0, tq2_0, q1_0, q2_0, mxfp4 and nvfp4 (the six types of ggml_ternary_fp4.cu),
// whose scalar loops ran at a fraction of ggml's speed: 8 values per instruction. Per value the scalar
// loops' operation: the code read as a small float (trit - 1, or the doubled E2M1 value, both exact),
// times the block's scale, one rounding (contraction off for this file); tq1_0 computes its block's three
// products once and picks among them; q1_0 only flips d's sign bit, as the scalar loop does.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "kernels/cpu/simd_kernels.h"

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>

#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_fp4.h"
#include "lowbit/formats/ggml_q1_q2.h"
#include "lowbit/formats/ggml_ternary.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx2_dequant_stores.h"

#define LOWBIT_GGML_TERNARY_FP4_DEQUANT_AVX2 1
#endif

namespace lowbit::ggml {

#if LOWBIT_GGML_TERNARY_FP4_DEQUANT_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

using cpu::avx2::by_output;
using cpu::avx2::Store8;
using cpu::avx2::store8;
using enum cpu::avx2::Store8;

// 8 values (code - 1) * d from 8 codes (0..3) in 32-bit lanes: the scalar loops' trit * d (code - 1 is
// exact in float, as small_int_to_float(code - 1) is).
template <Store8 S>
LOWBIT_AVX2 inline void store_codes_less_one8(float* y, __m256i codes, __m256 d) {
  const __m256 trit = _mm256_sub_ps(_mm256_cvtepi32_ps(codes), _mm256_set1_ps(1.f));
  store8<S>(y, _mm256_mul_ps(trit, d));
}

// The same, the codes in the 8 low bytes of `codes`.
template <Store8 S>
LOWBIT_AVX2 inline void store_byte_codes_less_one8(float* y, __m128i codes, __m256 d) {
  store_codes_less_one8<S>(y, _mm256_cvtepu8_epi32(codes), d);
}

// ---- tq2_0: value 128h + 32l + m is bits 2l..2l+1 of qs[32h + m], less 1, times d ----

template <Store8 S>
LOWBIT_AVX2 void dequantize_tq2_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockTq2_0*>(in);
  const __m256i two_bits = _mm256_set1_epi8(3);
  for (int64_t i = 0; i < blocks; ++i) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d));
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs + 32 * h));
      for (int l = 0; l < 4; ++l, y += 32) {
        // 16-bit shifts: the bits that cross into a byte from its neighbour are masked off.
        const __m256i codes = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * l)), two_bits);
        const __m128i low = _mm256_castsi256_si128(codes), high = _mm256_extracti128_si256(codes, 1);
        store_byte_codes_less_one8<S>(y, low, d);
        store_byte_codes_less_one8<S>(y + 8, _mm_srli_si128(low, 8), d);
        store_byte_codes_less_one8<S>(y + 16, high, d);
        store_byte_codes_less_one8<S>(y + 24, _mm_srli_si128(high, 8), d);
      }
    }
  }
}

// ---- tq1_0: trit n of a byte q is ((q * 3^n) mod 256) * 3 >> 8 (ternary::unpack_trit), as 16-bit lanes ----

// 16 trits (0..2), lane k from byte k of `bytes` (widened to 16 bits) and 3^n in lane k of `powers`.
LOWBIT_AVX2 inline __m256i unpack_trits16(__m256i bytes, __m256i powers) {
  const __m256i shifted = _mm256_and_si256(_mm256_mullo_epi16(bytes, powers), _mm256_set1_epi16(255));
  return _mm256_srli_epi16(_mm256_mullo_epi16(shifted, _mm256_set1_epi16(3)), 8);
}

// A block's three values (trit - 1) * d in lanes 0..2, each the scalar loops' product; a trit's value is
// then one permute (measured faster here than converting the trits, unlike for tq2_0 and q2_0).
LOWBIT_AVX2 inline __m256 trit_values(float d) {
  return _mm256_mul_ps(_mm256_setr_ps(-1.f, 0.f, 1.f, 0.f, 0.f, 0.f, 0.f, 0.f), _mm256_set1_ps(d));
}

// 16 values from 16 trits (0..2) in 16-bit lanes.
template <Store8 S>
LOWBIT_AVX2 inline void store_trits16(float* y, __m256i trits, __m256 values) {
  store8<S>(y, _mm256_permutevar8x32_ps(values, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(trits))));
  store8<S>(y + 8, _mm256_permutevar8x32_ps(values, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(trits, 1))));
}

LOWBIT_AVX2 inline __m256i widen16(const uint8_t* bytes) {
  return _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes)));
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_tq1_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockTq1_0*>(in);
  // qh[j] holds values 240 + j + 4n: lane 4n + j takes qh[j] times 3^n.
  const __m256i qh_powers = _mm256_setr_epi16(1, 1, 1, 1, 3, 3, 3, 3, 9, 9, 9, 9, 27, 27, 27, 27);
  for (int64_t i = 0; i < blocks; ++i, y += kTernaryBlockValues) {
    const __m256 values = trit_values(f16_to_f32(b[i].d));
    // qs[m], m < 32: values m + 32n.
    const __m256i first_half = widen16(b[i].qs), second_half = widen16(b[i].qs + 16);
    for (int n = 0; n < 5; ++n) {
      const __m256i power = _mm256_set1_epi16(int16_t(ternary::pow3(n)));
      store_trits16<S>(y + 32 * n, unpack_trits16(first_half, power), values);
      store_trits16<S>(y + 32 * n + 16, unpack_trits16(second_half, power), values);
    }
    // qs[32 + m], m < 16: values 160 + m + 16n.
    const __m256i tail = widen16(b[i].qs + 32);
    for (int n = 0; n < 5; ++n)
      store_trits16<S>(y + 160 + 16 * n, unpack_trits16(tail, _mm256_set1_epi16(int16_t(ternary::pow3(n)))), values);
    // qh: the four bytes repeated four times, one repeat per trit.
    uint32_t qh;
    std::memcpy(&qh, b[i].qh, sizeof qh);
    const __m256i qh_bytes = _mm256_cvtepu8_epi16(_mm_set1_epi32(int(qh)));
    store_trits16<S>(y + 240, unpack_trits16(qh_bytes, qh_powers), values);
  }
}

// ---- q1_0: value j is +d where bit j of the block's bits is set, else d with its sign bit flipped ----

template <Store8 S>
LOWBIT_AVX2 void dequantize_q1_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ1_0*>(in);
  const __m256i sign = _mm256_set1_epi32(int(0x80000000u));
  // Lane k of the group of 8 at bit 8g moves bit 8g + k of a 32-bit word to bit 31.
  const __m256i to_top = _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24);
  for (int64_t i = 0; i < blocks; ++i) {
    const __m256i d = _mm256_set1_epi32(int(std::bit_cast<uint32_t>(f16_to_f32(b[i].d))));
    for (int w = 0; w < 4; ++w) {
      uint32_t word;  // bits of values 32w .. 32w + 31
      std::memcpy(&word, b[i].qs + 4 * w, sizeof word);
      const __m256i bits = _mm256_set1_epi32(int(word));
      for (int g = 0; g < 4; ++g, y += 8) {
        const __m256i top = _mm256_sllv_epi32(bits, _mm256_sub_epi32(to_top, _mm256_set1_epi32(8 * g)));
        store8<S>(y, _mm256_castsi256_ps(_mm256_xor_si256(d, _mm256_andnot_si256(top, sign))));
      }
    }
  }
}

// ---- q2_0: value j is bits 2(j%4)..2(j%4)+1 of qs[j/4], less 1, times d ----

template <Store8 S>
LOWBIT_AVX2 void dequantize_q2_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ2_0*>(in);
  const __m256i first_shifts = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
  const __m256i second_shifts = _mm256_setr_epi32(16, 18, 20, 22, 24, 26, 28, 30);
  const __m256i two_bits = _mm256_set1_epi32(3);
  for (int64_t i = 0; i < blocks; ++i) {
    const __m256 d = _mm256_set1_ps(f16_to_f32(b[i].d));
    for (int w = 0; w < 4; ++w, y += 16) {
      uint32_t word;  // codes of values 16w .. 16w + 15
      std::memcpy(&word, b[i].qs + 4 * w, sizeof word);
      const __m256i codes = _mm256_set1_epi32(int(word));
      store_codes_less_one8<S>(y, _mm256_and_si256(_mm256_srlv_epi32(codes, first_shifts), two_bits), d);
      store_codes_less_one8<S>(y + 8, _mm256_and_si256(_mm256_srlv_epi32(codes, second_shifts), two_bits), d);
    }
  }
}

// ---- mxfp4 and nvfp4: kFp4Doubled[code] * half scale, the table read 16 codes at a time by a byte shuffle ----

LOWBIT_AVX2 inline __m128i fp4_doubled_table() {
  return _mm_loadu_si128(reinterpret_cast<const __m128i*>(kFp4Doubled.data()));
}

// 8 values: the doubled E2M1 values (int8) in the 8 low bytes of `doubled`, times the half scale.
template <Store8 S>
LOWBIT_AVX2 inline void store_fp4_8(float* y, __m128i doubled, __m256 half_scale) {
  store8<S>(y, _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(doubled)), half_scale));
}

// The doubled values of the low and the high nibbles of 16 bytes.
struct Fp4Nibbles {
  __m128i low, high;
};
LOWBIT_AVX2 inline Fp4Nibbles fp4_nibbles(const uint8_t* bytes, __m128i table) {
  const __m128i q = _mm_loadu_si128(reinterpret_cast<const __m128i*>(bytes));
  const __m128i nibble = _mm_set1_epi8(0x0F);
  return {_mm_shuffle_epi8(table, _mm_and_si128(q, nibble)),
          _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16(q, 4), nibble))};
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_mxfp4_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockMxfp4*>(in);
  const __m128i table = fp4_doubled_table();
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m256 half_scale = _mm256_set1_ps(e8m0_to_f32_half(b[i].e));
    // Value j is the low nibble of qs[j], value j + 16 the high one.
    const Fp4Nibbles v = fp4_nibbles(b[i].qs, table);
    store_fp4_8<S>(y, v.low, half_scale);
    store_fp4_8<S>(y + 8, _mm_srli_si128(v.low, 8), half_scale);
    store_fp4_8<S>(y + 16, v.high, half_scale);
    store_fp4_8<S>(y + 24, _mm_srli_si128(v.high, 8), half_scale);
  }
}

// ue4m3_to_f32_half of every byte: its branches and ldexpf would cost more than the 16 values of a
// sub-block, so nvfp4 looks the scale up.
const std::array<float, 256> kUe4m3HalfScales = [] {
  std::array<float, 256> scales{};
  for (uint32_t bits = 0; bits < 256; ++bits) scales[bits] = ue4m3_to_f32_half(bits);
  return scales;
}();

template <Store8 S>
LOWBIT_AVX2 void dequantize_nvfp4_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockNvfp4*>(in);
  const __m128i table = fp4_doubled_table();
  for (int64_t i = 0; i < blocks; ++i) {
    // 16 bytes hold two sub-blocks: in sub-block s, value j < 8 is the low nibble of qs[8s + j], value
    // j + 8 the high one.
    for (int pair = 0; pair < 2; ++pair) {
      const Fp4Nibbles v = fp4_nibbles(b[i].qs + 16 * pair, table);
      const __m256 first_scale = _mm256_set1_ps(kUe4m3HalfScales[b[i].d[2 * pair]]);
      const __m256 second_scale = _mm256_set1_ps(kUe4m3HalfScales[b[i].d[2 * pair + 1]]);
      store_fp4_8<S>(y, v.low, first_scale);
      store_fp4_8<S>(y + 8, v.high, first_scale);
      store_fp4_8<S>(y + 16, _mm_srli_si128(v.low, 8), second_scale);
      store_fp4_8<S>(y + 24, _mm_srli_si128(v.high, 8), second_scale);
      y += 32;
    }
  }
}

constexpr TernaryFp4DequantVectorKernels kAvx2Kernels = {
    by_output<dequantize_tq1_0_blocks<streaming>, dequantize_tq1_0_blocks<aligned>, dequantize_tq1_0_blocks<unaligned>>,
    by_output<dequantize_tq2_0_blocks<streaming>, dequantize_tq2_0_blocks<aligned>, dequantize_tq2_0_blocks<unaligned>>,
    by_output<dequantize_q1_0_blocks<streaming>, dequantize_q1_0_blocks<aligned>, dequantize_q1_0_blocks<unaligned>>,
    by_output<dequantize_q2_0_blocks<streaming>, dequantize_q2_0_blocks<aligned>, dequantize_q2_0_blocks<unaligned>>,
    by_output<dequantize_mxfp4_blocks<streaming>, dequantize_mxfp4_blocks<aligned>, dequantize_mxfp4_blocks<unaligned>>,
    by_output<dequantize_nvfp4_blocks<streaming>, dequantize_nvfp4_blocks<aligned>, dequantize_nvfp4_blocks<unaligned>>};

}  // namespace

const TernaryFp4DequantVectorKernels* avx2_ternary_fp4_dequant_kernels() { return &kAvx2Kernels; }

#else

const TernaryFp4DequantVectorKernels* avx2_ternary_fp4_dequant_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml
