// nf4/fp4 quantization by table: the per-value decision of bnb_4bit.cu's quantize kernel, in a
// header the CPU tests compile too (tests/kernels/bnb_quant_bins_test.cpp holds it to src/formats'
// scalar reference around every threshold and every bin edge).
//
// The scaled value x (nf4: v in [-1, 1); fp4: |v| in [0, 1)) falls in one of 64 equal bins: x + 3
// (nf4) or x + 1 (fp4) lies in [2, 4) or [1, 2), where the float's six top mantissa bits are the bin.
// Every bin holds at most one threshold, none within a rounding error of the bin's edges (checked at
// compile time), so the bin's entry (that threshold, the codes below and above it) decides with one
// compare of x itself, exactly as the thresholds do. Values beyond ±1 are clamped (every threshold
// lies inside); NaN is clamped to the lowest value, code 0, as bitsandbytes' decision trees give it.
#pragma once

#include <math.h>

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/bnb_tables.h"

namespace lowbit::cuda::detail {

constexpr int kQuantBins = 64;
// 8 bytes: a warp's 32 lookups of random bins are then a few shared-memory wavefronts. With 16-byte
// entries they were many more, and the quantize kernel ran at 0.4 of copy bandwidth instead of 0.6.
struct alignas(8) QuantBin {
  float threshold;  // x > threshold: `above`, else `below` (2.0: no threshold in this bin)
  uint16_t below, above;
};
constexpr float kNf4Top = 0.99999952f;  // 1 - 2^-21: x + 3 stays below 4
constexpr float kFp4Top = 0.99999976f;  // 1 - 2^-22: x + 1 stays below 2
static_assert(kNf4Top + 3.0f < 4.0f && kFp4Top + 1.0f < 2.0f);

struct QuantBinTable {
  std::array<QuantBin, kQuantBins> bins{};
  bool valid = true;
};
// Bins of `width` from `low`. The code is how many thresholds x exceeds (nf4), or for fp4 that rank's
// bit pattern {0, 1, 6, 7, 4, 5, 2, 3} (the sign bit is added per value).
template <size_t N>
constexpr QuantBinTable make_quant_bins(const std::array<float, N>& thresholds, double low, double width, bool fp4) {
  QuantBinTable table;
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
    auto code = [&](uint32_t r) { return fp4 ? (0x32547610u >> (4 * r)) & 7u : r; };
    table.bins[size_t(b)] = {threshold, uint16_t(code(rank)), uint16_t(code(rank + inside))};
  }
  return table;
}
constexpr QuantBinTable kNf4Table = make_quant_bins(bnb::tables::kNf4Thresholds, -1.0, 2.0 / kQuantBins, false);
constexpr QuantBinTable kFp4Table = make_quant_bins(bnb::tables::kFp4AbsThresholds, 0.0, 1.0 / kQuantBins, true);
static_assert(kNf4Table.valid && kFp4Table.valid, "a quantization bin holds two thresholds, or one near its edge");
// The code of scaled value v (the product x · rcp(absmax)), from `bins` (kNf4Table's or kFp4Table's).
template <bool Fp4>
LOWBIT_HOST_DEVICE inline uint32_t code_4bit_by_bins(float v, const QuantBin* bins) {
  if constexpr (!Fp4) {
    const float x = fminf(fmaxf(v, -1.0f), kNf4Top);  // NaN: -1
    const QuantBin b = bins[(std::bit_cast<uint32_t>(x + 3.0f) >> 17) & (kQuantBins - 1)];
    return x > b.threshold ? b.above : b.below;
  } else {
    const float x = fminf(fmaxf(fabsf(v), 0.0f), kFp4Top);  // NaN: 0
    const QuantBin b = bins[(std::bit_cast<uint32_t>(x + 1.0f) >> 17) & (kQuantBins - 1)];
    return (x > b.threshold ? b.above : b.below) | (v < 0.0f ? 8u : 0u);
  }
}

}  // namespace lowbit::cuda::detail
