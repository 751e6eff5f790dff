// iq2 codecs beyond the golden files: the stored grids against ggml's published tables (checksums),
// the sign tables, the search tables' invariants, the importance-weight requirement, round trips, and the
// vector search kernels (AVX2, AVX-512: those this CPU runs) against the portable ones, bit for bit.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "formats/ggml_iq2_grids.h"
#include "formats/ggml_iq2_search.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/ggml_iq_signs.h"

namespace lowbit {
namespace {

// FNV-1a (64-bit) over the table's bytes, little-endian as ggml-common.h's u64 entries lie in memory.
template <size_t N>
uint64_t fnv1a(const std::array<uint64_t, N>& table) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (const uint64_t entry : table)
    for (int b = 0; b < 8; ++b) h = (h ^ ((entry >> (8 * b)) & 0xFF)) * 0x100000001b3ull;
  return h;
}

// The expected values were computed with the same FNV-1a over iq2xxs_grid, iq2xs_grid and iq2s_grid as
// parsed from ggml-org/ggml d99724f2's src/ggml-common.h (sha256 af255601…, see the golden README).
TEST(GgmlIq2Grids, MatchGgmlPublishedTables) {
  EXPECT_EQ(fnv1a(ggml::iq2::kIq2xxsGrid), 0xbb4ee025b5ac6e8eull);
  EXPECT_EQ(fnv1a(ggml::iq2::kIq2xsGrid), 0xc9b1ee61e79909bdull);
  EXPECT_EQ(fnv1a(ggml::iq2::kIq2sGrid), 0x123edd38a3b62b90ull);
  // Spot checks against the header's first and last entries.
  EXPECT_EQ(ggml::iq2::kIq2xxsGrid[0], 0x0808080808080808ull);
  EXPECT_EQ(ggml::iq2::kIq2xxsGrid[255], 0x2b2b2b1908081908ull);
  EXPECT_EQ(ggml::iq2::kIq2sGrid[1023], 0x2b2b2b2b2b2b2b2bull);
}

TEST(GgmlIqSigns, EveryMaskHasEvenParityAndKeepsItsSevenBits) {
  for (uint32_t i = 0; i < 128; ++i) {
    const uint8_t mask = ggml::kIqEvenParitySigns[i];
    EXPECT_EQ(mask & 127, int(i));
    EXPECT_EQ(std::popcount(unsigned(mask)) % 2, 0) << i;
  }
  // ggml-common.h's ksigns_iq2xs starts 0, 129, 130, 3, 132 and ends 126, 255.
  EXPECT_EQ(ggml::kIqEvenParitySigns[1], 129);
  EXPECT_EQ(ggml::kIqEvenParitySigns[4], 132);
  EXPECT_EQ(ggml::kIqEvenParitySigns[126], 126);
  EXPECT_EQ(ggml::kIqEvenParitySigns[127], 255);
}

// Every key of levels 0..2 resolves: to itself when it is a grid point, else to a non-empty list of grid
// points at non-decreasing distance (ties by index), spanning at most 2 (iq2_xxs, iq2_xs) or 1 (iq2_s)
// distances, and holding every grid point at those distances.
TEST(GgmlIq2Grids, SearchTablesListNearestPointsInGgmlOrder) {
  using ggml::iq2::Grid;
  const std::span<const uint16_t> points[] = {ggml::iq2::kIq2xxsGridPoints, ggml::iq2::kIq2xsGridPoints,
                                              ggml::iq2::kIq2sGridPoints};
  const int nearest_levels[] = {2, 2, 1};
  auto distance = [](uint32_t a, uint32_t b) {
    int d2 = 0;
    for (int j = 0; j < 8; ++j) {
      const int diff = 2 * (int((a >> (2 * j)) & 3) - int((b >> (2 * j)) & 3));
      d2 += diff * diff;
    }
    return d2;
  };
  for (const Grid grid : {Grid::Xxs, Grid::Xs, Grid::S}) {
    const auto& t = ggml::iq2::search_tables(grid);
    const auto& pts = points[int(grid)];
    int checked = 0;
    for (uint32_t key = 0; key < uint32_t(ggml::iq2::kKeyCount); key += 7) {  // a sample of keys
      bool valid = true;
      for (int j = 0; j < 8; ++j) valid = valid && ((key >> (2 * j)) & 3) != 3;
      if (!valid) continue;
      ++checked;
      const int32_t entry = t.by_key[key];
      if (entry >= 0) {
        EXPECT_EQ(pts[size_t(entry)], key);
        continue;
      }
      const auto list = t.candidates(t.list_of(entry));
      ASSERT_FALSE(list.empty());
      std::vector<int> distances;
      for (size_t i = 0; i < list.size(); ++i) {
        distances.push_back(distance(key, pts[list[i]]));
        if (i > 0) {
          ASSERT_LE(distances[i - 1], distances[i]);
          if (distances[i - 1] == distances[i]) {
            ASSERT_LT(list[i - 1], list[i]);
          }
        }
      }
      const int farthest = distances.back();
      int levels = 1;
      for (size_t i = 1; i < distances.size(); ++i) levels += distances[i] != distances[i - 1];
      EXPECT_LE(levels, nearest_levels[int(grid)]);
      size_t within = 0;
      for (const uint16_t p : pts) within += distance(key, p) <= farthest;
      EXPECT_EQ(within, list.size());
    }
    EXPECT_GT(checked, 500);
  }
}

std::vector<float> heavy_rows(int64_t rows, int64_t cols, unsigned seed) {
  std::mt19937 rng(seed);
  std::student_t_distribution<float> heavy(4.f);
  std::vector<float> x(size_t(rows * cols));
  for (float& v : x) v = 0.02f * heavy(rng);
  return x;
}

TEST(GgmlIq2Codecs, XxsAndXsRefuseToQuantizeWithoutImportanceWeights) {
  const std::vector<float> x = heavy_rows(1, 256, 1);
  std::vector<std::byte> bytes(1024);
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    try {
      quantize_rows(type, x.data(), 1, 256, nullptr, bytes.data());
      ADD_FAILURE() << "no error without importance weights";
    } catch (const Error& e) {
      const std::string message = e.what();
      EXPECT_NE(message.find("importance"), std::string::npos) << message;
      EXPECT_NE(message.find("lowbit imatrix"), std::string::npos) << message;
    }
  }
  // iq2_s does without them.
  EXPECT_NO_THROW(quantize_rows(GgmlType::IQ2_S, x.data(), 1, 256, nullptr, bytes.data()));
}

double relative_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

// 2-bit codes of heavy-tailed values: errors well under the values' spread, and ordered by bits per value.
TEST(GgmlIq2Codecs, RoundTripErrorShrinksWithBits) {
  const int64_t rows = 6, cols = 1024;
  const std::vector<float> x = heavy_rows(rows, cols, 3);
  std::vector<float> weights(static_cast<size_t>(cols));
  std::mt19937 rng(4);
  std::uniform_real_distribution<float> uniform(0.1f, 2.f);
  for (float& w : weights) w = uniform(rng);
  double previous = 1.0;
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    std::vector<std::byte> bytes(size_t(rows) * ggml_row_bytes(type, cols));
    quantize_rows(type, x.data(), rows, cols, weights.data(), bytes.data());
    std::vector<float> y(x.size());
    dequantize_rows(type, bytes.data(), rows, cols, y.data());
    const double err = relative_rmse(x, y);
    EXPECT_LT(err, 0.6);
    EXPECT_LT(err, previous);
    previous = err;
  }
}

TEST(GgmlIq2Codecs, ZeroRowsStayZero) {
  const std::vector<float> x(512, 0.f), weights(512, 1.f);
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    std::vector<std::byte> bytes(ggml_row_bytes(type, 512));
    quantize_rows(type, x.data(), 1, 512, weights.data(), bytes.data());
    for (const std::byte b : bytes) ASSERT_EQ(b, std::byte{0});
    std::vector<float> y(512, 1.f);
    dequantize_rows(type, bytes.data(), 1, 512, y.data());
    for (const float v : y) ASSERT_EQ(v, 0.f);
  }
}

// Rows quantized on many threads at once (in a fresh process, the first of them builds the search tables)
// give the bytes of
// one thread.
TEST(GgmlIq2Codecs, ConcurrentQuantizersGiveTheSameBytes) {
  const int64_t cols = 512;
  const std::vector<float> x = heavy_rows(1, cols, 9);
  const std::vector<float> weights(size_t(cols), 1.f);
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S}) {
    const size_t row_bytes = ggml_row_bytes(type, cols);
    std::vector<std::vector<std::byte>> out(4, std::vector<std::byte>(row_bytes));
    std::vector<std::thread> threads;
    for (auto& bytes : out)
      threads.emplace_back([&, type] {
        ggml_codec(type)->quantize_row(x.data(), bytes.data(), cols, weights.data(), cpu::best_cpu_target());
      });
    for (auto& t : threads) t.join();
    for (const auto& bytes : out) EXPECT_EQ(std::memcmp(bytes.data(), out[0].data(), row_bytes), 0);
  }
}

// Each vector kernel set against the portable one on random groups: every trial's levels, keys and sums,
// and the nearest neighbours of random keys' lists at runs of trial scales, for every CPU target this CPU
// runs (an AVX2 set too on a CPU that also has AVX-512).
TEST(GgmlIq2Codecs, VectorSearchKernelsMatchThePortableOnes) {
  namespace iq2 = ggml::iq2;
  const iq2::SearchKernels& portable = iq2::portable_search_kernels();
  const iq2::SearchTables& tables = iq2::search_tables(iq2::Grid::Xs);
  std::mt19937 rng(21);
  std::normal_distribution<float> normal;
  std::uniform_real_distribution<float> uniform(0.f, 2.f);
  int checked = 0;
  for (const cpu::CpuTarget target : cpu::supported_cpu_targets()) {
    const iq2::SearchKernels* kernels = cpu::cpu_kernels(target).iq2_search;
    if (!kernels) continue;
    ++checked;
    for (int group = 0; group < 300; ++group) {
      float xval[32], weight[32], waux[32], ids[iq2::kTrialStride];
      float max = 0;
      for (int i = 0; i < 32; ++i) {
        xval[i] = std::fabs(normal(rng)) * (i % 9 == 4 ? -1.f : 1.f);  // a parity-flipped value stays negative
        weight[i] = group % 7 == 3 && i % 4 == 0 ? 0.f : uniform(rng);
        waux[i] = std::sqrt(weight[i]);
        max = std::max(max, xval[i]);
      }
      const int count = group % 2 ? 19 : 13;
      for (int t = 0; t < iq2::kTrialStride; ++t) ids[t] = (5.f + float(std::min(t, count - 1) - count / 2) * 0.1f) / max;
      std::vector<uint32_t> keys_want(4 * iq2::kTrialStride), keys_got(keys_want.size());
      portable.round_trials(xval, 32, ids, count, keys_want.data());
      kernels->round_trials(xval, 32, ids, count, keys_got.data());
      float sumqx_want[iq2::kTrialStride], sumq2_want[iq2::kTrialStride], sumqx_got[iq2::kTrialStride], sumq2_got[iq2::kTrialStride];
      portable.trial_sums(weight, xval, 32, keys_want.data(), count, sumqx_want, sumq2_want);
      kernels->trial_sums(weight, xval, 32, keys_want.data(), count, sumqx_got, sumq2_got);
      for (int t = 0; t < count; ++t) {
        for (int k = 0; k < 4; ++k)
          ASSERT_EQ(keys_got[size_t(k * iq2::kTrialStride + t)], keys_want[size_t(k * iq2::kTrialStride + t)]) << group;
        ASSERT_EQ(std::bit_cast<uint32_t>(sumqx_got[t]), std::bit_cast<uint32_t>(sumqx_want[t])) << group;
        ASSERT_EQ(std::bit_cast<uint32_t>(sumq2_got[t]), std::bit_cast<uint32_t>(sumq2_want[t])) << group;
      }
      // A random off-grid key's list (short and long ones), searched at a run of the trials' scales.
      int32_t entry = 0;
      while (entry >= 0 || tables.list_of(entry).count == 0) entry = tables.by_key[size_t(rng() % iq2::kKeyCount)];
      const iq2::SearchTables::List& list = tables.list_of(entry);
      float scales[iq2::kMaxScales];
      for (int m = 0; m < count; ++m) scales[m] = 1 / ids[m];
      int best_want[iq2::kMaxScales], best_got[iq2::kMaxScales];
      const int first = group % 3, members = count - first - group % 4;
      portable.nearest_at_scales(tables.lane_levels.data() + list.lane_first, int(list.count), xval + 8 * (group % 4),
                                 waux + 8 * (group % 4), scales + first, members, best_want);
      kernels->nearest_at_scales(tables.lane_levels.data() + list.lane_first, int(list.count), xval + 8 * (group % 4),
                                 waux + 8 * (group % 4), scales + first, members, best_got);
      for (int m = 0; m < members; ++m) ASSERT_EQ(best_got[m], best_want[m]) << group << " list of " << list.count;
      // The same list by its candidates' keys, at one scale: the lane-major search's choice.
      const uint32_t* candidate_keys = tables.neighbour_keys.data() + list.first;
      ASSERT_EQ(kernels->nearest_key_at_scale(candidate_keys, int(list.count), xval + 8 * (group % 4), waux + 8 * (group % 4),
                                              scales[first]),
                best_want[0])
          << group << " list of " << list.count;
      ASSERT_EQ(portable.nearest_key_at_scale(candidate_keys, int(list.count), xval + 8 * (group % 4), waux + 8 * (group % 4),
                                              scales[first]),
                best_want[0])
          << group << " list of " << list.count;
      for (const iq2::SearchKernels* by : {&portable, kernels})
        ASSERT_EQ(by->nearest_lanes_at_scale(tables.lane_levels.data() + list.lane_first, int(list.count),
                                             xval + 8 * (group % 4), waux + 8 * (group % 4), scales[first]),
                  best_want[0])
            << group << " list of " << list.count;
      // iq2_xxs's first fit (make_qp_quants), negative values and zero weights included.
      uint8_t codes_want[32], codes_got[32];
      const float fit_want = ggml_search::fit_unsigned_scale(32, 4, xval, codes_want, weight);
      const float fit_got = kernels->fit_unsigned_scale(32, 4, xval, codes_got, weight);
      ASSERT_EQ(std::bit_cast<uint32_t>(fit_got), std::bit_cast<uint32_t>(fit_want)) << group;
      ASSERT_EQ(std::memcmp(codes_got, codes_want, sizeof codes_want), 0) << group;
    }
  }
  if (!checked) GTEST_SKIP() << "this CPU runs no vector search kernels";
}

TEST(GgmlIq2Codecs, RejectRowsThatAreNotWholeBlocks) {
  const std::vector<float> x(300, 1.f), weights(300, 1.f);
  std::vector<std::byte> bytes(4096);
  std::vector<float> y(300);
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S}) {
    EXPECT_THROW(ggml_codec(type)->quantize_row(x.data(), bytes.data(), 300, weights.data(), cpu::best_cpu_target()),
                 Error);
    EXPECT_THROW(ggml_codec(type)->dequantize_row(bytes.data(), y.data(), 300, cpu::best_cpu_target(),
                                                  cpu::OutputStores::cached),
                 Error);
  }
}

}  // namespace
}  // namespace lowbit
