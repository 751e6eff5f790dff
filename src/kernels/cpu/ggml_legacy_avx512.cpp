// AVX-512 versions of the legacy quantizers without weights (ggml_legacy.cpp holds the scalar reference):
// a 32-value block is two vectors, `low` (values 0-15) and `high` (16-31), matching the 4-bit packing
// (value j in the low nibble of qs[j], value j+16 in the high nibble).
//
// What keeps the bytes identical:
//  - ggml finds a block's min, max or signed extreme with strict comparisons in index order, so among
//    equal candidates the first wins. A vector reduction finds the value; the first index holding it is
//    then read back, which matters only for the sign of a zero (f16 keeps it).
//  - every product is rounded before it is added (contraction off for this file);
//  - the fp16 scale comes from the hardware conversion (round to nearest even), which f32_to_f16
//    reproduces exactly (tests/core/half_test.cpp checks every float class).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_undefined_* inside intrinsics
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "kernels/cpu/simd_kernels.h"

#include <cstring>

#include "formats/ggml_kquants_search.h"
#include "lowbit/formats/ggml_legacy.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_GGML_LEGACY_AVX512 1
#endif

namespace lowbit::ggml {

#if LOWBIT_GGML_LEGACY_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f,f16c")))

constexpr int kQK = kLegacyBlockValues;

struct Block32 {
  __m512 low, high;
};

LOWBIT_AVX512 inline Block32 load_block(const float* x) { return {_mm512_loadu_ps(x), _mm512_loadu_ps(x + 16)}; }

LOWBIT_AVX512 inline uint16_t to_f16(float f) {
  return uint16_t(_mm_cvtsi128_si32(_mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT)));
}

// x[first j with values[j] == target], for a target that occurs (so the sign of a zero is x's own).
LOWBIT_AVX512 inline float first_equal(const float* x, __m512 low, __m512 high, float target) {
  const __m512 t = _mm512_set1_ps(target);
  const uint32_t hits = uint32_t(_mm512_cmp_ps_mask(low, t, _CMP_EQ_OQ)) |
                        uint32_t(_mm512_cmp_ps_mask(high, t, _CMP_EQ_OQ)) << 16;
  return x[__builtin_ctz(hits)];
}

// The value of largest magnitude, sign kept, the first on ties; 0 for an all-zero block (ggml's loop
// starts from max = 0 and replaces it only on a strictly larger magnitude).
LOWBIT_AVX512 inline float signed_extreme(const float* x, const Block32& v) {
  const __m512 abs_low = _mm512_abs_ps(v.low), abs_high = _mm512_abs_ps(v.high);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(abs_low, abs_high));
  if (!(amax > 0)) return 0.f;
  return first_equal(x, abs_low, abs_high, amax);
}

struct MinMax {
  float min, max;
};

LOWBIT_AVX512 inline MinMax min_max(const float* x, const Block32& v) {
  const float min = _mm512_reduce_min_ps(_mm512_min_ps(v.low, v.high));
  const float max = _mm512_reduce_max_ps(_mm512_max_ps(v.low, v.high));
  return {first_equal(x, v.low, v.high, min), first_equal(x, v.low, v.high, max)};
}

// int(v) of C: truncation toward zero.
LOWBIT_AVX512 inline __m512i truncate16(__m512 v) { return _mm512_cvttps_epi32(v); }

// 4-bit codes of values j and j+16 into byte j.
LOWBIT_AVX512 inline void pack_nibbles(__m512i low, __m512i high, uint8_t* qs) {
  const __m512i mask = _mm512_set1_epi32(0xF);
  const __m512i bytes =
      _mm512_or_si512(_mm512_and_si512(low, mask), _mm512_slli_epi32(_mm512_and_si512(high, mask), 4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(qs), _mm512_cvtepi32_epi8(bytes));
}

// Bit 4 of value j's code into bit j of qh (little-endian).
LOWBIT_AVX512 inline void pack_fifth_bits(__m512i low, __m512i high, uint8_t* qh) {
  const __m512i bit4 = _mm512_set1_epi32(0x10);
  const uint32_t bits =
      uint32_t(_mm512_test_epi32_mask(low, bit4)) | uint32_t(_mm512_test_epi32_mask(high, bit4)) << 16;
  std::memcpy(qh, &bits, 4);  // x86 is little-endian
}

// Symmetric types: d = extreme / -half_range; code = min(top, int(x*id + half_range + 0.5)).
template <class Block, int HalfRange>
LOWBIT_AVX512 inline void quantize_symmetric(const float* x, Block& b, __m512i& low, __m512i& high) {
  const Block32 v = load_block(x);
  const float d = signed_extreme(x, v) / -HalfRange;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = to_f16(d);
  const __m512 scale = _mm512_set1_ps(id), offset = _mm512_set1_ps(float(HalfRange) + 0.5f);
  const __m512i top = _mm512_set1_epi32(2 * HalfRange - 1);
  low = _mm512_min_epi32(top, truncate16(_mm512_add_ps(_mm512_mul_ps(v.low, scale), offset)));
  high = _mm512_min_epi32(top, truncate16(_mm512_add_ps(_mm512_mul_ps(v.high, scale), offset)));
}

// Asymmetric types: d = (max - min) / top, m = min; code = int((x - min)*id + 0.5) (clamped to top by q4_1).
template <class Block, int Top, bool Clamp>
LOWBIT_AVX512 inline void quantize_asymmetric(const float* x, Block& b, __m512i& low, __m512i& high) {
  const Block32 v = load_block(x);
  const MinMax r = min_max(x, v);
  const float d = (r.max - r.min) / Top;
  const float id = d ? 1.0f / d : 0.0f;
  b.d = to_f16(d);
  b.m = to_f16(r.min);
  const __m512 min = _mm512_set1_ps(r.min), scale = _mm512_set1_ps(id), half = _mm512_set1_ps(0.5f);
  low = truncate16(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v.low, min), scale), half));
  high = truncate16(_mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(v.high, min), scale), half));
  if (Clamp) {
    low = _mm512_min_epi32(_mm512_set1_epi32(Top), low);
    high = _mm512_min_epi32(_mm512_set1_epi32(Top), high);
  }
}

LOWBIT_AVX512 void quantize_q4_0_blocks(const float* x, void* out, int64_t blocks) {
  auto* y = static_cast<BlockQ4_0*>(out);
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i low, high;
    quantize_symmetric<BlockQ4_0, 8>(x + kQK * i, y[i], low, high);
    pack_nibbles(low, high, y[i].qs);
  }
}

LOWBIT_AVX512 void quantize_q5_0_blocks(const float* x, void* out, int64_t blocks) {
  auto* y = static_cast<BlockQ5_0*>(out);
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i low, high;
    quantize_symmetric<BlockQ5_0, 16>(x + kQK * i, y[i], low, high);
    pack_nibbles(low, high, y[i].qs);
    pack_fifth_bits(low, high, y[i].qh);
  }
}

LOWBIT_AVX512 void quantize_q4_1_blocks(const float* x, void* out, int64_t blocks) {
  auto* y = static_cast<BlockQ4_1*>(out);
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i low, high;
    quantize_asymmetric<BlockQ4_1, 15, true>(x + kQK * i, y[i], low, high);
    pack_nibbles(low, high, y[i].qs);
  }
}

LOWBIT_AVX512 void quantize_q5_1_blocks(const float* x, void* out, int64_t blocks) {
  auto* y = static_cast<BlockQ5_1*>(out);
  for (int64_t i = 0; i < blocks; ++i) {
    __m512i low, high;
    quantize_asymmetric<BlockQ5_1, 31, false>(x + kQK * i, y[i], low, high);
    pack_nibbles(low, high, y[i].qs);
    pack_fifth_bits(low, high, y[i].qh);
  }
}

// roundf per lane: halves away from zero. v - trunc(v) is exact, so comparing it with 0.5 decides.
LOWBIT_AVX512 inline __m512i round_half_away16(__m512 v) {
  const __m512 whole = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(v, whole)), _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512i sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int32_t(0x80000000u)));
  const __m512 sign_one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.f)), sign));
  return _mm512_cvttps_epi32(_mm512_mask_add_ps(whole, up, whole, sign_one));
}

LOWBIT_AVX512 void quantize_q8_0_blocks(const float* x, void* out, int64_t blocks) {
  auto* y = static_cast<BlockQ8_0*>(out);
  for (int64_t i = 0; i < blocks; ++i) {
    const Block32 v = load_block(x + kQK * i);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(v.low), _mm512_abs_ps(v.high)));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = to_f16(d);
    const __m512 scale = _mm512_set1_ps(id);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs),
                     _mm512_cvtepi32_epi8(round_half_away16(_mm512_mul_ps(v.low, scale))));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16),
                     _mm512_cvtepi32_epi8(round_half_away16(_mm512_mul_ps(v.high, scale))));
  }
}

constexpr LegacyVectorKernels kAvx512Kernels = {quantize_q4_0_blocks, quantize_q4_1_blocks, quantize_q5_0_blocks,
                                                quantize_q5_1_blocks, quantize_q8_0_blocks};

}  // namespace

// They also use F16C, which every AVX-512 CPU has.
const LegacyVectorKernels* avx512_legacy_kernels() { return &kAvx512Kernels; }

#else

const LegacyVectorKernels* avx512_legacy_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml
