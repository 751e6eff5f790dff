// AVX-512 dequantizers of the ggml types whose scalar loops (ggml_legacy.cpp, ggml_kquants.cpp) only
// matched ggml's speed: 16 values per instruction. Per value, the operations of the scalar loops in
// the same order: code to float, times the scale, then plus / minus the offset, each rounded on its own
// (contraction off for this file, as ggml rounds them separately).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_undefined_* inside intrinsics
#pragma GCC diagnostic ignored "-Wuninitialized"
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
#define LOWBIT_GGML_DEQUANT_AVX512 1
#endif

namespace lowbit::ggml {

#if LOWBIT_GGML_DEQUANT_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f")))

// 16 bytes, each widened to a 32-bit lane.
LOWBIT_AVX512 inline __m512i load16_u8(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

LOWBIT_AVX512 inline __m512i low_nibbles(__m512i bytes) { return _mm512_and_si512(bytes, _mm512_set1_epi32(0xF)); }
LOWBIT_AVX512 inline __m512i high_nibbles(__m512i bytes) { return _mm512_srli_epi32(bytes, 4); }

// How store16 writes. Once the output streams to memory, a 64-byte store that straddles two cache lines
// costs about as much as two (measured: a 16-byte-aligned q8_0 matrix dequantizes 20% slower than a 64-byte-
// aligned one). malloc'd buffers are often only 16-byte aligned, so such outputs get four 16-byte stores,
// which never straddle. `streaming`: four 16-byte non-temporal stores, for a 16-byte-aligned output too large
// to stay in cache (they write whole lines without first reading them). The kernels are instantiated for
// each case and picked per call (by_output).
enum class Store16 { unaligned, aligned, streaming };

// 16 floats to y.
template <Store16 S>
LOWBIT_AVX512 inline void store16(float* y, __m512 v) {
  if constexpr (S == Store16::aligned) {
    _mm512_store_ps(y, v);
  } else if constexpr (S == Store16::streaming) {
    _mm_stream_ps(y, _mm512_castps512_ps128(v));
    _mm_stream_ps(y + 4, _mm512_extractf32x4_ps(v, 1));
    _mm_stream_ps(y + 8, _mm512_extractf32x4_ps(v, 2));
    _mm_stream_ps(y + 12, _mm512_extractf32x4_ps(v, 3));
  } else {
    _mm_storeu_ps(y, _mm512_castps512_ps128(v));
    _mm_storeu_ps(y + 4, _mm512_extractf32x4_ps(v, 1));
    _mm_storeu_ps(y + 8, _mm512_extractf32x4_ps(v, 2));
    _mm_storeu_ps(y + 12, _mm512_extractf32x4_ps(v, 3));
  }
}
using enum Store16;

// ---- legacy: value j of a block in the low nibble of qs[j], value j+16 in the high nibble ----

template <Store16 S>
LOWBIT_AVX512 void dequantize_q4_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4_0*>(in);
  const __m512i eight = _mm512_set1_epi32(8);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
    const __m512i q = load16_u8(b[i].qs);
    store16<S>(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(low_nibbles(q), eight)), d));
    store16<S>(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(high_nibbles(q), eight)), d));
  }
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q4_1_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4_1*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d)), m = _mm512_set1_ps(f16_to_f32(b[i].m));
    const __m512i q = load16_u8(b[i].qs);
    store16<S>(y, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(low_nibbles(q)), d), m));
    store16<S>(y + 16, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(high_nibbles(q)), d), m));
  }
}

// q5_0 / q5_1: bit 4 of value j's code is bit j of the little-endian 32-bit qh.
LOWBIT_AVX512 inline void five_bit_codes(const uint8_t* qs, const uint8_t* qh, __m512i& low, __m512i& high) {
  const uint32_t bits = legacy::fifth_bits_word(qh);
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i one = _mm512_set1_epi32(1);
  const __m512i low_bit4 = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int32_t(bits)), lane), one);
  const __m512i high_bit4 = _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(int32_t(bits >> 16)), lane), one);
  const __m512i q = load16_u8(qs);
  low = _mm512_or_si512(low_nibbles(q), _mm512_slli_epi32(low_bit4, 4));
  high = _mm512_or_si512(high_nibbles(q), _mm512_slli_epi32(high_bit4, 4));
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q5_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5_0*>(in);
  const __m512i sixteen = _mm512_set1_epi32(16);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
    __m512i low, high;
    five_bit_codes(b[i].qs, b[i].qh, low, high);
    store16<S>(y, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(low, sixteen)), d));
    store16<S>(y + 16, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(high, sixteen)), d));
  }
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q5_1_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5_1*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d)), m = _mm512_set1_ps(f16_to_f32(b[i].m));
    __m512i low, high;
    five_bit_codes(b[i].qs, b[i].qh, low, high);
    store16<S>(y, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(low), d), m));
    store16<S>(y + 16, _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(high), d), m));
  }
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q8_0_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ8_0*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += 32) {
    const __m512 d = _mm512_set1_ps(f16_to_f32(b[i].d));
    for (int half = 0; half < 2; ++half) {
      const __m512i q = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].qs + 16 * half)));
      store16<S>(y + 16 * half, _mm512_mul_ps(_mm512_cvtepi32_ps(q), d));
    }
  }
}

// ---- q4_K / q5_K: sub-block j's 32 codes are the low (j even) or high (j odd) nibbles of qs[32*(j/2)...] ----

// Value = dj * code - mj (kquants::value_scale_min 16 lanes at a time), for 32 codes; `fifth_bit`
// (q5_K) adds 16 where bit j of qh[l] is set.
template <bool FifthBit, Store16 S>
LOWBIT_AVX512 inline void dequantize_scale_min_block(float d, float dmin, const uint8_t* scales, const uint8_t* qs,
                                                     const uint8_t* qh, float* y) {
  for (int j = 0; j < 8; ++j) {
    const kquants::ScaleMin sm = kquants::scale_min_k4(scales, j);
    const __m512 dj = _mm512_set1_ps(kquants::sub_block_factor(d, sm.scale));
    const __m512 mj = _mm512_set1_ps(kquants::sub_block_factor(dmin, sm.min));
    for (int half = 0; half < 2; ++half) {
      const __m512i bytes = load16_u8(qs + 32 * (j / 2) + 16 * half);
      __m512i code = j % 2 ? high_nibbles(bytes) : low_nibbles(bytes);
      if (FifthBit) {
        const __m512i high = _mm512_and_si512(_mm512_srli_epi32(load16_u8(qh + 16 * half), j), _mm512_set1_epi32(1));
        code = _mm512_or_si512(code, _mm512_slli_epi32(high, 4));
      }
      store16<S>(y + 32 * j + 16 * half, _mm512_sub_ps(_mm512_mul_ps(dj, _mm512_cvtepi32_ps(code)), mj));
    }
  }
}

// q2_K: sub-block j's 16 codes are the 2-bit fields of kquants::two_bit_offset/shift; value =
// (d * scale) * code - (dmin * min), scale and min the nibbles of scales[j] (kquants::scale_min_q2).
template <Store16 S>
LOWBIT_AVX512 void dequantize_q2_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ2K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues) {
    const float d = f16_to_f32(b[i].d), dmin = f16_to_f32(b[i].dmin);
    for (int j = 0; j < 16; ++j) {
      const kquants::ScaleMin sm = kquants::scale_min_q2(b[i].scales[j]);
      const __m512 dl = _mm512_set1_ps(kquants::sub_block_factor(d, sm.scale));
      const __m512 ml = _mm512_set1_ps(kquants::sub_block_factor(dmin, sm.min));
      const __m512i bytes = load16_u8(b[i].qs + kquants::two_bit_offset(j));
      const unsigned shift = unsigned(kquants::two_bit_shift(j));
      const __m512i code = _mm512_and_si512(_mm512_srli_epi32(bytes, shift), _mm512_set1_epi32(3));
      store16<S>(y + 16 * j, _mm512_sub_ps(_mm512_mul_ps(dl, _mm512_cvtepi32_ps(code)), ml));
    }
  }
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q4_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ4K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues)
    dequantize_scale_min_block<false, S>(f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), b[i].scales, b[i].qs,
                                                 nullptr, y);
}

template <Store16 S>
LOWBIT_AVX512 void dequantize_q5_K_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockQ5K*>(in);
  for (int64_t i = 0; i < blocks; ++i, y += kSuperBlockValues)
    dequantize_scale_min_block<true, S>(f16_to_f32(b[i].d), f16_to_f32(b[i].dmin), b[i].scales, b[i].qs,
                                                b[i].qh, y);
}

using BlocksKernel = void (*)(const void* in, float* y, int64_t blocks);

// The kernel for y's alignment and the caller's OutputStores (see store16); the fence orders the
// non-temporal stores before whatever the caller does next, as normal stores would be.
template <BlocksKernel Streaming, BlocksKernel Aligned, BlocksKernel Unaligned>
void by_output(const void* in, float* y, int64_t blocks, cpu::OutputStores stores) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(y);
  if (stores == cpu::OutputStores::streaming && address % 16 == 0) {
    Streaming(in, y, blocks);
    _mm_sfence();
    return;
  }
  (address % 64 == 0 ? Aligned : Unaligned)(in, y, blocks);
}

constexpr DequantVectorKernels kAvx512Kernels = {
    by_output<dequantize_q4_0_blocks<streaming>, dequantize_q4_0_blocks<aligned>, dequantize_q4_0_blocks<unaligned>>,
    by_output<dequantize_q4_1_blocks<streaming>, dequantize_q4_1_blocks<aligned>, dequantize_q4_1_blocks<unaligned>>,
    by_output<dequantize_q5_0_blocks<streaming>, dequantize_q5_0_blocks<aligned>, dequantize_q5_0_blocks<unaligned>>,
    by_output<dequantize_q5_1_blocks<streaming>, dequantize_q5_1_blocks<aligned>, dequantize_q5_1_blocks<unaligned>>,
    by_output<dequantize_q8_0_blocks<streaming>, dequantize_q8_0_blocks<aligned>, dequantize_q8_0_blocks<unaligned>>,
    by_output<dequantize_q2_K_blocks<streaming>, dequantize_q2_K_blocks<aligned>, dequantize_q2_K_blocks<unaligned>>,
    by_output<dequantize_q4_K_blocks<streaming>, dequantize_q4_K_blocks<aligned>, dequantize_q4_K_blocks<unaligned>>,
    by_output<dequantize_q5_K_blocks<streaming>, dequantize_q5_K_blocks<aligned>, dequantize_q5_K_blocks<unaligned>>,
    nullptr, nullptr};  // q3_K, q6_K: the AVX2 kernels (cpu_kernels.cpp)

}  // namespace

const DequantVectorKernels* avx512_dequant_kernels() { return &kAvx512Kernels; }

#else

const DequantVectorKernels* avx512_dequant_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml
