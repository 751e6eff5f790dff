// ggml's i-quants whose codebooks cover groups of values, as group codebooks for GPTQ
// (ggml_block_grid.h): a group is the 8 values of one sign byte, two grid points of 4 values (iq3_xxs,
// iq3_s) or one of 8 (iq2_xxs, iq2_xs, iq2_s). Under the group's stored sub-block scale db, value i of a
// point p dequantizes to ±db * level_i(p) (lowbit/formats/ggml_iq3.h, ggml_iq2.h), so the nearest code to
// x is found exactly: each point takes the grid point nearest |x| (every point weighed: 256 to 1024 of
// them, each from two table entries, below), each value the sign of x. iq3_xxs, iq2_xxs and iq2_xs
// store only 7 sign bits, the 8th being their parity (an even count of negated values): when x's signs
// have odd parity, one value must take the wrong sign, which costs w (db l + |x|)² - w (db l - |x|)² on
// that value; the search keeps, per point, its best with no sign flipped and its best with one sign
// flipped, and combines the points so that the flips add up to the parity (ggml's quantizers flip the
// value of smallest w x² before choosing their points; this choice is the exact optimum over points and
// parity-valid signs).
#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "formats/ggml_block_grid.h"
#include "formats/ggml_iq2_grids.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq3.h"

namespace lowbit::ggml {
namespace {

constexpr int kGroupValues = 8;  // one sign byte

// A grid as the dequantizer reads it: byte i of entry p is the level of value i (4 or 8 values a point),
// one of a few distinct levels (3 for iq2_xxs and iq2_xs, 4 for iq2_s, 8 for iq3). A point's error is a
// sum over its values, and value i of any point can take only those few levels: so the error of each
// level of each value is computed once, and tabled for every level pattern of each half of a point
// (values 0-3 and 4-7 of iq2's 8, 0-1 and 2-3 of iq3's 4: 81, 256 or 64 patterns); a point's error is
// then the sum of its two halves' entries, its cheapest sign flip the lesser of their two. Each point
// keeps the pattern number of its halves.
template <class Entry, size_t N>
struct Grid {
  static constexpr int kValues = int(sizeof(Entry));
  static constexpr int kPoints = int(N);
  static constexpr int kHalf = kValues / 2;
  static constexpr int kMaxLevels = 8, kMaxPatterns = 256;
  const std::array<Entry, N>& entries;
  int levels = 0, patterns = 1;                  // distinct levels; levels^kHalf patterns of a half
  std::array<float, kMaxLevels> level_values{};  // ascending
  std::array<std::array<uint8_t, N>, 2> half{};  // per point, the pattern of each half: Σ_j k_j levels^j

  explicit Grid(const std::array<Entry, N>& e) : entries(e) {
    std::array<bool, 256> present{};
    for (size_t p = 0; p < N; ++p)
      for (int i = 0; i < kValues; ++i) present[size_t(byte_of(p, i))] = true;
    std::array<int, 256> index_of{};
    for (int v = 0; v < 256; ++v)
      if (present[size_t(v)] && levels < kMaxLevels) index_of[size_t(v)] = levels, level_values[size_t(levels++)] = float(v);
    for (int j = 0; j < kHalf; ++j) patterns *= levels;
    if (int(std::count(present.begin(), present.end(), true)) != levels || patterns > kMaxPatterns)
      throw std::logic_error("a group codebook with more levels than its tables hold");
    for (size_t p = 0; p < N; ++p)
      for (int h = 0; h < 2; ++h) {
        int pattern = 0;
        for (int j = kHalf - 1; j >= 0; --j) pattern = pattern * levels + index_of[size_t(byte_of(p, kHalf * h + j))];
        half[size_t(h)][p] = uint8_t(pattern);
      }
  }
  int byte_of(size_t p, int i) const { return int((entries[p] >> (8 * i)) & 255); }
  float level(int p, int i) const { return float(byte_of(size_t(p), i)); }
};

// One point's best choice: with the signs of x (cost0, point0) and with one of them flipped (cost1,
// point1, flip1: the flipped value).
struct PointChoice {
  float cost0 = std::numeric_limits<float>::max(), cost1 = std::numeric_limits<float>::max();
  int point0 = 0, point1 = 0, flip1 = 0;
};

// For every level pattern of one half (values ax[0 .. kHalf - 1]): its weighted squared error at db, and
// its cheapest flip (what negating value i adds: w ((v + a)² - (v - a)²)) and where (the first on ties).
template <class G>
void half_tables(const G& grid, float db, const float* ax, const float* w, float* cost, float* flip_cost, uint8_t* flip_at) {
  float error[G::kHalf][G::kMaxLevels], flip[G::kHalf][G::kMaxLevels];
  for (int j = 0; j < G::kHalf; ++j)
    for (int k = 0; k < grid.levels; ++k) {
      const float v = db * grid.level_values[size_t(k)], a = ax[j];
      error[j][k] = w[j] * (v - a) * (v - a);
      flip[j][k] = w[j] * ((v + a) * (v + a) - (v - a) * (v - a));
    }
  for (int c = 0; c < grid.patterns; ++c) {
    float sum = 0, least = std::numeric_limits<float>::max();
    int at = 0;
    for (int j = 0, rest = c; j < G::kHalf; ++j, rest /= grid.levels) {
      const int k = rest % grid.levels;
      sum += error[j][k];
      if (flip[j][k] < least) least = flip[j][k], at = j;
    }
    cost[c] = sum, flip_cost[c] = least, flip_at[c] = uint8_t(at);
  }
}

template <class G>
PointChoice best_points(const G& grid, float db, const float* ax, const float* w, bool with_flip) {
  float cost[2][G::kMaxPatterns], flip_cost[2][G::kMaxPatterns];
  uint8_t flip_at[2][G::kMaxPatterns];
  for (int h = 0; h < 2; ++h) half_tables(grid, db, ax + G::kHalf * h, w + G::kHalf * h, cost[h], flip_cost[h], flip_at[h]);
  PointChoice c;
  const uint8_t* low = grid.half[0].data();
  const uint8_t* high = grid.half[1].data();
  for (int p = 0; p < G::kPoints; ++p) {
    const float cost0 = cost[0][low[p]] + cost[1][high[p]];
    if (cost0 < c.cost0) c.cost0 = cost0, c.point0 = p;
    if (!with_flip) continue;
    const float f0 = flip_cost[0][low[p]], f1 = flip_cost[1][high[p]];
    const float cost1 = cost0 + (f0 <= f1 ? f0 : f1);
    if (cost1 < c.cost1) c.cost1 = cost1, c.point1 = p, c.flip1 = f0 <= f1 ? flip_at[0][low[p]] : G::kHalf + flip_at[1][high[p]];
  }
  return c;
}

// The group's code: its points (8 / G::kValues of them) and sign byte (bit j negates value j), and the
// values the dequantizer reads for it. even_parity: an even count of negated values.
struct GroupCode {
  int points[2] = {0, 0};
  unsigned signs = 0;
  float values[kGroupValues] = {};
};

template <class G>
GroupCode choose(const G& grid, float db, const float* x, const float* weight, bool even_parity) {
  constexpr int kPoints = kGroupValues / G::kValues;
  GroupCode code;
  float ax[kGroupValues];
  for (int j = 0; j < kGroupValues; ++j) {
    ax[j] = x[j] < 0 ? -x[j] : x[j];
    code.signs |= unsigned(x[j] < 0) << j;
  }
  PointChoice u[kPoints];
  for (int k = 0; k < kPoints; ++k) u[k] = best_points(grid, db, ax + G::kValues * k, weight + G::kValues * k, even_parity);
  bool flip[2] = {false, false};
  if (even_parity) {
    const bool odd = __builtin_popcount(code.signs) % 2;
    if (kPoints == 1) {
      flip[0] = odd;
    } else if (!odd) {
      flip[0] = flip[1] = u[0].cost1 + u[1].cost1 < u[0].cost0 + u[1].cost0;
    } else {
      flip[0] = u[0].cost1 + u[1].cost0 <= u[0].cost0 + u[1].cost1;
      flip[1] = !flip[0];
    }
  }
  for (int k = 0; k < kPoints; ++k) {
    code.points[k] = flip[k] ? u[k].point1 : u[k].point0;
    if (flip[k]) code.signs ^= 1u << (G::kValues * k + u[k].flip1);
  }
  for (int j = 0; j < kGroupValues; ++j) {
    const float v = db * grid.level(code.points[j / G::kValues], j % G::kValues);  // as the dequantizer: db * level, then the sign
    code.values[j] = (code.signs >> j) & 1 ? -v : v;
  }
  return code;
}

// The float view of a grid, built on first use.
template <class Entry, size_t N>
const Grid<Entry, N>& grid_of(const std::array<Entry, N>& entries) {
  static const Grid<Entry, N> grid(entries);
  return grid;
}

// Chooses the code (db = 0: every code reads as zero; the quantizer's is kept) and hands back its values.
template <class G, class Write>
void set(const G& grid, float db, const float* x, const float* weight, bool even_parity, float* chosen, Write&& write) {
  if (db == 0) {
    std::fill(chosen, chosen + kGroupValues, 0.0f);
    return;
  }
  const GroupCode code = choose(grid, db, x, weight, even_parity);
  write(code);
  std::copy(std::begin(code.values), std::end(code.values), chosen);
}

// ---- iq3 (lowbit/formats/ggml_iq3.h): 32-value groups ib, sign byte l of the group ----

// iq3_xxs: the group's scale-and-sign word at qs[64 + 4 ib]; points qs[8 ib + 2l], qs[8 ib + 2l + 1].
void set_group_iq3_xxs(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq3Xxs*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  uint32_t word;
  std::memcpy(&word, b.qs + 64 + 4 * ib, 4);
  const float db = f16_to_f32(b.d) * (0.5f + float(word >> 28)) * 0.5f;
  set(grid_of(kIq3XxsGrid), db, x, weight, true, chosen, [&](const GroupCode& code) {
    b.qs[8 * ib + 2 * l] = uint8_t(code.points[0]);
    b.qs[8 * ib + 2 * l + 1] = uint8_t(code.points[1]);
    word = (word & ~(127u << (7 * l))) | ((code.signs & 127u) << (7 * l));
    std::memcpy(b.qs + 64 + 4 * ib, &word, 4);
  });
}

// iq3_s: point k of group ib = qs[8 ib + k] | bit k of qh[ib] << 8; signs[4 ib + l] the sign byte. (The
// quantizer's shift of later groups past an all-zero one does not matter: every group is rewritten here
// where the dequantizer reads it.)
void set_group_iq3_s(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq3S*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  const float db = f16_to_f32(b.d) * float(1 + 2 * ((b.scales[ib / 2] >> (4 * (ib % 2))) & 0xF));
  set(grid_of(kIq3SGrid), db, x, weight, false, chosen, [&](const GroupCode& code) {
    for (int k = 0; k < 2; ++k) {
      const int at = 2 * l + k;
      b.qs[8 * ib + at] = uint8_t(code.points[k] & 255);
      b.qh[ib] = uint8_t((b.qh[ib] & ~(1 << at)) | ((code.points[k] >> 8) << at));
    }
    b.signs[4 * ib + l] = uint8_t(code.signs);
  });
}

// ---- iq2 (lowbit/formats/ggml_iq2.h): 32-value groups ib, subgroup l of 8 values; scale code s gives
// db = d * (0.5 + s) * 0.25 ----

float iq2_scale(uint16_t d, int s) { return f16_to_f32(d) * (0.5f + float(s)) * 0.25f; }

// iq2_xxs: the group's two u32 words at qs[4 ib]: byte l of the first the point, bits 7l..7l+6 of the
// second the signs, its top 4 bits the scale.
void set_group_iq2_xxs(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq2Xxs*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  uint32_t word[2];
  std::memcpy(word, b.qs + 4 * ib, sizeof word);
  set(grid_of(iq2::kIq2xxsGrid), iq2_scale(b.d, int(word[1] >> 28)), x, weight, true, chosen, [&](const GroupCode& code) {
    word[0] = (word[0] & ~(255u << (8 * l))) | (uint32_t(code.points[0]) << (8 * l));
    word[1] = (word[1] & ~(127u << (7 * l))) | ((code.signs & 127u) << (7 * l));
    std::memcpy(b.qs + 4 * ib, word, sizeof word);
  });
}

// iq2_xs: qs[4 ib + l] = point (9 bits) | 7 sign bits << 9; scales[ib] nibble l / 2.
void set_group_iq2_xs(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq2Xs*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  set(grid_of(iq2::kIq2xsGrid), iq2_scale(b.d, (b.scales[ib] >> (4 * (l / 2))) & 0xF), x, weight, true, chosen,
      [&](const GroupCode& code) { b.qs[4 * ib + l] = uint16_t(code.points[0] | (code.signs & 127u) << 9); });
}

// iq2_s: point = qs[4 ib + l] | bits 2l, 2l+1 of qh[ib] << 8; sign byte qs[32 + 4 ib + l]; scales as iq2_xs.
void set_group_iq2_s(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq2S*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  set(grid_of(iq2::kIq2sGrid), iq2_scale(b.d, (b.scales[ib] >> (4 * (l / 2))) & 0xF), x, weight, false, chosen, [&](const GroupCode& code) {
    b.qs[4 * ib + l] = uint8_t(code.points[0] & 255);
    b.qh[ib] = uint8_t((b.qh[ib] & ~(3 << (2 * l))) | ((code.points[0] >> 8) << (2 * l)));
    b.qs[32 + 4 * ib + l] = uint8_t(code.signs);
  });
}

}  // namespace

const BlockGridCodec kIq3XxsGroups{GgmlType::IQ3_XXS, kIq3BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq3_xxs};
const BlockGridCodec kIq3SGroups{GgmlType::IQ3_S, kIq3BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq3_s};
const BlockGridCodec kIq2XxsGroups{GgmlType::IQ2_XXS, 256, nullptr, nullptr, nullptr, kGroupValues, set_group_iq2_xxs};
const BlockGridCodec kIq2XsGroups{GgmlType::IQ2_XS, 256, nullptr, nullptr, nullptr, kGroupValues, set_group_iq2_xs};
const BlockGridCodec kIq2SGroups{GgmlType::IQ2_S, 256, nullptr, nullptr, nullptr, kGroupValues, set_group_iq2_s};

}  // namespace lowbit::ggml
