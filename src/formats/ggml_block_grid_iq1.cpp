// iq1_s and iq1_m as group codebooks for GPTQ (ggml_block_grid.h): a group is the 8 values of one grid
// point (lowbit/formats/ggml_iq1.h). Value i of point p dequantizes to dl * (g_i(p) + delta), g_i in
// {-1, 0, 1}, delta = ±1/8, under the stored scale dl: iq1_s's per 32 values (with its delta: the sign
// is shared by 4 points, so it stays as the quantizer fitted it), iq1_m's per 16 (its delta is per point,
// so both are tried). The nearest of the 2048 points to x is found exactly without summing 8 terms per
// point: value i has only three possible values, so the weighted error of each is computed once, and the
// error of a half of a point (values 0-3 or 4-7: 3⁴ = 81 level patterns) is tabled; a point's error is
// then the sum of its two halves' entries.
#include <array>
#include <cfloat>
#include <cstring>

#include "formats/ggml_block_grid.h"
#include "lowbit/formats/ggml_iq1_grid.h"
#include "formats/ggml_iq1_search.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_iq1.h"

namespace lowbit::ggml {
namespace {

constexpr int kGroupValues = 8;  // one grid point
constexpr int kPoints = int(kIq1GridCodes.size());
constexpr int kHalfPatterns = 81;  // 3⁴ level patterns of 4 values

// Each point's two halves as base-3 pattern numbers: levels l_0..l_3 (0..2) of a half give Σ l_i 3^i.
struct HalfPatterns {
  std::array<uint8_t, kPoints> low{}, high{};
};

constexpr HalfPatterns make_half_patterns() {
  HalfPatterns h;
  for (int p = 0; p < kPoints; ++p) {
    int low = 0, high = 0;
    for (int i = 3; i >= 0; --i) {
      low = 3 * low + iq1_grid_level(kIq1GridCodes[size_t(p)], i);
      high = 3 * high + iq1_grid_level(kIq1GridCodes[size_t(p)], 4 + i);
    }
    h.low[size_t(p)] = uint8_t(low);
    h.high[size_t(p)] = uint8_t(high);
  }
  return h;
}
constexpr HalfPatterns kHalves = make_half_patterns();

// The weighted squared error of every level pattern of values first .. first + 3 of x.
void half_errors(float dl, float delta, const float* x, const float* weight, float* out) {
  float e[4][3];
  for (int i = 0; i < 4; ++i)
    for (int l = 0; l < 3; ++l) {
      const float v = dl * (float(l - 1) + delta);  // as the dequantizer: the grid value, the shift, the scale
      e[i][l] = weight[i] * (v - x[i]) * (v - x[i]);
    }
  for (int c = 0; c < kHalfPatterns; ++c) out[c] = e[0][c % 3] + e[1][c / 3 % 3] + e[2][c / 9 % 3] + e[3][c / 27];
}

struct PointChoice {
  int point = 0;
  float cost = FLT_MAX;
};

// The point nearest x under dl and delta (the first of equals).
PointChoice nearest_point(float dl, float delta, const float* x, const float* weight) {
  float low[kHalfPatterns], high[kHalfPatterns];
  half_errors(dl, delta, x, weight, low);
  half_errors(dl, delta, x + 4, weight + 4, high);
  PointChoice best;
  for (int p = 0; p < kPoints; ++p) {
    const float cost = low[kHalves.low[size_t(p)]] + high[kHalves.high[size_t(p)]];
    if (cost < best.cost) best = {p, cost};
  }
  return best;
}

void point_values(int point, float dl, float delta, float* chosen) {
  int8_t grid[8];
  std::memcpy(grid, &kIq1Grid[size_t(point)], 8);
  for (int j = 0; j < kGroupValues; ++j) chosen[j] = dl * (float(grid[j]) + delta);
}

// iq1_s: point l of 32-value group ib is qs[4 ib + l] | bits 3l..3l+2 of qh[ib] << 8; qh[ib]'s bits 12-14
// are the scale s (dl = d (2s + 1)), bit 15 the delta's sign.
void set_group_iq1_s(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq1S*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  const uint16_t qh = b.qh[ib];
  const float dl = f16_to_f32(b.d) * float(2 * ((qh >> 12) & 7) + 1);
  const float delta = qh & 0x8000 ? -iq1::kDelta : iq1::kDelta;
  int point = b.qs[4 * ib + l] | ((qh >> (3 * l)) & 7) << 8;
  if (dl != 0) {  // d = 0: every point reads as zero; the quantizer's stays
    point = nearest_point(dl, delta, x, weight).point;
    b.qs[4 * ib + l] = uint8_t(point & 255);
    b.qh[ib] = uint16_t((qh & ~(7u << (3 * l))) | unsigned(point >> 8) << (3 * l));
  }
  point_values(point, dl, delta, chosen);
}

// iq1_m: point l of 32-value group ib is qs[4 ib + l] | bits 0-2 of nibble l % 2 of qh[2 ib + l / 2] << 8,
// the nibble's bit 3 its delta's sign; its scale is that of its 16 values (iq1m_multiplier).
void set_group_iq1_m(void* block, int first, const float* x, const float* weight, float* chosen) {
  auto& b = *static_cast<BlockIq1M*>(block);
  const int ib = first / 32, l = first % 32 / 8;
  uint16_t sc[4];
  std::memcpy(sc, b.scales, sizeof sc);
  const float dl = f16_to_f32(iq1m_d_bits(sc)) * float(iq1m_multiplier(sc, ib, l / 2));
  uint8_t& qh = b.qh[2 * ib + l / 2];
  const int shift = 4 * (l % 2);
  int point = (qh >> shift) & 7;
  bool down = (qh >> shift) & 8;
  if (dl != 0) {  // d = 0: every point reads as zero; the quantizer's stays
    const PointChoice up = nearest_point(dl, iq1::kDelta, x, weight), below = nearest_point(dl, -iq1::kDelta, x, weight);
    down = below.cost < up.cost;
    point = down ? below.point : up.point;
    b.qs[4 * ib + l] = uint8_t(point & 255);
    qh = uint8_t((qh & ~(15 << shift)) | ((point >> 8) | (down ? 8 : 0)) << shift);
  } else {
    point = b.qs[4 * ib + l] | point << 8;
  }
  point_values(point, dl, down ? -iq1::kDelta : iq1::kDelta, chosen);
}

}  // namespace

const BlockGridCodec kIq1SGroups{GgmlType::IQ1_S, kIq1BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq1_s};
const BlockGridCodec kIq1MGroups{GgmlType::IQ1_M, kIq1BlockValues, nullptr, nullptr, nullptr, kGroupValues, set_group_iq1_m};

}  // namespace lowbit::ggml
