// GPTQ on ggml's block formats (lowbit/formats/gptq.h): on a random layer whose inputs are correlated,
// its output error ‖(W − Ŵ)X‖² beats rounding each value on its own; its bytes are the format's (the
// standard dequantizer reads them); with H = identity no error is fed forward, so it must give the
// format's own choices back; and the sweep matches a plain GPTQ written here without lazy batches.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "formats/ggml_block_grid.h"
#include "lowbit/core/error.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/gptq.h"

namespace lowbit {
namespace {

constexpr int64_t kRows = 48, kCols = 512, kTokens = 1024;

const GgmlType kTypes[] = {GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                           GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                           GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::MXFP4, GgmlType::NVFP4, GgmlType::Q1_0,
                           GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::IQ3_XXS, GgmlType::IQ3_S,
                           GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S, GgmlType::IQ1_S, GgmlType::IQ1_M};

bool group_codebook(GgmlType type) { return ggml::block_grid_codec(type)->group_values > 1; }

struct Layer {
  std::vector<float> w;        // kRows × kCols
  std::vector<float> hessian;  // XᵀX, kCols × kCols
  std::vector<float> diag;     // diag(H) / tokens: the importance matrix
};

// X = Z A with Z Gaussian and A = I + a dense random mix, so neighbouring and distant inputs correlate;
// a few inputs are made much louder than the rest, as in real activations.
Layer random_layer(unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> mix(size_t(kCols * kCols));
  for (int64_t i = 0; i < kCols; ++i)
    for (int64_t j = 0; j < kCols; ++j) mix[size_t(i * kCols + j)] = (i == j ? 1.0f : 0.0f) + 0.08f * normal(rng);
  std::vector<float> x(size_t(kTokens * kCols));
  std::vector<float> z(static_cast<size_t>(kCols));
  for (int64_t t = 0; t < kTokens; ++t) {
    for (auto& v : z) v = normal(rng);
    for (int64_t j = 0; j < kCols; ++j) {
      double s = 0;
      for (int64_t i = 0; i < kCols; ++i) s += double(z[size_t(i)]) * mix[size_t(i * kCols + j)];
      x[size_t(t * kCols + j)] = float(s) * (j % 37 == 0 ? 6.0f : 1.0f);
    }
  }
  Layer l;
  l.hessian.assign(size_t(kCols * kCols), 0.0f);
  for (int64_t i = 0; i < kCols; ++i)
    for (int64_t j = i; j < kCols; ++j) {
      double s = 0;
      for (int64_t t = 0; t < kTokens; ++t) s += double(x[size_t(t * kCols + i)]) * x[size_t(t * kCols + j)];
      l.hessian[size_t(i * kCols + j)] = l.hessian[size_t(j * kCols + i)] = float(s);
    }
  for (int64_t i = 0; i < kCols; ++i) l.diag.push_back(l.hessian[size_t(i * kCols + i)] / float(kTokens));
  l.w.resize(size_t(kRows * kCols));
  for (auto& v : l.w) v = 0.02f * normal(rng);
  return l;
}

std::vector<float> decode(GgmlType type, const std::vector<std::byte>& bytes) {
  std::vector<float> out(size_t(kRows * kCols));
  dequantize_rows(type, bytes.data(), kRows, kCols, out.data());
  return out;
}

std::vector<std::byte> plain(GgmlType type, const std::vector<float>& w, const float* importance) {
  std::vector<std::byte> bytes(size_t(kRows) * ggml_row_bytes(type, kCols));
  quantize_rows(type, w.data(), kRows, kCols, importance, bytes.data());
  return bytes;
}

std::vector<std::byte> gptq(GgmlType type, const std::vector<float>& w, const GptqFactor& factor, const float* importance) {
  std::vector<std::byte> bytes(size_t(kRows) * ggml_row_bytes(type, kCols));
  gptq_quantize_rows(type, w.data(), kRows, kCols, factor, importance, bytes.data());
  return bytes;
}

// ‖(W − Ŵ)X‖² = Σ_rows e H eᵀ.
double output_error(const Layer& l, const std::vector<float>& decoded) {
  double total = 0;
  std::vector<double> e(static_cast<size_t>(kCols));
  for (int64_t r = 0; r < kRows; ++r) {
    for (int64_t j = 0; j < kCols; ++j) e[size_t(j)] = double(l.w[size_t(r * kCols + j)]) - decoded[size_t(r * kCols + j)];
    for (int64_t i = 0; i < kCols; ++i) {
      double s = 0;
      for (int64_t j = 0; j < kCols; ++j) s += double(l.hessian[size_t(i * kCols + j)]) * e[size_t(j)];
      total += e[size_t(i)] * s;
    }
  }
  return total;
}

std::vector<float> identity(int64_t n) {
  std::vector<float> h(size_t(n * n), 0.0f);
  for (int64_t i = 0; i < n; ++i) h[size_t(i * n + i)] = 1.0f;
  return h;
}

TEST(Gptq, FactorIsTheUpperCholeskyFactorOfTheDampedInverse) {
  const Layer l = random_layer(1);
  const GptqFactor f(l.hessian, kCols);
  EXPECT_EQ(f.damp_used(), 0.01f);
  double mean_diag = 0;
  for (float d : l.diag) mean_diag += double(d) * kTokens / kCols;
  // (H + λI) Uᵀ U = I.
  std::vector<double> utu(size_t(kCols * kCols), 0.0);
  for (int64_t k = 0; k < kCols; ++k)
    for (int64_t a = 0; a < kCols; ++a)
      for (int64_t b = 0; b < kCols; ++b) utu[size_t(a * kCols + b)] += double(f.row(k)[a]) * f.row(k)[b];
  double worst = 0;
  for (int64_t i = 0; i < kCols; i += 7)
    for (int64_t j = 0; j < kCols; j += 5) {
      double s = 0;
      for (int64_t k = 0; k < kCols; ++k)
        s += (double(l.hessian[size_t(i * kCols + k)]) + (i == k ? 0.01 * mean_diag : 0.0)) * utu[size_t(k * kCols + j)];
      worst = std::max(worst, std::fabs(s - (i == j ? 1.0 : 0.0)));
    }
  EXPECT_LT(worst, 1e-3);
  for (int64_t i = 0; i < kCols; ++i)
    for (int64_t j = 0; j < i; ++j) ASSERT_EQ(f.row(i)[j], 0.0f);
}

TEST(Gptq, BeatsRoundingToNearestOnTheLayerOutputForEveryType) {
  const Layer l = random_layer(2);
  const GptqFactor f(l.hessian, kCols);
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(ggml_type_name(type));
    ASSERT_TRUE(gptq_supports(type));
    const std::string name(ggml_type_name(type));
    if (!ggml_requires_imatrix(type)) {  // iq2_xxs and iq2_xs: ggml quantizes them only with importance weights
      const double rtn = output_error(l, decode(type, plain(type, l.w, nullptr)));
      const double ours = output_error(l, decode(type, gptq(type, l.w, f, nullptr)));
      EXPECT_LT(ours, 0.9 * rtn) << "GPTQ " << ours << " vs round-to-nearest " << rtn;
      std::printf("%s: output error GPTQ / rounding %.3f\n", name.c_str(), ours / rtn);
    }
    // With importance weights on both sides: GPTQ fitting scales with diag(H) vs the imatrix quantizer.
    const double rtn_imatrix = output_error(l, decode(type, plain(type, l.w, l.diag.data())));
    const double ours_imatrix = output_error(l, decode(type, gptq(type, l.w, f, l.diag.data())));
    EXPECT_LT(ours_imatrix, 0.9 * rtn_imatrix) << "GPTQ " << ours_imatrix << " vs imatrix " << rtn_imatrix;
    std::printf("%s: output error GPTQ / rounding, both with importance weights %.3f\n", name.c_str(), ours_imatrix / rtn_imatrix);
  }
}

// With H = I the sweep feeds nothing forward: each block is fitted by the format's quantizer on the
// original values and each value rounded to the nearest point of the stored grid. The k-quants derive
// their codes exactly so (step 3: from the fp16-rounded scales, ties to even), so the bytes must be
// theirs. The 32-, 64- and 128-value types, the iq4 and fp4 codebooks and the ternary types (ties away
// from zero) round otherwise: their scales must be equal and every value at least as close to the
// weight as theirs. The group codebooks (iq3_xxs, iq3_s, iq2_xxs, iq2_xs, iq2_s) choose a group's grid
// points and signs together, the exact nearest code under the stored scale, where the format's quantizer
// searches a few neighbours of the rounded levels, weighs each value (by x², or its importance times
// sqrt(sigma² + x²)) and, with 7 sign bits, flips a sign for parity before choosing points: single values
// may then move away, so the check is per group of 8, with the scales equal: the group's squared error at
// most the format's own.
void expect_groups_at_least_as_close(GgmlType type, const std::vector<float>& w, const std::vector<std::byte>& ours,
                                     const std::vector<std::byte>& theirs) {
  const size_t block_bytes = ggml_type_info(type).block_bytes;
  for (size_t b = 0; b < ours.size(); b += block_bytes) {
    // The scales: d first (but in iq1_m), then iq3_xxs's and iq2_xxs's top 4 bits of each group's sign
    // word, iq1_s's of each group's qh, the scale bytes at the end of iq3_s (4), iq2_xs, iq2_s and iq1_m
    // (8; iq1_m's d among them).
    if (type != GgmlType::IQ1_M) {
      ASSERT_EQ(std::memcmp(&ours[b], &theirs[b], 2), 0) << "block " << b / block_bytes;
    }
    if (type == GgmlType::IQ1_S) {  // each 32-value group's scale and shift: the top 4 bits of its u16 qh
      for (size_t ib = 0; ib < 8; ++ib)
        ASSERT_EQ(uint8_t(ours[b + 34 + 2 * ib + 1]) >> 4, uint8_t(theirs[b + 34 + 2 * ib + 1]) >> 4) << "block " << b / block_bytes << " group " << ib;
    } else if (type == GgmlType::IQ3_XXS || type == GgmlType::IQ2_XXS) {
      for (size_t ib = 0; ib < 8; ++ib) {
        const size_t top = b + (type == GgmlType::IQ3_XXS ? 2 + 64 + 4 * ib + 3 : 2 + 8 * ib + 7);
        ASSERT_EQ(uint8_t(ours[top]) >> 4, uint8_t(theirs[top]) >> 4) << "block " << b / block_bytes << " group " << ib;
      }
    } else {
      const size_t tail = type == GgmlType::IQ3_S ? 4 : 8;
      ASSERT_EQ(std::memcmp(&ours[b + block_bytes - tail], &theirs[b + block_bytes - tail], tail), 0) << "block " << b / block_bytes;
    }
  }
  const auto a = decode(type, ours), p = decode(type, theirs);
  const size_t group = size_t(ggml::block_grid_codec(type)->group_values);
  double ours_total = 0, theirs_total = 0;
  for (size_t g = 0; g < a.size(); g += group) {
    double e_ours = 0, e_theirs = 0;
    for (size_t i = g; i < g + group; ++i) {
      e_ours += double(a[i] - w[i]) * (a[i] - w[i]);
      e_theirs += double(p[i] - w[i]) * (p[i] - w[i]);
    }
    ASSERT_LE(e_ours, e_theirs * (1 + 1e-5) + 1e-12) << "group " << g / group;
    ours_total += e_ours, theirs_total += e_theirs;
  }
  std::printf("%s, H = I: squared error of GPTQ's group codes / the format's %.3f\n", std::string(ggml_type_name(type)).c_str(),
              ours_total / theirs_total);
}

TEST(Gptq, WithIdentityHessianGivesTheFormatsOwnChoices) {
  const Layer l = random_layer(3);
  const GptqFactor f(identity(kCols), kCols);
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(ggml_type_name(type));
    if (group_codebook(type)) {
      // iq2_xxs and iq2_xs need importance weights: the same uniform ones on both sides.
      const std::vector<float> ones(static_cast<size_t>(kCols), 1.0f);
      const float* importance = ggml_requires_imatrix(type) ? ones.data() : nullptr;
      expect_groups_at_least_as_close(type, l.w, gptq(type, l.w, f, importance), plain(type, l.w, importance));
      continue;
    }
    const auto theirs = plain(type, l.w, nullptr);
    const auto ours = gptq(type, l.w, f, nullptr);
    const bool ternary = type == GgmlType::TQ1_0 || type == GgmlType::TQ2_0;  // lroundf, ties away from zero
    if (ggml_type_info(type).block_elements == 256 && type != GgmlType::IQ4_XS && !ternary) {
      EXPECT_EQ(ours, theirs);
      continue;
    }
    const size_t block_bytes = ggml_type_info(type).block_bytes;
    // Where the scales sit: d (and m) first, iq4_xs's d, scales_h and scales_l, mxfp4's exponent, nvfp4's
    // four E4M3 scales; the ternary types' d last.
    auto scale_span = [&]() -> std::pair<size_t, size_t> {
      switch (type) {
        case GgmlType::Q4_1: case GgmlType::Q5_1: return {0, 4};
        case GgmlType::IQ4_XS: return {0, 8};
        case GgmlType::MXFP4: return {0, 1};
        case GgmlType::NVFP4: return {0, 4};
        case GgmlType::TQ1_0: case GgmlType::TQ2_0: return {block_bytes - 2, 2};
        default: return {0, 2};
      }
    };
    const auto [scale_at, scale_bytes] = scale_span();
    for (size_t b = 0; b < ours.size(); b += block_bytes)
      ASSERT_EQ(std::memcmp(&ours[b + scale_at], &theirs[b + scale_at], scale_bytes), 0) << "block " << b / block_bytes;
    const auto a = decode(type, ours), p = decode(type, theirs);
    size_t differ = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      ASSERT_LE(std::fabs(a[i] - l.w[i]), std::fabs(p[i] - l.w[i]) + 1e-7f) << "value " << i;
      differ += a[i] != p[i];
    }
    EXPECT_LT(differ, a.size() / 100);
  }
}

// tq1_0 keeps five trits in a byte as a base-3 fraction: setting one code leaves every other as it was.
TEST(Gptq, Tq1_0CodesAreSetOneAtATime) {
  const auto* grid = ggml::block_grid_codec(GgmlType::TQ1_0);
  std::mt19937 rng(9);
  std::vector<float> x(256);
  std::normal_distribution<float> normal;
  for (auto& v : x) v = normal(rng);
  std::vector<std::byte> block(ggml_type_info(GgmlType::TQ1_0).block_bytes);
  quantize_rows(GgmlType::TQ1_0, x.data(), 1, 256, nullptr, block.data());
  std::vector<int> codes(256);
  for (int e = 0; e < 256; ++e) codes[size_t(e)] = grid->code(block.data(), e);
  for (int e = 0; e < 256; ++e)
    for (int q : {0, 1, 2}) {
      grid->set_code(block.data(), e, q);
      codes[size_t(e)] = q;
      for (int k = 0; k < 256; ++k) ASSERT_EQ(grid->code(block.data(), k), codes[size_t(k)]) << "set " << e << " to " << q << ", read " << k;
    }
}

// The standard dequantizer reads GPTQ's bytes as the values GPTQ chose on each block's grid. For a group
// codebook: the decoded values are grid points under the stored scales, so asked for the code nearest
// them, set_group must give back exactly them and leave the bytes as they are.
TEST(Gptq, BytesDecodeToTheChosenGridValues) {
  const Layer l = random_layer(4);
  const GptqFactor f(l.hessian, kCols);
  for (GgmlType type : kTypes) {
    SCOPED_TRACE(ggml_type_name(type));
    const auto bytes = gptq(type, l.w, f, l.diag.data());
    const auto decoded = decode(type, bytes);
    const auto* grid = ggml::block_grid_codec(type);
    const size_t block_bytes = ggml_type_info(type).block_bytes;
    if (group_codebook(type)) {
      const int gv = grid->group_values;
      std::vector<float> ones(static_cast<size_t>(gv), 1.0f), chosen(static_cast<size_t>(gv));
      for (size_t b = 0; b * block_bytes < bytes.size(); ++b) {
        std::vector<std::byte> block(&bytes[b * block_bytes], &bytes[b * block_bytes] + block_bytes);
        for (int first = 0; first < grid->block_values; first += gv) {
          const float* x = &decoded[b * size_t(grid->block_values) + size_t(first)];
          grid->set_group(block.data(), first, x, ones.data(), chosen.data());
          for (int k = 0; k < gv; ++k) ASSERT_EQ(chosen[size_t(k)], x[k]) << "block " << b << " value " << first + k;
        }
        ASSERT_EQ(std::memcmp(block.data(), &bytes[b * block_bytes], block_bytes), 0) << "block " << b;
      }
      continue;
    }
    std::vector<ggml::ValueGrid> grids(size_t(grid->block_values));
    for (size_t b = 0; b * block_bytes < bytes.size(); ++b) {
      grid->grids(&bytes[b * block_bytes], grids.data());
      for (int e = 0; e < grid->block_values; ++e) {
        const int q = grid->code(&bytes[b * block_bytes], e);
        ASSERT_NEAR(decoded[b * size_t(grid->block_values) + size_t(e)], grids[size_t(e)].value(q), 1e-6f) << "block " << b << " value " << e;
      }
    }
  }
}

// GPTQ as the paper states it, one column at a time over all rows, every error applied at once (no
// lazy batches), with the same factor and the same per-block grids: the same codes come out, but for
// rare values whose two nearest grid points the different summation order swaps.
TEST(Gptq, MatchesAPlainColumnByColumnSweep) {
  const Layer l = random_layer(5);
  const GptqFactor f(l.hessian, kCols);
  for (GgmlType type : {GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q3_K, GgmlType::MXFP4, GgmlType::TQ1_0, GgmlType::IQ3_XXS, GgmlType::IQ3_S,
                        GgmlType::IQ2_S, GgmlType::IQ1_M}) {
    SCOPED_TRACE(ggml_type_name(type));
    const auto* grid = ggml::block_grid_codec(type);
    const auto* codec = ggml_codec(type);
    const int bv = grid->block_values, gv = grid->group_values;
    const size_t block_bytes = ggml_type_info(type).block_bytes, row_bytes = ggml_row_bytes(type, kCols);
    std::vector<float> w = l.w;
    std::vector<std::byte> expected(size_t(kRows) * row_bytes);
    std::vector<ggml::ValueGrid> grids(gv > 1 ? 0 : size_t(kRows * bv));
    std::vector<float> chosen(static_cast<size_t>(kRows * gv)), weight(static_cast<size_t>(gv));
    for (int64_t j = 0; j < kCols; ++j) {
      for (int64_t r = 0; r < kRows; ++r) {
        std::byte* block = &expected[size_t(r) * row_bytes + size_t(j / bv) * block_bytes];
        if (j % bv == 0) {
          codec->quantize_row(&w[size_t(r * kCols + j)], block, bv, nullptr, cpu::best_cpu_target());
          if (gv == 1) grid->grids(block, &grids[size_t(r * bv)]);
        }
        float value = 0;
        if (gv > 1) {  // a group's code for its current values, weighed by 1 / U_jj²
          if (j % gv == 0) {
            for (int k = 0; k < gv; ++k) weight[size_t(k)] = 1 / (f.row(j + k)[j + k] * f.row(j + k)[j + k]);
            grid->set_group(block, int(j % bv), &w[size_t(r * kCols + j)], weight.data(), &chosen[size_t(r * gv)]);
          }
          value = chosen[size_t(r * gv + j % gv)];
        } else {
          const ggml::ValueGrid& g = grids[size_t(r * bv + j % bv)];
          int q = grid->code(block, int(j % bv));
          if (g.step != 0) {
            q = g.nearest(w[size_t(r * kCols + j)]);
            grid->set_code(block, int(j % bv), q);
          }
          value = g.value(q);
        }
        const float err = (w[size_t(r * kCols + j)] - value) / f.row(j)[j];
        for (int64_t k = j + 1; k < kCols; ++k) w[size_t(r * kCols + k)] -= err * f.row(j)[k];
      }
    }
    const auto ours = gptq(type, l.w, f, nullptr);
    size_t differ = 0;
    for (size_t i = 0; i < ours.size(); ++i) differ += ours[i] != expected[i];
    EXPECT_LT(differ, ours.size() / 200) << differ << " of " << ours.size() << " bytes differ";
    const double a = output_error(l, decode(type, ours)), b = output_error(l, decode(type, expected));
    EXPECT_NEAR(a, b, 0.01 * b);
  }
}

// bitsandbytes' nf4/fp4 written by GPTQ: the format's own bytes with H = identity, a lower output error
// than bitsandbytes' rounding, and the codes of a plain column-by-column sweep written here.
bnb::Bnb4bitQuantized gptq_4bit(const std::vector<float>& w, const bnb::Bnb4bitOptions& options, const GptqFactor& factor) {
  return gptq_quantize_4bit(TensorView::make(DType::f32, {kRows, kCols}, std::as_bytes(std::span(w))), options, factor, "w");
}
std::vector<float> decode_4bit(const bnb::Bnb4bitQuantized& q) {
  Tensor t = bnb::dequantize_4bit(q.packed, q.state, DType::f32);
  return {t.as<float>().begin(), t.as<float>().end()};
}

TEST(Gptq, WithIdentityHessianGivesBitsandbytesOwn4bitBytes) {
  const Layer l = random_layer(7);
  const GptqFactor f(identity(kCols), kCols);
  for (auto type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
    for (int64_t blocksize : {64, 128, 512})
      for (bool dq : {false, true}) {
        const bnb::Bnb4bitOptions options{.quant_type = type, .blocksize = blocksize, .double_quant = dq};
        const auto ours = gptq_4bit(l.w, options, f);
        const auto theirs = bnb::quantize_4bit(TensorView::make(DType::f32, {kRows, kCols}, std::as_bytes(std::span(l.w))), options);
        EXPECT_EQ(ours.packed, theirs.packed) << bnb::quant_type_name(type) << " " << blocksize << " " << dq;
        EXPECT_EQ(ours.state.block_scales(), theirs.state.block_scales()) << bnb::quant_type_name(type) << " " << blocksize << " " << dq;
      }
}

TEST(Gptq, Bitsandbytes4bitBeatsRoundingAndMatchesAPlainSweep) {
  const Layer l = random_layer(8);
  const GptqFactor f(l.hessian, kCols);
  for (auto type : {bnb::QuantType::nf4, bnb::QuantType::fp4}) {
    SCOPED_TRACE(std::string(bnb::quant_type_name(type)));
    const bnb::Bnb4bitOptions options{.quant_type = type, .blocksize = 64};
    const auto ours = gptq_4bit(l.w, options, f);
    const auto plain = bnb::quantize_4bit(TensorView::make(DType::f32, {kRows, kCols}, std::as_bytes(std::span(l.w))), options);
    const double gptq_error = output_error(l, decode_4bit(ours)), plain_error = output_error(l, decode_4bit(plain));
    EXPECT_LT(gptq_error, 0.8 * plain_error) << gptq_error << " vs " << plain_error;

    // The textbook sweep: every column's error fed to all later ones at once, the block's absmax taken
    // from the updated values, the value coded by bitsandbytes' rule.
    const auto& lut = bnb::code_map(type);
    std::vector<float> w = l.w, expected(l.w.size());
    for (int64_t r = 0; r < kRows; ++r) {
      float absmax = 0;
      for (int64_t j = 0; j < kCols; ++j) {
        float* wr = &w[size_t(r * kCols)];
        if (j % 64 == 0) {
          absmax = 0;
          for (int64_t k = j; k < j + 64; ++k) absmax = std::max(absmax, std::fabs(wr[k]));
        }
        // nearest code value to wr[j] / absmax (bitsandbytes' thresholds are the midpoints, to float rounding)
        int best = 0;
        for (int c = 1; c < 16; ++c)
          if (std::fabs(lut[size_t(c)] * absmax - wr[j]) < std::fabs(lut[size_t(best)] * absmax - wr[j])) best = c;
        expected[size_t(r * kCols + j)] = lut[size_t(best)] * absmax;
        const float e = (wr[j] - expected[size_t(r * kCols + j)]) / f.row(j)[j];
        for (int64_t k = j + 1; k < kCols; ++k) wr[k] -= e * f.row(j)[k];
      }
    }
    const auto decoded = decode_4bit(ours);
    size_t differ = 0;
    for (size_t i = 0; i < decoded.size(); ++i) differ += decoded[i] != expected[i];
    EXPECT_LT(differ, decoded.size() / 100) << differ << " of " << decoded.size() << " values differ";
    EXPECT_NEAR(gptq_error, output_error(l, expected), 0.02 * gptq_error);
  }
}

TEST(Gptq, Int8RowsKeepBitsandbytesScalesAndBeatRounding) {
  const Layer l = random_layer(9);
  const TensorView w = TensorView::make(DType::f32, {kRows, kCols}, std::as_bytes(std::span(l.w)));
  const auto plain = bnb::quantize_int8_rowwise(w, 0.0f, "w");
  const auto same = gptq_quantize_int8_rows(w, GptqFactor(identity(kCols), kCols), "w");
  EXPECT_EQ(same.cb, plain.cb);
  EXPECT_EQ(same.scb, plain.scb);
  const auto ours = gptq_quantize_int8_rows(w, GptqFactor(l.hessian, kCols), "w");
  EXPECT_EQ(ours.scb, plain.scb);  // the row scales are bitsandbytes'; only the codes move
  auto decoded = [](const bnb::Int8RowwiseQuantized& q) {
    Tensor t = bnb::dequantize_int8_rowwise(q, DType::f32);
    return std::vector<float>(t.as<float>().begin(), t.as<float>().end());
  };
  const double gptq_error = output_error(l, decoded(ours)), plain_error = output_error(l, decoded(plain));
  EXPECT_LT(gptq_error, 0.8 * plain_error) << gptq_error << " vs " << plain_error;
}

TEST(Gptq, Bitsandbytes4bitRefusesBlocksAcrossRowsAndNonFiniteValues) {
  const GptqFactor f(identity(kCols), kCols);
  std::vector<float> w(size_t(kRows * kCols), 0.5f);
  EXPECT_THROW(gptq_4bit(w, {.blocksize = 1024}, f), Error);  // 512 columns: a block would straddle two rows
  w[size_t(7 * kCols + 3)] = NAN;
  try {
    gptq_4bit(w, {}, f);
    ADD_FAILURE() << "a NaN was quantized";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(7 * kCols + 3)), std::string::npos) << e.what();
  }
}

TEST(Gptq, DeadInputsAreRoundedToNearest) {
  Layer l = random_layer(6);
  for (int64_t j = 0; j < kCols; ++j) l.hessian[size_t(3 * kCols + j)] = l.hessian[size_t(j * kCols + 3)] = 0.0f;
  const GptqFactor f(l.hessian, kCols);
  for (int64_t j = 0; j < kCols; ++j)
    if (j != 3) {
      EXPECT_EQ(f.row(3)[j], 0.0f);
    }
  const auto decoded = decode(GgmlType::Q8_0, gptq(GgmlType::Q8_0, l.w, f, nullptr));
  for (float v : decoded) ASSERT_TRUE(std::isfinite(v));
}

TEST(Gptq, RefusesWhatItCannotWrite) {
  const GptqFactor f(identity(kCols), kCols);
  std::vector<float> w(size_t(kRows * kCols), 0.5f);
  std::vector<std::byte> out(size_t(kRows) * ggml_row_bytes(GgmlType::Q8_0, kCols));
  // q2_0: left to rounding (GPTQ lost to it); f16: not a block format.
  for (GgmlType type : {GgmlType::Q2_0, GgmlType::F16}) {
    EXPECT_FALSE(gptq_supports(type));
    EXPECT_THROW(gptq_quantize_rows(type, w.data(), kRows, kCols, f, nullptr, out.data()), Error);
  }
  const GptqFactor small(identity(256), 256);
  EXPECT_THROW(gptq_quantize_rows(GgmlType::Q8_0, w.data(), kRows, kCols, small, nullptr, out.data()), Error);
  EXPECT_THROW(GptqFactor(std::vector<float>(10), 4), Error);
}

}  // namespace
}  // namespace lowbit
