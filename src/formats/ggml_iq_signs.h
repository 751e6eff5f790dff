// The sign tables of ggml's iq2/iq3 types (ggml-common.h kmask_iq2xs, ksigns_iq2xs). Eight values
// share a sign byte (bit j set: value j negated). iq2_xxs, iq2_xs and iq3_xxs store only 7 bits of it:
// their quantizers flip the least important sign so that the number of negated values is even, and the
// 8th bit is that parity. Both tables are computed here rather than copied.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace lowbit::ggml {

// kmask_iq2xs: the bit of value j in a sign byte.
inline constexpr std::array<uint8_t, 8> kSignBit = {1, 2, 4, 8, 16, 32, 64, 128};

// ksigns_iq2xs: 7 stored sign bits -> the full sign byte with even parity.
inline constexpr std::array<uint8_t, 128> kSignsFrom7Bits = [] {
  std::array<uint8_t, 128> table{};
  for (unsigned i = 0; i < 128; ++i) table[i] = uint8_t(i | ((std::popcount(i) & 1u) << 7));
  return table;
}();

}  // namespace lowbit::ggml
