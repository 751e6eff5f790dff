// iq2 codecs beyond the golden files: the stored grids against ggml's published tables (checksums),
// the sign tables, the search tables' invariants, the importance-weight requirement, and round trips.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "formats/ggml_iq2_grids.h"
#include "formats/ggml_iq_signs.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"

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
      threads.emplace_back([&, type] { ggml_codec(type)->quantize_row(x.data(), bytes.data(), cols, weights.data()); });
    for (auto& t : threads) t.join();
    for (const auto& bytes : out) EXPECT_EQ(std::memcmp(bytes.data(), out[0].data(), row_bytes), 0);
  }
}

TEST(GgmlIq2Codecs, RejectRowsThatAreNotWholeBlocks) {
  const std::vector<float> x(300, 1.f), weights(300, 1.f);
  std::vector<std::byte> bytes(4096);
  std::vector<float> y(300);
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S}) {
    EXPECT_THROW(ggml_codec(type)->quantize_row(x.data(), bytes.data(), 300, weights.data()), Error);
    EXPECT_THROW(ggml_codec(type)->dequantize_row(bytes.data(), y.data(), 300), Error);
  }
}

}  // namespace
}  // namespace lowbit
