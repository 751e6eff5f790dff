// nf4/fp4 quantization by table: the per-value decision of bnb_4bit.cu's quantize kernel, in a
// header the CPU tests compile too (tests/kernels/bnb_quant_bins_test.cpp holds it to src/formats'
// scalar reference around every threshold and every bin edge).
//
// The scaled value x (nf4: v in [-1, 1); fp4: |v| in [0, 1)) falls in one of 64 equal bins: x + 3
// (nf4) or x + 1 (fp4) lies in [2, 4) or [1, 2), where the float's six top mantissa bits are the bin.
// Every bin holds at most one threshold, none within a rounding error of the bin's edges (checked at
// compile time), so the bin's entry (that threshold, the codes below and above it) decides with one
// compare of x itself, exactly as the thresholds do.
//
// The index also takes the exponent's lowest bit: 128 entries, so that the values the kernel can
// produce just beyond ±1 (v = x · rcp.approx(absmax), |v| ≤ 1 + 2^-22) land in entries of their own
// without a clamp (two instructions per value): nf4's x + 3 rounds to [4, 4.06) (entry 64, the top
// code) or to [1.98, 2) (entry 127, code 0); fp4's |x| + 1 to [2, 2.03) (entry 0, the top code), its
// bins sitting at 64–127. A NaN (nf4) falls in an unused entry, whose code is 0, as bitsandbytes'
// decision trees give it; fp4 maps it to 0 before the lookup.
#pragma once

#include <math.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/bnb_tables.h"

namespace lowbit::cuda::detail {

constexpr int kQuantBins = 64, kQuantEntries = 128;
// 8 bytes: a warp's 32 lookups of random bins are then a few shared-memory wavefronts. With 16-byte
// entries they were many more, and the quantize kernel ran at 0.4 of copy bandwidth instead of 0.6.
struct alignas(8) QuantBin {
  float threshold;  // x > threshold: `above`, else `below` (2.0: no threshold in this bin)
  uint16_t below, above;
};
struct QuantBinTable {
  std::array<QuantBin, kQuantEntries> bins{};
  bool valid = true;
};
// Entry of y = x + 3 (nf4) or |x| + 1 (fp4): the exponent's lowest bit, then the mantissa's top 6 bits.
LOWBIT_HOST_DEVICE constexpr uint32_t quant_entry(float y) { return (std::bit_cast<uint32_t>(y) >> 17) & (kQuantEntries - 1); }

// Bins of `width` from `low` at entries [first, first + 64); `top` holds the values above the last
// bin; every other entry the lowest code. The code is how many thresholds x exceeds (nf4), or for
// fp4 that rank's bit pattern {0, 1, 6, 7, 4, 5, 2, 3} (the sign bit is added per value).
template <size_t N>
constexpr QuantBinTable make_quant_bins(const std::array<float, N>& thresholds, double low, double width, int first,
                                        int top, bool fp4) {
  QuantBinTable table;
  auto code = [&](uint32_t r) { return uint16_t(fp4 ? (0x32547610u >> (4 * r)) & 7u : r); };
  for (QuantBin& entry : table.bins) entry = {2.0f, code(0), code(0)};
  table.bins[size_t(top)] = {2.0f, code(N), code(N)};
  for (int b = 0; b < kQuantBins; ++b) {
    const double begin = low + b * width, end = begin + width, margin = width / 4096;
    uint32_t rank = 0, inside = 0;
    float threshold = 2.0f;
    for (float t : thresholds) {
      if (double(t) < begin) ++rank;
      else if (double(t) < end) ++inside, threshold = t;
      if (double(t) > begin - margin && double(t) < begin + margin) table.valid = false;  // too near an edge
    }
    if (inside > 1) table.valid = false;
    table.bins[size_t(first + b)] = {threshold, code(rank), code(rank + inside)};
  }
  return table;
}
constexpr QuantBinTable kNf4Table =
    make_quant_bins(bnb::tables::kNf4Thresholds, -1.0, 2.0 / kQuantBins, /*first=*/0, /*top=*/64, false);
constexpr QuantBinTable kFp4Table =
    make_quant_bins(bnb::tables::kFp4AbsThresholds, 0.0, 1.0 / kQuantBins, /*first=*/64, /*top=*/0, true);
static_assert(kNf4Table.valid && kFp4Table.valid, "a quantization bin holds two thresholds, or one near its edge");
static_assert(quant_entry(4.0f) == 64 && quant_entry(2.0f - 0x1p-23f) == 127 && quant_entry(2.0f) == 0 &&
              quant_entry(1.0f) == 64);

// The code of scaled value v (NaN, or |v| ≤ 1 + 2^-20: the products the kernel makes) from `bins`
// (kNf4Table's or kFp4Table's).
template <bool Fp4>
LOWBIT_HOST_DEVICE inline uint32_t code_4bit_by_bins(float v, const QuantBin* bins) {
  if constexpr (!Fp4) {
    const QuantBin b = bins[quant_entry(v + 3.0f)];
    return v > b.threshold ? b.above : b.below;
  } else {
    const float x = fmaxf(fabsf(v), 0.0f);  // NaN: 0
    const QuantBin b = bins[quant_entry(x + 1.0f)];
    return (x > b.threshold ? b.above : b.below) | (v < 0.0f ? 8u : 0u);
  }
}

}  // namespace lowbit::cuda::detail
