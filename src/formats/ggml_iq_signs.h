// Sign tables shared by ggml's IQ families (iq2_*, iq3_*): each 8-value subgroup stores which of its
// values are negated. ggml-common.h spells these out as tables (kmask_iq2xs, ksigns_iq2xs); both are
// small enough to compute instead.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

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

}  // namespace lowbit::ggml
