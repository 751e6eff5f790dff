// The GPU's nf4/fp4 quantizer decides each value's code from a 64-bin table
// (src/kernels/cuda/bnb_quant_bins.h) instead of comparing it with every threshold. The table is
// plain C++, so this runs everywhere (CI included): the decision must be src/formats' scalar
// reference (bitsandbytes' dQuantizeNF4 / dQuantizeFP4) for every value near a threshold or a bin
// edge, just beyond ±1, for ±0 and NaN, and over a sweep of every value the kernel can produce.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cuda/bnb_quant_bins.h"
#include "lowbit/formats/bnb_tables.h"

namespace lowbit {
namespace {

using cuda::detail::code_4bit_by_bins;

float step(float x, int32_t ulps) { return std::bit_cast<float>(uint32_t(int64_t(std::bit_cast<uint32_t>(x)) + ulps)); }

// The kernel's inputs are products x · rcp.approx(absmax) (mul.ftz) with |x| ≤ absmax: never a
// signalling NaN nor a subnormal, and |v| ≤ 1 + 2^-22 (rcp.approx is within an ulp); NaN where the
// block's absmax is 0.
constexpr float kLargestProduct = 1.0f + 0x1p-20f;  // with margin
bool can_reach_the_decision(float v) {
  const uint32_t bits = std::bit_cast<uint32_t>(v);
  const bool signalling_nan = std::isnan(v) && (bits & 0x00400000u) == 0;
  return !signalling_nan && std::fpclassify(v) != FP_SUBNORMAL && (std::isnan(v) || std::fabs(v) <= kLargestProduct);
}

// Calls f on both signs of: every threshold ± 512 ulps, every bin edge of both tables ± 64 ulps (±1
// among them), zeros, infinities, NaN; then on every 47th float bit pattern up to kLargestProduct.
template <class F>
void for_each_probe(F&& f) {
  auto around = [&](float x, int32_t ulps) {
    for (int32_t d = -ulps; d <= ulps; ++d) f(step(x, d)), f(-step(x, d));
  };
  for (float t : bnb::tables::kNf4Thresholds) around(std::fabs(t), 512);
  for (float t : bnb::tables::kFp4AbsThresholds) around(t, 512);
  for (int b = 0; b <= cuda::detail::kQuantBins; ++b) {
    around(-1.0f + 2.0f * float(b) / cuda::detail::kQuantBins, 64);
    around(float(b) / cuda::detail::kQuantBins, 64);
  }
  for (float x : {0.0f, std::numeric_limits<float>::infinity(), std::numeric_limits<float>::quiet_NaN(),
                  std::numeric_limits<float>::max(), std::numeric_limits<float>::min()})
    f(x), f(-x);
  for (uint32_t bits = 0; bits <= std::bit_cast<uint32_t>(kLargestProduct); bits += 47)
    f(std::bit_cast<float>(bits)), f(-std::bit_cast<float>(bits));
}

template <bool Fp4, class Reference>
void expect_reference_codes(const cuda::detail::QuantBinTable& table, Reference reference) {
  int64_t checked = 0, wrong = 0;
  for_each_probe([&](float v) {
    if (!can_reach_the_decision(v)) return;
    ++checked;
    const uint32_t got = code_4bit_by_bins<Fp4>(v, table.bins.data()), want = reference(v);
    if (got != want && ++wrong <= 8) ADD_FAILURE() << std::hexfloat << v << ": table gives " << got << ", reference " << want;
  });
  EXPECT_EQ(wrong, 0) << "of " << checked << " values";
  EXPECT_GT(checked, 40'000'000);
}

TEST(BnbQuantBins, Nf4TableDecidesAsTheThresholds) {
  expect_reference_codes<false>(cuda::detail::kNf4Table, [](float v) { return uint32_t(bnb::detail::nf4_code_of_scaled(v)); });
}

TEST(BnbQuantBins, Fp4TableDecidesAsTheThresholds) {
  expect_reference_codes<true>(cuda::detail::kFp4Table, [](float v) { return uint32_t(bnb::detail::fp4_code_of_scaled(v)); });
}

}  // namespace
}  // namespace lowbit
