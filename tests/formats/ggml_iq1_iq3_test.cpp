// iq1_s, iq1_m, iq3_xxs, iq3_s beyond the golden files (ggml_codecs_test.cpp checks those):
// - their grids and sign tables are format data, stored compactly and expanded; the expansion must equal
//   ggml's published tables (src/ggml-common.h at ggml-org/ggml d99724f2). The expected values are FNV-1a
//   64 hashes of each table's bytes, little-endian, in table order, computed from ggml-common.h at that
//   commit (a script parsed the GGML_TABLE_BEGIN(...) lists and hashed them);
// - iq1_s refuses to quantize without importance weights, as ggml does;
// - round trips on random data stay within loose bounds, and threads building the search tables at once
//   get the same bytes;
// - iq1_s's vector split searches (AVX-512, AVX2: whichever this CPU runs) pick the scalar one's split,
//   its vector ascending order is the stable sort's, and the vector kernels of all four types write the
//   portable code's bytes on rows with ties, signed zeros, zero groups, outliers and zero weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "formats/ggml_iq1_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/ggml_iq1.h"
#include "lowbit/formats/ggml_iq3.h"
#include "lowbit/formats/ggml_iq_signs.h"

namespace lowbit {
namespace {

template <class T>
uint64_t fnv1a64(std::span<const T> table) {
  uint64_t hash = 0xcbf29ce484222325ull;
  for (const T value : table)
    for (size_t b = 0; b < sizeof(T); ++b) {
      hash ^= uint8_t(uint64_t(value) >> (8 * b));
      hash *= 0x100000001b3ull;
    }
  return hash;
}

TEST(GgmlIqTables, SignTablesMatchGgml) {
  EXPECT_EQ(fnv1a64<uint8_t>(ggml::kIqEvenParitySigns), 0xf19ba8f8c3292ba5ull);  // ksigns_iq2xs[128]
  for (int j = 0; j < 8; ++j) EXPECT_EQ(ggml::kIqSignBit[j], 1 << j);           // kmask_iq2xs
}

TEST(GgmlIqTables, Iq3GridsMatchGgml) {
  EXPECT_EQ(fnv1a64<uint32_t>(ggml::kIq3XxsGrid), 0xdfa5dc83d6a155d5ull);  // iq3xxs_grid[256]
  EXPECT_EQ(fnv1a64<uint32_t>(ggml::kIq3SGrid), 0xfa37020c25b44829ull);    // iq3s_grid[512]
  // Spot checks read off the published tables: the first entries, one with the 62 level, the last.
  EXPECT_EQ(ggml::kIq3XxsGrid[0], 0x04040404u);
  EXPECT_EQ(ggml::kIq3XxsGrid[5], 0x04040c3eu);
  EXPECT_EQ(ggml::kIq3XxsGrid[255], 0x3e341c04u);
  EXPECT_EQ(ggml::kIq3SGrid[0], 0x01010101u);
  EXPECT_EQ(ggml::kIq3SGrid[3], 0x0101010bu);
}

TEST(GgmlIqTables, Iq1GridMatchesGgml) {
  EXPECT_EQ(fnv1a64<uint64_t>(ggml::kIq1Grid), 0x6703ed863501ae2eull);  // iq1s_grid[2048] (the CPU table)
  EXPECT_EQ(ggml::kIq1Grid[0], 0xffffffffffffffffull);                  // all -1
  EXPECT_EQ(ggml::kIq1Grid[2047], 0x0101010101010101ull);               // all +1
}

std::vector<float> gaussian(size_t n, unsigned seed, float sigma) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.f, sigma);
  std::vector<float> x(n);
  for (float& v : x) v = normal(rng);
  return x;
}

double relative_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

TEST(GgmlIq1Codecs, Iq1SRefusesToQuantizeWithoutImportanceWeights) {
  EXPECT_TRUE(ggml_requires_imatrix(GgmlType::IQ1_S));
  EXPECT_FALSE(ggml_requires_imatrix(GgmlType::IQ1_M));  // ggml has it commented out of the list
  const std::vector<float> x = gaussian(256, 1, 1.f);
  std::vector<std::byte> bytes(ggml_row_bytes(GgmlType::IQ1_S, 256));
  try {
    quantize_rows(GgmlType::IQ1_S, x.data(), 1, 256, nullptr, bytes.data());
    ADD_FAILURE() << "iq1_s quantized without importance weights";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("importance"), std::string::npos) << e.what();
  }
}

// Gaussian data, relative RMS error (measured 0.51, 0.48, 0.58 without weights, 0.19, 0.17): loose
// bounds that catch a broken search, not a tuning change.
TEST(GgmlIqCodecs, RoundTripErrorIsBounded) {
  const int64_t rows = 5, cols = 1024;
  const std::vector<float> x = gaussian(size_t(rows * cols), 42, 0.02f);
  std::vector<float> weights = gaussian(size_t(cols), 43, 1.f);
  for (float& w : weights) w = 0.1f + std::fabs(w);
  struct Case {
    GgmlType type;
    bool weighted;
    double bound;
  };
  for (const Case& c : {Case{GgmlType::IQ1_S, true, 0.56}, Case{GgmlType::IQ1_M, true, 0.53},
                        Case{GgmlType::IQ1_M, false, 0.63}, Case{GgmlType::IQ3_XXS, true, 0.22},
                        Case{GgmlType::IQ3_S, false, 0.19}}) {
    SCOPED_TRACE(std::string(ggml_type_name(c.type)) + (c.weighted ? " with weights" : ""));
    std::vector<std::byte> bytes(size_t(rows) * ggml_row_bytes(c.type, cols));
    quantize_rows(c.type, x.data(), rows, cols, c.weighted ? weights.data() : nullptr, bytes.data());
    std::vector<float> y(x.size());
    dequantize_rows(c.type, bytes.data(), rows, cols, y.data());
    EXPECT_LE(relative_rmse(x, y), c.bound);
    EXPECT_GT(relative_rmse(x, y), 0.01);  // a lossy type: a zero error would mean nothing was quantized
  }
}

TEST(GgmlIqCodecs, ZeroRowsStayZero) {
  const std::vector<float> x(512, 0.f), weights(512, 1.f);
  for (const GgmlType type : {GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ3_XXS, GgmlType::IQ3_S}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    std::vector<std::byte> bytes(ggml_row_bytes(type, 512));
    quantize_rows(type, x.data(), 1, 512, weights.data(), bytes.data());
    std::vector<float> y(512, 1.f);
    dequantize_rows(type, bytes.data(), 1, 512, y.data());
    for (const float v : y) ASSERT_EQ(v, 0.f);
  }
}

// Quantizers share their search tables (built once, on first use) and nothing else: threads quantizing
// at once get the bytes of a single-threaded pass.
TEST(GgmlIqCodecs, ConcurrentQuantizersGiveTheSameBytes) {
  const int64_t cols = 512;
  const std::vector<float> x = gaussian(size_t(cols), 9, 1.f);
  const std::vector<float> weights(size_t(cols), 1.f);
  for (const GgmlType type : {GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ3_XXS, GgmlType::IQ3_S}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    const size_t size = ggml_row_bytes(type, cols);
    std::vector<std::vector<std::byte>> results(4, std::vector<std::byte>(size));
    std::vector<std::thread> threads;
    for (auto& out : results)
      threads.emplace_back([&, out_data = out.data()] {
        ggml_codec(type)->quantize_row(x.data(), out_data, cols, weights.data(), cpu::best_cpu_target());
      });
    for (auto& t : threads) t.join();
    std::vector<std::byte> again(size);
    ggml_codec(type)->quantize_row(x.data(), again.data(), cols, weights.data(), cpu::best_cpu_target());
    for (const auto& out : results) EXPECT_EQ(out, again);
  }
}

// The split search sees prefix sums of w*x and w over a group's ascending order. Random groups, some with
// zero weights, repeated values (ties between splits), mirror-symmetric values (splits of equal fit),
// heavy tails, all weights zero, and magnitudes from 1e-30 to 1e30 (where the vector searches fall back
// to the full scan), against the scalar search, bit for bit.
TEST(GgmlIq1Codecs, VectorSplitSearchesMatchTheScalarOne) {
  namespace iq1 = ggml::iq1;
  using iq1::kSGroup;
  std::mt19937 rng(15);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 2.f);
  int checked = 0;
  for (const cpu::CpuTarget target : cpu::supported_cpu_targets()) {
    const iq1::SplitSearchFn search = cpu::cpu_kernels(target).iq1_split;
    if (!search) continue;
    for (int group = 0; group < 4000; ++group) {
      float x[kSGroup], w[kSGroup];
      for (int i = 0; i < kSGroup; ++i) {
        x[i] = group % 4 == 1 ? float(int(normal(rng) * 2)) : normal(rng);
        w[i] = group % 5 == 2 && i % 3 == 0 ? 0.f : uniform(rng);
      }
      switch (group % 9) {
        case 3:  // mirror-symmetric values, equal weights
          for (int i = 0; i < kSGroup / 2; ++i) {
            x[kSGroup - 1 - i] = -x[i];
            w[i] = w[kSGroup - 1 - i] = 1.f;
          }
          break;
        case 5:  // heavy tails
          for (float& v : x) v /= std::max(0.05f, std::fabs(normal(rng)));
          break;
        case 7: {  // tiny or huge magnitudes
          const float scale = std::pow(10.f, float(int(group / 9) % 13 * 5 - 30));
          for (float& v : x) v *= scale;
          if (group % 2) for (float& v : w) v *= scale;
          break;
        }
        case 8:
          if (group % 7 == 1) std::fill(std::begin(w), std::end(w), 0.f);  // no split fits
          if (group % 7 == 3) w[group % kSGroup] = -w[group % kSGroup];     // a negative weight
          break;
      }
      std::sort(std::begin(x), std::end(x));
      float sumx[kSGroup + 1] = {}, sumw[kSGroup + 1] = {};
      for (int i = 0; i < kSGroup; ++i) {
        sumx[i + 1] = sumx[i] + w[i] * x[i];
        sumw[i + 1] = sumw[i] + w[i];
      }
      const iq1::Split want = iq1::best_split_scalar(sumx, sumw), got = search(sumx, sumw);
      ASSERT_EQ(got.i1, want.i1) << "group " << group;
      ASSERT_EQ(got.i2, want.i2) << "group " << group;
      ASSERT_EQ(got.shift, want.shift) << "group " << group;
      ASSERT_EQ(std::bit_cast<uint32_t>(got.scale), std::bit_cast<uint32_t>(want.scale)) << "group " << group;
    }
    ++checked;
  }
  if (!checked) GTEST_SKIP() << "this CPU runs no vector split search";
}

TEST(GgmlIq1Codecs, VectorAscendingOrderIsTheStableSort) {
  namespace iq1 = ggml::iq1;
  using iq1::kSGroup;
  int checked = 0;
  for (const cpu::CpuTarget target : cpu::supported_cpu_targets()) {
    const iq1::AscendingOrderFn order_of = cpu::cpu_kernels(target).iq1_ascending;
    if (!order_of) continue;
    ++checked;
    std::mt19937 rng(16);
    std::normal_distribution<float> normal;
    for (int group = 0; group < 2000; ++group) {
      float x[kSGroup];
      for (int i = 0; i < kSGroup; ++i) {
        x[i] = group % 3 == 1 ? float(int(normal(rng) * 2)) : normal(rng);  // many ties
        if (group % 4 == 2 && i % 5 == 0) x[i] = i % 2 ? -0.f : 0.f;       // -0 and +0 compare equal
      }
      int want[kSGroup], got[kSGroup];
      for (int i = 0; i < kSGroup; ++i) want[i] = i;
      std::stable_sort(std::begin(want), std::end(want), [&](int a, int b) { return x[a] < x[b]; });
      ASSERT_TRUE(order_of(x, got));
      for (int i = 0; i < kSGroup; ++i) ASSERT_EQ(got[i], want[i]) << "group " << group << ", position " << i;
    }
    float with_nan[kSGroup] = {};
    with_nan[7] = std::nanf("");
    int unused[kSGroup];
    EXPECT_FALSE(order_of(with_nan, unused));
  }
  if (!checked) GTEST_SKIP() << "this CPU runs no vector ascending order";
}

// Rows of every kind the searches meet, quantized under every CPU target: the scalar target's bytes.
TEST(GgmlIqCodecs, VectorKernelsWriteThePortableBytes) {
  const int64_t rows = 48, cols = 1024;
  std::mt19937 rng(17);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows * cols)), weights(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float scale = std::pow(10.f, uniform(rng) * 8 - 4);
    for (int64_t c = 0; c < cols; ++c) {
      float v = 0;
      switch (r % 6) {
        case 0: v = normal(rng) / std::max(0.05f, std::fabs(normal(rng))) * 0.01f; break;  // heavy tails
        case 1: v = uniform(rng) < 0.2f ? -0.f : float(int(normal(rng) * 3)) * 0.125f; break;  // ties
        case 2: v = (c / 32) % 5 == 0 ? 0.f : normal(rng) * scale; break;  // zero groups
        case 3: v = uniform(rng) < 0.3f ? (uniform(rng) < 0.5f ? -0.f : 0.f) : normal(rng) * 1e-9f; break;
        case 4: v = (c % 7 == 0 ? 20.f : 1.f) * normal(rng) * scale; break;  // outliers
        default: v = float(c % 16) - 7.5f; break;  // a repeated pattern
      }
      x[size_t(r * cols + c)] = v;
    }
  }
  for (int64_t c = 0; c < cols; ++c) weights[size_t(c)] = c % 97 == 0 ? 0.f : float(3 * std::pow(0.1 + uniform(rng), 2));
  for (const GgmlType type : {GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ3_XXS, GgmlType::IQ3_S, GgmlType::IQ2_XXS,
                              GgmlType::IQ2_XS, GgmlType::IQ2_S})
    for (const bool weighted : {false, true}) {
      const bool needs_weights = type == GgmlType::IQ1_S || type == GgmlType::IQ2_XXS || type == GgmlType::IQ2_XS;
      if (needs_weights && !weighted) continue;
      SCOPED_TRACE(std::string(ggml_type_name(type)) + (weighted ? " with weights" : ""));
      const size_t size = ggml_row_bytes(type, cols);
      auto quantize = [&](cpu::CpuTarget target) {
        std::vector<std::byte> bytes(size * size_t(rows));
        for (int64_t r = 0; r < rows; ++r)
          ggml_codec(type)->quantize_row(x.data() + r * cols, bytes.data() + size_t(r) * size, cols,
                                         weighted ? weights.data() : nullptr, target);
        return bytes;
      };
      const auto portable_bytes = quantize(cpu::CpuTarget::scalar);
      for (const cpu::CpuTarget target : cpu::supported_cpu_targets()) {
        if (target == cpu::CpuTarget::scalar) continue;
        SCOPED_TRACE(std::string(cpu::cpu_target_name(target)));
        const auto vector_bytes = quantize(target);
        for (int64_t r = 0; r < rows; ++r)
          EXPECT_TRUE(std::equal(vector_bytes.begin() + r * int64_t(size), vector_bytes.begin() + (r + 1) * int64_t(size),
                                 portable_bytes.begin() + r * int64_t(size)))
              << "row " << r;
      }
    }
}

TEST(GgmlIqCodecs, RejectRowsThatAreNotWholeBlocks) {
  const std::vector<float> x(300, 1.f), weights(300, 1.f);
  std::vector<std::byte> bytes(4096);
  std::vector<float> y(300);
  for (const GgmlType type : {GgmlType::IQ1_S, GgmlType::IQ1_M, GgmlType::IQ3_XXS, GgmlType::IQ3_S}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    EXPECT_THROW(ggml_codec(type)->quantize_row(x.data(), bytes.data(), 300, weights.data(), cpu::best_cpu_target()),
                 Error);
    EXPECT_THROW(ggml_codec(type)->dequantize_row(bytes.data(), y.data(), 300, cpu::best_cpu_target(),
                                                  cpu::OutputStores::cached),
                 Error);
  }
}

}  // namespace
}  // namespace lowbit
