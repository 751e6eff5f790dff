// iq3_xxs and iq3_s as group codebooks for GPTQ (ggml_block_grid.h): a group is the 8 values of one sign
// byte, two grid points of 4 values each. Under the group's stored sub-block scale db, value i of a point
// p dequantizes to ±db * level_i(p) (lowbit/formats/ggml_iq3.h), so the nearest code to x is found
// exactly: each 4-value unit takes the grid point nearest |x| (every point tried: 256 or 512 of them),
// each value the sign of x. iq3_xxs stores only 7 sign bits, the 8th being their parity (an even count of
// negated values): when x's signs have odd parity, one value must take the wrong sign, which costs
// w (db l + |x|)² - w (db l - |x|)² = 4 w db l |x| on that value; the search keeps, per unit, its best
// point with no sign flipped and its best point with one sign flipped, and combines the two units so that
// the flips add up to the parity (ggml's quantizer flips the value of smallest w x² before choosing its
// points; this choice is the exact optimum over points and parity-valid signs).
#include <algorithm>
#include <cstring>
#include <limits>

#include "formats/ggml_block_grid.h"
#include "formats/ggml_iq3_grids.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_iq3.h"

namespace lowbit::ggml {
namespace {

constexpr int kGroupValues = 8;  // one sign byte

template <size_t N>
float level(const std::array<uint32_t, N>& grid, int point, int i) {
  return float((grid[size_t(point)] >> (8 * i)) & 255);
}

// One 4-value unit's best points: with the signs of x (cost0, point0) and with one of them flipped (cost1,
// point1, flip1: the flipped value).
struct UnitChoice {
  float cost0 = std::numeric_limits<float>::max(), cost1 = std::numeric_limits<float>::max();
  int point0 = 0, point1 = 0, flip1 = 0;
};

template <size_t N>
UnitChoice best_points(const std::array<uint32_t, N>& grid, float db, const float* ax, const float* w, bool with_flip) {
  UnitChoice c;
  for (int p = 0; p < int(N); ++p) {
    float cost = 0, flip_cost = std::numeric_limits<float>::max();
    int flip = 0;
    for (int i = 0; i < 4; ++i) {
      const float v = db * level(grid, p, i);
      cost += w[i] * (v - ax[i]) * (v - ax[i]);
      const float extra = w[i] * ((v + ax[i]) * (v + ax[i]) - (v - ax[i]) * (v - ax[i]));
      if (extra < flip_cost) flip_cost = extra, flip = i;
    }
    if (cost < c.cost0) c.cost0 = cost, c.point0 = p;
    if (with_flip && cost + flip_cost < c.cost1) c.cost1 = cost + flip_cost, c.point1 = p, c.flip1 = flip;
  }
  return c;
}

// The group's points and sign byte (bit j negates value j). even_parity: an even count of negated values.
template <size_t N>
void choose(const std::array<uint32_t, N>& grid, float db, const float* x, const float* weight, bool even_parity, int points[2],
            unsigned& signs) {
  float ax[kGroupValues];
  signs = 0;
  for (int j = 0; j < kGroupValues; ++j) {
    ax[j] = x[j] < 0 ? -x[j] : x[j];
    signs |= unsigned(x[j] < 0) << j;
  }
  const UnitChoice u[2] = {best_points(grid, db, ax, weight, even_parity), best_points(grid, db, ax + 4, weight + 4, even_parity)};
  bool flip[2] = {false, false};
  if (even_parity) {
    if (__builtin_popcount(signs) % 2 == 0) {
      flip[0] = flip[1] = u[0].cost1 + u[1].cost1 < u[0].cost0 + u[1].cost0;
    } else {
      flip[0] = u[0].cost1 + u[1].cost0 <= u[0].cost0 + u[1].cost1;
      flip[1] = !flip[0];
    }
  }
  for (int k = 0; k < 2; ++k) {
    points[k] = flip[k] ? u[k].point1 : u[k].point0;
    if (flip[k]) signs ^= 1u << (4 * k + u[k].flip1);
  }
}

template <size_t N>
void write_chosen(const std::array<uint32_t, N>& grid, float db, const int points[2], unsigned signs, float* chosen) {
  for (int j = 0; j < kGroupValues; ++j) {
    const float v = db * level(grid, points[j / 4], j % 4);  // as the dequantizer: db * level, then the sign
    chosen[j] = (signs >> j) & 1 ? -v : v;
  }
}

// iq3_xxs: group ib's scale-and-sign word at qs[64 + 4 ib]; sign byte l of the group at bits 7l..7l+6.
void set_group_iq3_xxs(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq3Xxs*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  uint32_t word;
  std::memcpy(&word, b.qs + 64 + 4 * ib, 4);
  const float db = f16_to_f32(b.d) * (0.5f + float(word >> 28)) * 0.5f;
  if (db == 0) {  // d = 0: every code reads as zero; keep the quantizer's
    std::fill(chosen, chosen + kGroupValues, 0.0f);
    return;
  }
  int points[2];
  unsigned signs;
  choose(kIq3XxsGrid, db, x, weight, true, points, signs);
  b.qs[8 * ib + 2 * l] = uint8_t(points[0]);
  b.qs[8 * ib + 2 * l + 1] = uint8_t(points[1]);
  word = (word & ~(127u << (7 * l))) | ((signs & 127u) << (7 * l));
  std::memcpy(b.qs + 64 + 4 * ib, &word, 4);
  write_chosen(kIq3XxsGrid, db, points, signs, chosen);
}

// iq3_s: point k of group ib = qs[8 ib + k] | bit k of qh[ib] << 8; signs[4 ib + l] the sign byte. (The
// quantizer's shift of later groups past an all-zero one does not matter: every group is rewritten here
// where the dequantizer reads it.)
void set_group_iq3_s(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq3S*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  const float db = f16_to_f32(b.d) * float(1 + 2 * ((b.scales[ib / 2] >> (4 * (ib % 2))) & 0xF));
  if (db == 0) {
    std::fill(chosen, chosen + kGroupValues, 0.0f);
    return;
  }
  int points[2];
  unsigned signs;
  choose(kIq3SGrid, db, x, weight, false, points, signs);
  for (int k = 0; k < 2; ++k) {
    const int at = 2 * l + k;
    b.qs[8 * ib + at] = uint8_t(points[k] & 255);
    b.qh[ib] = uint8_t((b.qh[ib] & ~(1 << at)) | ((points[k] >> 8) << at));
  }
  b.signs[4 * ib + l] = uint8_t(signs);
  write_chosen(kIq3SGrid, db, points, signs, chosen);
}

}  // namespace

const BlockGridCodec kIq3XxsGroups{GgmlType::IQ3_XXS, kIq3BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq3_xxs};
const BlockGridCodec kIq3SGroups{GgmlType::IQ3_S, kIq3BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq3_s};

}  // namespace lowbit::ggml
