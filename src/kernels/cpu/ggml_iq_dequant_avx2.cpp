// AVX2 dequantizers of iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, iq4_nl and iq4_xs, whose
// scalar loops only matched ggml's speed (iq3's fell below it): one 8-value grid point per instruction (the
// point's bytes widened to floats, times the scale, the sign bits applied as a mask; iq3's two 4-value
// points make one; iq4's codebook looked up by two in-register permutes).
// Per value the scalar loops' operations in their order: iq2 and iq3, scale * magnitude, then the sign
// flipped (ggml multiplies by -1.f, which only flips it); iq1, (level + delta) * scale. Each rounded on
// its own (contraction off for this file).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "kernels/cpu/simd_kernels.h"

#include <cstdint>
#include <cstring>

#include "formats/ggml_iq1_search.h"
#include "formats/ggml_kquants_search.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_iq1.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq3.h"
#include "lowbit/formats/ggml_iq3_grids.h"
#include "lowbit/formats/ggml_iq4.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx2_dequant_stores.h"

#define LOWBIT_GGML_IQ_DEQUANT_AVX2 1
#endif

namespace lowbit::ggml {

#if LOWBIT_GGML_IQ_DEQUANT_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

using cpu::avx2::by_output;
using cpu::avx2::Store8;
using cpu::avx2::store8;
using enum cpu::avx2::Store8;

constexpr int kBlock = 256;

// The float sign masks of the 256 sign bytes, lane j's sign bit set where bit j is (8 KB, in L1): one load
// where expanding the bits took five instructions per 8 values.
struct SignMasks {
  alignas(32) uint32_t lanes[256][8];
};
constexpr SignMasks make_sign_masks() {
  SignMasks masks{};
  for (int bits = 0; bits < 256; ++bits)
    for (int j = 0; j < 8; ++j) masks.lanes[bits][j] = (bits >> j & 1) != 0 ? 0x80000000u : 0u;
  return masks;
}
constexpr SignMasks kSignMasks = make_sign_masks();

// 8 values of an iq2 grid point: scale * magnitude byte j, negated where bit j of sign_bits is set.
template <Store8 S>
LOWBIT_AVX2 inline void store_signed_point(float* y, __m256 scale, uint64_t grid_point, uint32_t sign_bits) {
  const __m256 magnitude = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(int64_t(grid_point))));
  const __m256 sign = _mm256_load_ps(reinterpret_cast<const float*>(kSignMasks.lanes[sign_bits & 255]));
  store8<S>(y, _mm256_xor_ps(_mm256_mul_ps(scale, magnitude), sign));
}

// iq2's group scale d * (0.5 + code) * 0.25, as the scalar loop rounds it.
inline float iq2_group_scale(float d, int code) { return d * (0.5f + float(code)) * 0.25f; }

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq2_xxs_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq2Xxs*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      uint32_t word[2];
      std::memcpy(word, b[i].qs + 4 * ib, sizeof word);
      const __m256 db = _mm256_set1_ps(iq2_group_scale(d, int(word[1] >> 28)));
      for (int l = 0; l < 4; ++l)
        store_signed_point<S>(y + 8 * l, db, iq2::kIq2xxsGrid[(word[0] >> (8 * l)) & 255],
                           kIqEvenParitySigns[(word[1] >> (7 * l)) & 127]);
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq2_xs_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq2Xs*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const __m256 db[2] = {_mm256_set1_ps(iq2_group_scale(d, b[i].scales[ib] & 0xF)),
                            _mm256_set1_ps(iq2_group_scale(d, b[i].scales[ib] >> 4))};
      for (int l = 0; l < 4; ++l) {
        const uint16_t q = b[i].qs[4 * ib + l];
        store_signed_point<S>(y + 8 * l, db[l / 2], iq2::kIq2xsGrid[q & 511], kIqEvenParitySigns[q >> 9]);
      }
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq2_s_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq2S*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const __m256 db[2] = {_mm256_set1_ps(iq2_group_scale(d, b[i].scales[ib] & 0xF)),
                            _mm256_set1_ps(iq2_group_scale(d, b[i].scales[ib] >> 4))};
      for (int l = 0; l < 4; ++l) {
        const int index = b[i].qs[4 * ib + l] | (((b[i].qh[ib] >> (2 * l)) & 3) << 8);
        store_signed_point<S>(y + 8 * l, db[l / 2], iq2::kIq2sGrid[size_t(index)], b[i].qs[32 + 4 * ib + l]);
      }
    }
  }
}

// iq3's two 4-value grid points of a subgroup as one 8-value point.
inline uint64_t point_pair(const uint32_t* grid, int index0, int index1) {
  return uint64_t(grid[index0]) | uint64_t(grid[index1]) << 32;
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq3_xxs_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq3Xxs*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      uint32_t aux;  // scale (bits 28..31) and four 7-bit sign groups
      std::memcpy(&aux, b[i].qs + 64 + 4 * ib, sizeof aux);
      const __m256 db = _mm256_set1_ps(d * (0.5f + float(aux >> 28)) * 0.5f);
      const uint8_t* index = b[i].qs + 8 * ib;
      for (int l = 0; l < 4; ++l)
        store_signed_point<S>(y + 8 * l, db, point_pair(kIq3XxsGrid.data(), index[2 * l], index[2 * l + 1]),
                              kIqEvenParitySigns[(aux >> (7 * l)) & 127]);
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq3_s_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq3S*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      const __m256 db = _mm256_set1_ps(d * float(1 + 2 * ((b[i].scales[ib / 2] >> (4 * (ib % 2))) & 15)));
      const uint8_t* low = b[i].qs + 8 * ib;
      const int qh = b[i].qh[ib];
      for (int l = 0; l < 4; ++l)
        store_signed_point<S>(y + 8 * l, db,
                              point_pair(kIq3SGrid.data(), low[2 * l] | ((qh >> (2 * l)) & 1) << 8,
                                         low[2 * l + 1] | ((qh >> (2 * l + 1)) & 1) << 8),
                              b[i].signs[4 * ib + l]);
    }
  }
}

// iq1's delta, negated where `negative` (a 0/1 bit) is set: the sign bit set directly, as a choice between
// +delta and -delta compiled to a branch that mispredicted about every other subgroup.
inline float signed_delta(uint32_t negative) {
  uint32_t bits;
  std::memcpy(&bits, &iq1::kDelta, sizeof bits);
  bits |= negative << 31;
  float delta;
  std::memcpy(&delta, &bits, sizeof delta);
  return delta;
}

// 8 values of an iq1 grid point: dl * (level + delta), level the point's int8 byte j (-1, 0, 1).
template <Store8 S>
LOWBIT_AVX2 inline void store_shifted_point(float* y, __m256 dl, int index, float delta) {
  const __m256 level = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_cvtsi64_si128(int64_t(kIq1Grid[size_t(index)]))));
  store8<S>(y, _mm256_mul_ps(dl, _mm256_add_ps(level, _mm256_set1_ps(delta))));
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq1_s_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq1S*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < kBlock / 32; ++ib) {
      const uint16_t qh = b[i].qh[ib];
      const __m256 dl = _mm256_set1_ps(d * float(2 * ((qh >> 12) & 7) + 1));
      const float delta = signed_delta(qh >> 15);
      for (int l = 0; l < 4; ++l, y += 8) store_shifted_point<S>(y, dl, b[i].qs[4 * ib + l] | (((qh >> (3 * l)) & 7) << 8), delta);
    }
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq1_m_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq1M*>(in);
  for (int64_t i = 0; i < blocks; ++i) {
    uint16_t sc[4];
    std::memcpy(sc, b[i].scales, sizeof sc);
    const float d = f16_to_f32(iq1m_d_bits(sc));
    for (int ib = 0; ib < kBlock / 32; ++ib) {
      for (int l = 0; l < 4; ++l, y += 8) {
        const __m256 dl = _mm256_set1_ps(d * float(iq1m_multiplier(sc, ib, l / 2)));
        const uint8_t nibble = uint8_t(b[i].qh[2 * ib + l / 2] >> (4 * (l % 2)));
        store_shifted_point<S>(y, dl, b[i].qs[4 * ib + l] | ((nibble & 7) << 8), signed_delta((nibble >> 3) & 1));
      }
    }
  }
}

// iq4's 16 codebook values as floats, entries 0-7 and 8-15.
struct Iq4Codebook {
  __m256 low, high;
};
LOWBIT_AVX2 inline Iq4Codebook iq4_codebook() {
  alignas(32) float values[16];
  for (int i = 0; i < 16; ++i) values[i] = float(kIq4Codebook[i]);
  return {_mm256_load_ps(values), _mm256_load_ps(values + 8)};
}

// A 32-value sub-block of iq4 codes (value j: low nibble of qs[j], value j + 16: high nibble), each
// scale * codebook[code]: vpermps picks by the low 3 bits of each code from both halves of the codebook,
// bit 3 (moved to the sign bit) chooses between them.
template <Store8 S>
LOWBIT_AVX2 inline void store_iq4_sub_block(float* y, const Iq4Codebook& book, __m256 scale, const uint8_t* qs) {
  for (int half = 0; half < 4; ++half) {
    const __m256i bytes = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(qs + 8 * (half % 2))));
    const __m256i codes = half < 2 ? bytes : _mm256_srli_epi32(bytes, 4);  // values 0-15, then 16-31
    const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(codes, 28));
    const __m256 value = _mm256_blendv_ps(_mm256_permutevar8x32_ps(book.low, codes),
                                          _mm256_permutevar8x32_ps(book.high, codes), upper);
    store8<S>(y + 8 * half, _mm256_mul_ps(scale, value));
  }
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq4_nl_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq4Nl*>(in);
  const Iq4Codebook book = iq4_codebook();
  for (int64_t i = 0; i < blocks; ++i, y += 32) store_iq4_sub_block<S>(y, book, _mm256_set1_ps(f16_to_f32(b[i].d)), b[i].qs);
}

template <Store8 S>
LOWBIT_AVX2 void dequantize_iq4_xs_blocks(const void* in, float* y, int64_t blocks) {
  const auto* b = static_cast<const BlockIq4Xs*>(in);
  const Iq4Codebook book = iq4_codebook();
  for (int64_t i = 0; i < blocks; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32)
      store_iq4_sub_block<S>(y, book, _mm256_set1_ps(iq4::xs_scale(d, b[i].scales_l[ib / 2], b[i].scales_h, ib)),
                             b[i].qs + 16 * ib);
  }
}

constexpr IqDequantVectorKernels kAvx2Kernels = {
    by_output<dequantize_iq2_xxs_blocks<streaming>, dequantize_iq2_xxs_blocks<aligned>, dequantize_iq2_xxs_blocks<unaligned>>,
    by_output<dequantize_iq2_xs_blocks<streaming>, dequantize_iq2_xs_blocks<aligned>, dequantize_iq2_xs_blocks<unaligned>>,
    by_output<dequantize_iq2_s_blocks<streaming>, dequantize_iq2_s_blocks<aligned>, dequantize_iq2_s_blocks<unaligned>>,
    by_output<dequantize_iq3_xxs_blocks<streaming>, dequantize_iq3_xxs_blocks<aligned>, dequantize_iq3_xxs_blocks<unaligned>>,
    by_output<dequantize_iq3_s_blocks<streaming>, dequantize_iq3_s_blocks<aligned>, dequantize_iq3_s_blocks<unaligned>>,
    by_output<dequantize_iq1_s_blocks<streaming>, dequantize_iq1_s_blocks<aligned>, dequantize_iq1_s_blocks<unaligned>>,
    by_output<dequantize_iq1_m_blocks<streaming>, dequantize_iq1_m_blocks<aligned>, dequantize_iq1_m_blocks<unaligned>>,
    by_output<dequantize_iq4_nl_blocks<streaming>, dequantize_iq4_nl_blocks<aligned>, dequantize_iq4_nl_blocks<unaligned>>,
    by_output<dequantize_iq4_xs_blocks<streaming>, dequantize_iq4_xs_blocks<aligned>, dequantize_iq4_xs_blocks<unaligned>>};

}  // namespace

const IqDequantVectorKernels* avx2_iq_dequant_kernels() { return &kAvx2Kernels; }

#else

const IqDequantVectorKernels* avx2_iq_dequant_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml
