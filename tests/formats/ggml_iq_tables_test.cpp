// The grids and sign tables of ggml's iq types are format data: lowbit stores them compactly and expands
// them; the expansion must equal ggml's published tables (src/ggml-common.h at ggml-org/ggml d99724f2).
// The expected values are FNV-1a 64 hashes of each table's bytes, little-endian, in table order, computed
// from ggml-common.h at that commit (a script parsed the GGML_TABLE_BEGIN(...) lists and hashed them).
#include <gtest/gtest.h>

#include <cstdint>
#include <span>

#include "formats/ggml_iq3_grids.h"
#include "formats/ggml_iq_signs.h"

namespace lowbit::ggml {
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
  EXPECT_EQ(fnv1a64<uint8_t>(kSignsFrom7Bits), 0xf19ba8f8c3292ba5ull);  // ksigns_iq2xs[128]
  for (int j = 0; j < 8; ++j) EXPECT_EQ(kSignBit[j], 1 << j);            // kmask_iq2xs
}

TEST(GgmlIqTables, Iq3GridsMatchGgml) {
  EXPECT_EQ(fnv1a64<uint32_t>(kIq3XxsGrid), 0xdfa5dc83d6a155d5ull);  // iq3xxs_grid[256]
  EXPECT_EQ(fnv1a64<uint32_t>(kIq3SGrid), 0xfa37020c25b44829ull);    // iq3s_grid[512]
  // Spot checks read off the published tables: first, a 62-level entry, last.
  EXPECT_EQ(kIq3XxsGrid[0], 0x04040404u);
  EXPECT_EQ(kIq3XxsGrid[5], 0x04040c3eu);
  EXPECT_EQ(kIq3XxsGrid[255], 0x3e341c04u);
  EXPECT_EQ(kIq3SGrid[0], 0x01010101u);
  EXPECT_EQ(kIq3SGrid[3], 0x0101010bu);
}

}  // namespace
}  // namespace lowbit::ggml
