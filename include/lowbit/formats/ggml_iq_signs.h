// Signs shared by ggml's IQ families (iq2_*, iq3_*): each 8-value subgroup stores which of its values
// are negated. ggml-common.h spells these out as tables (kmask_iq2xs, ksigns_iq2xs); both are small
// enough to compute instead.
//
// The two decode rules below (the 8th sign bit, a grid point's signed values) are read by the C++
// compiler and by nvcc: the scalar dequantizers and the CUDA kernels (ggml_iquants.cu) decode
// through the same functions.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

#include "lowbit/core/host_device.h"

namespace lowbit::ggml {

// Bit j of a sign byte negates value j of its subgroup (ggml's kmask_iq2xs = 1 << j).
inline constexpr std::array<uint8_t, 8> kIqSignBit = {1, 2, 4, 8, 16, 32, 64, 128};

// iq2_xxs, iq2_xs and iq3_xxs keep only 7 sign bits per subgroup: their quantizers flip the least
// important value so that every subgroup has an even number of negated values, so the 8th bit is the
// parity of the other 7 (ggml's ksigns_iq2xs).
constexpr uint8_t expand_even_parity_signs(uint32_t seven_bits) {
  return uint8_t(seven_bits | (uint32_t(std::popcount(seven_bits & 127u) & 1) << 7));
}

inline constexpr std::array<uint8_t, 128> kIqEvenParitySigns = [] {
  std::array<uint8_t, 128> table{};
  for (uint32_t i = 0; i < 128; ++i) table[i] = expand_even_parity_signs(i);
  return table;
}();

// ---- decode rules, shared by every backend ----

// The 8 sign bits of a subgroup from its 7 stored ones (seven_bits < 128), as expand_even_parity_signs.
LOWBIT_HOST_DEVICE inline uint32_t even_parity_signs(uint32_t seven_bits) {
#ifdef __CUDA_ARCH__
  return seven_bits | uint32_t(__popc(seven_bits) & 1) << 7;
#else
  return expand_even_parity_signs(seven_bits);
#endif
}

// The values of one grid point: value j = ±(scale * magnitude j), the magnitudes the bytes of `point`
// (8 for iq2's u64 points, 4 for iq3's u32), negated where bit j of `signs` is set. One rounding per
// value, as ggml's dequantize_row_iq2_* / iq3_*.
template <class Word>
LOWBIT_HOST_DEVICE inline void signed_point(float scale, Word point, uint32_t signs, float* y) {
  LOWBIT_UNROLL
  for (int j = 0; j < int(sizeof(Word)); ++j) {
    const float v = mul_rn(scale, byte_as_float(uint32_t(point >> (32 * (j / 4))), j % 4));
    y[j] = (signs >> j) & 1 ? -v : v;
  }
}

}  // namespace lowbit::ggml
