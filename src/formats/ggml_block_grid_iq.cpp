// ggml's i-quants whose codebooks cover groups of values, as group codebooks for GPTQ
// (ggml_block_grid.h): a group is the 8 values of one sign byte, two grid points of 4 values (iq3_xxs,
// iq3_s) or one of 8 (iq2_xxs, iq2_xs, iq2_s). Under the group's stored sub-block scale db, value i of a
// point p dequantizes to ±db * level_i(p) (lowbit/formats/ggml_iq3.h, ggml_iq2.h), so the nearest code to
// x is found exactly: each point takes the grid point nearest |x| (every point tried: 256 to 1024 of
// them), each value the sign of x. iq3_xxs, iq2_xxs and iq2_xs store only 7 sign bits, the 8th being
// their parity (an even count of negated values): when x's signs have odd parity, one value must take
// the wrong sign, which costs w (db l + |x|)² - w (db l - |x|)² on that value; the search keeps, per
// point, its best with no sign flipped and its best with one sign flipped, and combines the points so
// that the flips add up to the parity (ggml's quantizers flip the value of smallest w x² before choosing
// their points; this choice is the exact optimum over points and parity-valid signs).
#include <algorithm>
#include <cstring>
#include <limits>

#include "formats/ggml_block_grid.h"
#include "formats/ggml_iq2_grids.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq3.h"

namespace lowbit::ggml {
namespace {

constexpr int kGroupValues = 8;  // one sign byte

// A grid as the dequantizer reads it: byte i of entry p is the level of value i (4 or 8 values a point),
// also kept as floats, value by value (levels[i][p]), so that the search runs over all points at once.
template <class Entry, size_t N>
struct Grid {
  static constexpr int kValues = int(sizeof(Entry));
  static constexpr int kPoints = int(N);
  const std::array<Entry, N>& entries;
  std::array<std::array<float, N>, kValues> levels;

  explicit Grid(const std::array<Entry, N>& e) : entries(e) {
    for (int i = 0; i < kValues; ++i)
      for (size_t p = 0; p < N; ++p) levels[size_t(i)][p] = float((e[p] >> (8 * i)) & 255);
  }
  float level(int p, int i) const { return levels[size_t(i)][size_t(p)]; }
};

// One point's best choice: with the signs of x (cost0, point0) and with one of them flipped (cost1,
// point1, flip1: the flipped value).
struct PointChoice {
  float cost0 = std::numeric_limits<float>::max(), cost1 = std::numeric_limits<float>::max();
  int point0 = 0, point1 = 0, flip1 = 0;
};

template <class G>
PointChoice best_points(const G& grid, float db, const float* ax, const float* w, bool with_flip) {
  constexpr int kN = G::kPoints;
  float cost[kN], flip_cost[kN];
  int flip[kN];
  std::fill(std::begin(cost), std::end(cost), 0.0f);
  std::fill(std::begin(flip_cost), std::end(flip_cost), std::numeric_limits<float>::max());
  std::fill(std::begin(flip), std::end(flip), 0);
  for (int i = 0; i < G::kValues; ++i) {
    const float* level = grid.levels[size_t(i)].data();
    const float a = ax[i], wi = w[i];
    for (int p = 0; p < kN; ++p) {
      const float v = db * level[p];
      cost[p] += wi * (v - a) * (v - a);
    }
    if (with_flip)
      for (int p = 0; p < kN; ++p) {
        const float v = db * level[p];
        const float extra = wi * ((v + a) * (v + a) - (v - a) * (v - a));
        flip[p] = extra < flip_cost[p] ? i : flip[p];
        flip_cost[p] = extra < flip_cost[p] ? extra : flip_cost[p];
      }
  }
  PointChoice c;
  for (int p = 0; p < kN; ++p) {
    if (cost[p] < c.cost0) c.cost0 = cost[p], c.point0 = p;
    if (with_flip && cost[p] + flip_cost[p] < c.cost1) c.cost1 = cost[p] + flip_cost[p], c.point1 = p, c.flip1 = flip[p];
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
