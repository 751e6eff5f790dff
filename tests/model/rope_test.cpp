// RoPE frequencies and rotation against plain double-precision references written from the
// definitions (HF transformers' modeling_rope_utils formulas, ggml's rope_yarn).
#include <gtest/gtest.h>

#include <cmath>
#include <numbers>

#include "lowbit/core/error.h"
#include "lowbit/model/rope.h"

namespace lowbit {
namespace {

constexpr double kPi = std::numbers::pi;

std::vector<double> plain_inv_freq(double base, int dim) {
  std::vector<double> f;
  for (int i = 0; i < dim; i += 2) f.push_back(1.0 / std::pow(base, double(i) / dim));
  return f;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double rel = 2e-6) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], rel * std::abs(want[i])) << "pair " << i;
}

TEST(Rope, PlainFrequencies) {
  const auto t = rope_table({.n_rot = 64, .freq_base = 500000.0f});
  expect_close(t.inv_freq, plain_inv_freq(500000.0, 64));
  EXPECT_EQ(t.mscale, 1.0f);
}

// Llama 3 (HF's _compute_llama3_parameters): low frequencies divided by the factor, high ones kept,
// a smooth mix between; lowbit gets there through rope_freqs.weight's divisors.
TEST(Rope, Llama3FrequenciesThroughFreqFactors) {
  const double base = 500000, factor = 8, low = 1, high = 4, old_context = 8192;
  const int dim = 128;
  std::vector<double> want;
  std::vector<float> divisors;
  for (double f : plain_inv_freq(base, dim)) {
    const double wavelen = 2 * kPi / f;
    double scaled = f;
    if (wavelen > old_context / low) scaled = f / factor;
    else if (wavelen >= old_context / high) {
      const double smooth = (old_context / wavelen - low) / (high - low);
      scaled = (1 - smooth) * f / factor + smooth * f;
    }
    want.push_back(scaled);
    divisors.push_back(float(f / scaled));
  }
  const auto t = rope_table({.n_rot = dim, .freq_base = float(base), .freq_factors = divisors});
  expect_close(t.inv_freq, want);
  EXPECT_GT(want.front() / want.back(), 1e5);  // the reference spans both regimes
}

TEST(Rope, LinearDividesEveryFrequency) {
  const auto t = rope_table({.n_rot = 32, .freq_base = 10000.0f, .scaling = RopeScaling::linear, .factor = 4.0f});
  auto want = plain_inv_freq(10000.0, 32);
  for (auto& f : want) f /= 4;
  expect_close(t.inv_freq, want);
  EXPECT_EQ(t.mscale, 1.0f);
}

// YaRN (HF's _compute_yarn_parameters with truncate): a ramp between the correction dimensions of
// beta_fast = 32 and beta_slow = 1 rotations over the original context; magnitude 0.1 ln(factor) + 1.
TEST(Rope, YarnRampsBetweenInterpolationAndExtrapolation) {
  const double base = 1000000, factor = 4, original = 32768;
  const int dim = 128;
  auto correction_dim = [&](double rotations) { return dim * std::log(original / (rotations * 2 * kPi)) / (2 * std::log(base)); };
  const double low = std::max(0.0, std::floor(correction_dim(32))), high = std::min(double(dim - 1), std::ceil(correction_dim(1)));
  std::vector<double> want;
  const auto extrapolated = plain_inv_freq(base, dim);
  for (int i = 0; i < dim / 2; ++i) {
    const double ramp = std::clamp((i - low) / std::max(0.001, high - low), 0.0, 1.0);
    const double extrapolation_weight = 1 - ramp;
    want.push_back(extrapolated[size_t(i)] / factor * (1 - extrapolation_weight) + extrapolated[size_t(i)] * extrapolation_weight);
  }
  const auto t = rope_table({.n_rot = dim, .freq_base = float(base), .scaling = RopeScaling::yarn, .factor = float(factor), .original_context = 32768});
  expect_close(t.inv_freq, want, 1e-5);
  EXPECT_NEAR(t.mscale, 0.1 * std::log(factor) + 1, 1e-6);
  EXPECT_NEAR(t.inv_freq.front(), extrapolated.front(), 1e-6);           // fast pairs keep their frequency
  EXPECT_NEAR(t.inv_freq.back(), extrapolated.back() / factor, 1e-12);  // slow ones are interpolated
}

// The rotation itself: each pair rotated by pos · inv_freq, scaled by mscale; pairs adjacent or
// half a head apart; values past n_rot untouched.
TEST(Rope, RotatesPairsOfTheFirstNRotValues) {
  const int heads = 2, head_dim = 12, tokens = 5;
  RopeTable table = rope_table({.n_rot = 8, .freq_base = 100.0f});
  table.mscale = 1.25f;
  for (const bool neox : {false, true}) {
    std::vector<float> x(size_t(tokens * heads * head_dim));
    for (size_t i = 0; i < x.size(); ++i) x[i] = float(std::sin(0.37 * double(i)) + 0.1);
    const auto original = x;
    apply_rope(x.data(), tokens, heads, head_dim, table, neox, 3);
    for (int t = 0; t < tokens; ++t)
      for (int h = 0; h < heads; ++h) {
        const size_t at = size_t((t * heads + h) * head_dim);
        for (int i = 0; i < 4; ++i) {
          const size_t a = at + size_t(neox ? i : 2 * i), b = at + size_t(neox ? i + 4 : 2 * i + 1);
          const double angle = double(3 + t) * std::pow(100.0, -2.0 * i / 8), m = 1.25;
          EXPECT_NEAR(x[a], m * (original[a] * std::cos(angle) - original[b] * std::sin(angle)), 1e-5);
          EXPECT_NEAR(x[b], m * (original[a] * std::sin(angle) + original[b] * std::cos(angle)), 1e-5);
        }
        for (int i = 8; i < head_dim; ++i) EXPECT_EQ(x[at + size_t(i)], original[at + size_t(i)]);
      }
  }
}

TEST(Rope, RefusesInconsistentParameters) {
  EXPECT_THROW(rope_table({.n_rot = 7}), Error);
  EXPECT_THROW(rope_table({.n_rot = 8, .freq_factors = {1, 2, 3}}), Error);
  EXPECT_THROW(rope_table({.n_rot = 8, .scaling = RopeScaling::yarn, .factor = 4}), Error);
  EXPECT_THROW(rope_table({.n_rot = 8, .scaling = RopeScaling::linear, .factor = 0}), Error);
}

}  // namespace
}  // namespace lowbit
