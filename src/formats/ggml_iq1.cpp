// iq1_s and iq1_m: ggml-quants.c's quantize_row_iq1_s_impl, quantize_row_iq1_m_impl, the IQ1 search
// tables of iq2xs_init_impl, iq1_find_best_neighbour2 and the dequantizers, byte for byte.
//
// With three levels per value, both quantizers search exhaustively: sort a group's values, and for every
// split of the sorted order into a low, middle and high run (levels -1, 0, +1, each shifted by +-1/8),
// take the least-squares scale; keep the best split. Then every 8 values must be a grid point: those
// that are not take the nearest (weighted) of their neighbouring grid points.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_iq1.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include "formats/ggml_block_check.h"
#include "formats/ggml_iq1_search.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace lowbit::ggml {
namespace {

using ggml_search::round_nearest_even;

using iq1::kDelta;
using iq1::kSGroup;
using iq1::kShiftedDown;
using iq1::kShiftedUp;

constexpr int kBlock = kIq1BlockValues;

// ---- search tables ----

constexpr int kUnitCodes = 6561;  // 3^8: a unit's 8 levels 0..2 as the base-3 number sum l_i 3^i
constexpr int kNeighbourRings = 3;
constexpr int kMaxDistance = 8 * 4 * 4;  // squared distance between 8-vectors of odd levels 1, 3, 5

// Which units (8 levels 0..2) are grid points, and for every other one its candidate grid points: those
// at the 3 smallest squared distances, ordered by distance, then index (as ggml's qsort orders them).
// The candidates are stored as their 2-bit level codes (kIq1GridCodes' form, what the vector search
// reads); the grid index of a code is index_of[unit_code_of(code)]. The tables take 13 + 26 KB and the
// lists about 650 KB (ggml tables all 65536 codes of 2-bit levels, 3 included).
struct Iq1SearchGrid {
  std::array<int16_t, kUnitCodes> index_of{};  // grid index of a unit, -1 if not on the grid
  std::array<uint32_t, kUnitCodes + 1> neighbours_begin{};
  std::vector<uint16_t> neighbour_codes;  // padded with iq1::kLaneChunk zeros (vector loads past the end)

  std::span<const uint16_t> neighbours_of(int unit) const {
    return {neighbour_codes.data() + neighbours_begin[unit], neighbour_codes.data() + neighbours_begin[unit + 1]};
  }
};

// The base-3 unit code of 4 levels given as a byte of 2-bit fields (each 0..2).
constexpr std::array<uint8_t, 256> kQuarterUnitCodes = [] {
  std::array<uint8_t, 256> codes{};
  for (int byte = 0; byte < 256; ++byte)
    for (int i = 3; i >= 0; --i) codes[size_t(byte)] = uint8_t(3 * codes[size_t(byte)] + ((byte >> (2 * i)) & 3) % 3);
  return codes;
}();

// The unit code of a 2-bit level code (levels 0..2).
inline int unit_code_of(uint16_t code) { return kQuarterUnitCodes[code & 255] + 81 * kQuarterUnitCodes[code >> 8]; }

Iq1SearchGrid build_search_grid() {
  Iq1SearchGrid grid;
  grid.index_of.fill(-1);
  for (size_t j = 0; j < kIq1GridCodes.size(); ++j) grid.index_of[size_t(unit_code_of(kIq1GridCodes[j]))] = int16_t(j);
  std::vector<int> d2(kIq1GridCodes.size());
  for (int unit = 0; unit < kUnitCodes; ++unit) {
    grid.neighbours_begin[size_t(unit)] = uint32_t(grid.neighbour_codes.size());
    if (grid.index_of[size_t(unit)] >= 0) continue;
    int levels[8];
    for (int i = 0, rest = unit; i < 8; ++i, rest /= 3) levels[i] = rest % 3;
    for (size_t j = 0; j < kIq1GridCodes.size(); ++j) {
      int sum = 0;
      for (int i = 0; i < 8; ++i) {
        const int diff = 2 * (iq1_grid_level(kIq1GridCodes[j], i) - levels[i]);  // points 2l+1
        sum += diff * diff;
      }
      d2[j] = sum;
    }
    // The 3 smallest distinct distances (at most 8 * 4^2 = 128), then the points at each in index order:
    // the (distance, index) order of ggml's sort.
    std::array<bool, kMaxDistance + 1> present{};
    for (const int d : d2) present[size_t(d)] = true;
    int rings = 0;
    for (int ring = 0; ring <= kMaxDistance && rings < kNeighbourRings; ++ring) {
      if (!present[size_t(ring)]) continue;
      ++rings;
      for (size_t j = 0; j < d2.size(); ++j)
        if (d2[j] == ring) grid.neighbour_codes.push_back(kIq1GridCodes[j]);
    }
  }
  grid.neighbours_begin[kUnitCodes] = uint32_t(grid.neighbour_codes.size());
  grid.neighbour_codes.resize(grid.neighbour_codes.size() + iq1::kLaneChunk, 0);
  return grid;
}

// Built on first use (ggml's ggml_quantize_init); function-local statics are thread-safe.
const Iq1SearchGrid& search_grid() {
  static const Iq1SearchGrid grid = build_search_grid();
  return grid;
}

inline int point_level(int index, int i) { return iq1_grid_level(kIq1GridCodes[index], i); }

int unit_code(const int8_t* L) {
  int code = 0;
  for (int i = 7; i >= 0; --i) code = 3 * code + L[i];
  return code;
}

// The neighbour of an off-grid unit whose values at `scale` (levels mapped through `shifted`) are nearest
// to x in sum of weight * diff^2; the first on ties. Writes its levels to L.
int best_neighbour(const Iq1SearchGrid& grid, iq1::NearestCandidateFn vector_search, int unit, const float* x,
                   const float* weight, float scale, const float* shifted, int8_t* L) {
  const auto list = grid.neighbours_of(unit);
  int best = -1;
  if (vector_search) {
    const float scaled[3] = {scale * shifted[0], scale * shifted[1], scale * shifted[2]};
    best = vector_search(list.data(), int(list.size()), x, weight, scaled);
  } else {
    float best_d2 = FLT_MAX;
    for (size_t c = 0; c < list.size(); ++c) {
      float d2 = 0;
      for (int i = 0; i < 8; ++i) {
        const float diff = scale * shifted[iq1_grid_level(list[c], i)] - x[i];
        d2 += weight[i] * diff * diff;
      }
      if (d2 < best_d2) {
        best_d2 = d2;
        best = int(c);
      }
    }
  }
  // Only non-finite input leaves every distance at or above FLT_MAX (ggml then scans the whole grid and
  // aborts); the pipeline refuses such input before it gets here.
  const uint16_t code = list[best < 0 ? 0 : size_t(best)];
  for (int i = 0; i < 8; ++i) L[i] = int8_t(iq1_grid_level(code, i));
  return grid.index_of[size_t(unit_code_of(code))];
}

// The grid indices of `units` consecutive units of L (levels 0..2), searching neighbours for those off
// the grid (their levels in L replaced by the neighbour's). Returns whether all were on the grid.
bool snap_units(const cpu::CpuKernels& kernels, int units, const float* x, const float* weight, float scale,
                const float* const* shifted, int8_t* L, uint16_t* index) {
  const Iq1SearchGrid& grid = search_grid();
  int codes[4];
  bool all_on_grid = true;
  for (int k = 0; k < units; ++k) {
    codes[k] = unit_code(L + 8 * k);
    if (grid.index_of[size_t(codes[k])] >= 0) continue;
    all_on_grid = false;
    // The lists lie beyond the core's nearest caches: start every unit's fetch before the first search.
    const uint16_t* list = grid.neighbour_codes.data() + grid.neighbours_begin[size_t(codes[k])];
    __builtin_prefetch(list);
    __builtin_prefetch(list + 32);
  }
  const iq1::NearestCandidateFn vector_search = all_on_grid ? nullptr : kernels.iq1_nearest;
  for (int k = 0; k < units; ++k) {
    const int on_grid = grid.index_of[size_t(codes[k])];
    index[k] = uint16_t(on_grid >= 0 ? on_grid
                                     : best_neighbour(grid, vector_search, codes[k], x + 8 * k, weight + 8 * k, scale,
                                                      shifted[k], L + 8 * k));
  }
  return all_on_grid;
}

// Positions of a group's values in ascending order; equal values keep their order (ggml's qsort, glibc's
// merge sort, is stable; -0 and +0 compare equal).
// An insertion sort: stable, and for 16 or 32 values cheaper than std::stable_sort's buffer.
template <int N>
std::array<int, N> ascending_order(const float* x) {
  std::array<int, N> order;
  for (int j = 0; j < N; ++j) {
    int k = j;
    for (; k > 0 && x[j] < x[order[k - 1]]; --k) order[k] = order[k - 1];
    order[k] = j;
  }
  return order;
}

float block_sigma2(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < kBlock; ++i) sumx2 += x[i] * x[i];
  return 2 * sumx2 / kBlock;
}

template <int N>
void group_weights(const float* x, const float* qw, float sigma2, float* weight) {
  if (qw) {
#if defined(__SSE2__)
    // 4 square roots per instruction, correctly rounded as sqrtf's (std::sqrt's errno check keeps the
    // compiler from vectorising the loop).
    for (int i = 0; i < N; i += 4) {
      const __m128 xi = _mm_loadu_ps(x + i);
      const __m128 root = _mm_sqrt_ps(_mm_add_ps(_mm_set1_ps(sigma2), _mm_mul_ps(xi, xi)));
      _mm_storeu_ps(weight + i, _mm_mul_ps(_mm_loadu_ps(qw + i), root));
    }
#else
    for (int i = 0; i < N; ++i) weight[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
#endif
  } else {
    for (int i = 0; i < N; ++i) weight[i] = x[i] * x[i];
  }
}

template <int N>
float abs_max(const float* x) {
  float max = std::fabs(x[0]);
  for (int i = 1; i < N; ++i) max = std::max(max, std::fabs(x[i]));
  return max;
}

// Levels from a split of the ascending order: [0, i1) -> 0, [i1, i2) -> 1, [i2, N) -> 2.
template <size_t N>
void split_levels(const std::array<int, N>& order, int i1, int i2, int8_t* L) {
  for (int j = 0; j < int(N); ++j) L[order[j]] = int8_t(j < i1 ? 0 : j < i2 ? 1 : 2);
}

// ---- iq1_s: 32-value groups, one shift per group ----

struct SGroupFit {
  bool found = false;
  float scale = 0;
  int shift = 1;             // +1: delta +1/8, -1: delta -1/8
  uint16_t index[4] = {};    // grid points
};

SGroupFit fit_iq1_s_group(const cpu::CpuKernels& kernels, const float* xb, const float* weight) {
  SGroupFit fit;
  const iq1::AscendingOrderFn vector_order = kernels.iq1_ascending;
  std::array<int, kSGroup> order;
  if (!vector_order || !vector_order(xb, order.data()))
    order = ascending_order<kSGroup>(xb);
  // Prefix sums over the ascending order of w*x and w, as ggml accumulates them.
  float sumx[kSGroup + 1], sumw[kSGroup + 1];
  sumx[0] = sumw[0] = 0;
  for (int j = 0; j < kSGroup; ++j) {
    const int i = order[j];
    sumx[j + 1] = sumx[j] + weight[i] * xb[i];
    sumw[j + 1] = sumw[j] + weight[i];
  }
  const iq1::SplitSearchFn vector_search = kernels.iq1_split;
  const iq1::Split split = vector_search ? vector_search(sumx, sumw) : iq1::best_split_scalar(sumx, sumw);
  const int best_i1 = split.i1, best_i2 = split.i2;
  float scale = split.scale;
  fit.shift = split.shift;
  if (best_i1 < 0) return fit;
  int8_t L[kSGroup];
  split_levels(order, best_i1, best_i2, L);
  if (scale < 0) {  // mirror the levels and the shift so the stored scale is positive
    for (int8_t& l : L) l = int8_t(2 - l);
    scale = -scale;
    fit.shift = -fit.shift;
  }
  const float* shifted = fit.shift == 1 ? kShiftedUp : kShiftedDown;
  const float* const unit_shifted[4] = {shifted, shifted, shifted, shifted};
  if (!snap_units(kernels, 4, xb, weight, scale, unit_shifted, L, fit.index)) {
    float sumqx = 0, sumq2 = 0;
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 8; ++j) {
        const float w = weight[8 * k + j], q = shifted[point_level(fit.index[k], j)];
        sumqx += w * q * xb[8 * k + j];
        sumq2 += w * q * q;
      }
    if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
  }
  fit.found = true;
  fit.scale = scale;
  return fit;
}

// ---- iq1_m: 16-value groups, one shift per 8 values ----

constexpr int kMGroup = 16;

// The four shift patterns of a group's two units: k = 0 (+,+), 1 (+,-), 2 (-,+), 3 (-,-).
inline const float* unit_shift(int pattern, int unit) {
  const bool down = unit == 0 ? pattern >= 2 : pattern % 2 == 1;
  return down ? kShiftedDown : kShiftedUp;
}

struct MGroupFit {
  bool found = false;
  float scale = 0;
  int pattern = 0;
  uint16_t index[2] = {};
};

MGroupFit fit_iq1_m_group(const cpu::CpuKernels& kernels, const float* xb, const float* weight) {
  MGroupFit fit;
  const std::array<int, kMGroup> order = ascending_order<kMGroup>(xb);
  // ggml sums, for every split (i1, i2) and pattern k, w*v*x and w*v*v over the values in ascending
  // order, from zero. The sums share their first terms: values before i1 do not depend on i2, values in
  // [i1, i2) extend the i2 - 1 sums by one term. Sharing those partial sums adds the same floats in the
  // same order, so the sums are bit for bit ggml's. Lanes: 4 patterns x (sumqx, sumq2).
  constexpr int kLanes = 8;
  float terms[3][kMGroup][kLanes];  // [level][ascending position][lane]
  for (int level = 0; level < 3; ++level)
    for (int j = 0; j < kMGroup; ++j) {
      const int i = order[j];
      for (int k = 0; k < 4; ++k) {
        const float v = unit_shift(k, i < kMGroup / 2 ? 0 : 1)[level];
        terms[level][j][k] = weight[i] * v * xb[i];
        terms[level][j][4 + k] = weight[i] * v * v;
      }
    }
  float low[kLanes] = {};  // sums over [0, i1) at level 0
  float best_score = -FLT_MAX, scale = 0;
  int best_i1 = -1, best_i2 = -1;
  for (int i1 = 0; i1 <= kMGroup; ++i1) {
    if (i1 > 0)
      for (int c = 0; c < kLanes; ++c) low[c] += terms[0][i1 - 1][c];
    float mid[kLanes];  // sums over [0, i2)
    std::copy(std::begin(low), std::end(low), mid);
    for (int i2 = i1; i2 <= kMGroup; ++i2) {
      if (i2 > i1)
        for (int c = 0; c < kLanes; ++c) mid[c] += terms[1][i2 - 1][c];
      float sums[kLanes];
      std::copy(std::begin(mid), std::end(mid), sums);
      for (int j = i2; j < kMGroup; ++j)
        for (int c = 0; c < kLanes; ++c) sums[c] += terms[2][j][c];
      for (int k = 0; k < 4; ++k) {
        const float sumqx = sums[k], sumq2 = sums[4 + k];
        if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
          scale = sumqx / sumq2;
          best_score = scale * sumqx;
          best_i1 = i1;
          best_i2 = i2;
          fit.pattern = k;
        }
      }
    }
  }
  if (best_i1 < 0) return fit;
  int8_t L[kMGroup];
  split_levels(order, best_i1, best_i2, L);
  if (scale < 0) {  // mirror the levels and both shifts so the stored scale is positive
    for (int8_t& l : L) l = int8_t(2 - l);
    scale = -scale;
    fit.pattern = 3 - fit.pattern;
  }
  const float* const unit_shifted[2] = {unit_shift(fit.pattern, 0), unit_shift(fit.pattern, 1)};
  if (!snap_units(kernels, 2, xb, weight, scale, unit_shifted, L, fit.index)) {
    float sumqx = 0, sumq2 = 0;
    for (int k = 0; k < 2; ++k)
      for (int j = 0; j < 8; ++j) {
        const float w = weight[8 * k + j], q = unit_shift(fit.pattern, k)[point_level(fit.index[k], j)];
        sumqx += w * q * xb[8 * k + j];
        sumq2 += w * q * q;
      }
    if (sumqx > 0 && sumq2 > 0) scale = sumqx / sumq2;
  }
  fit.found = true;
  fit.scale = scale;
  return fit;
}

inline int scale_level(float id, float scale) { return std::clamp(round_nearest_even(0.5f * (id * scale - 1)), 0, 7); }

}  // namespace

namespace iq1 {

Split best_split_scalar(const float* sumx, const float* sumw) {
  Split best;
  float best_score = -FLT_MAX;
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    for (int i2 = i1; i2 <= kSGroup; ++i2) {
      for (const int shift : {1, -1}) {
        const float* v = shift == 1 ? kShiftedUp : kShiftedDown;
        const float sumqx = (sumx[i1] - sumx[0]) * v[0] + (sumx[i2] - sumx[i1]) * v[1] + (sumx[kSGroup] - sumx[i2]) * v[2];
        const float sumq2 = (sumw[i1] - sumw[0]) * v[0] * v[0] + (sumw[i2] - sumw[i1]) * v[1] * v[1] +
                            (sumw[kSGroup] - sumw[i2]) * v[2] * v[2];
        if (sumq2 > 0 && sumqx * sumqx > best_score * sumq2) {
          best.scale = sumqx / sumq2;
          best_score = best.scale * sumqx;
          best.i1 = i1;
          best.i2 = i2;
          best.shift = shift;
        }
      }
    }
  }
  return best;
}

}  // namespace iq1

void quantize_row_iq1_s(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq1_s", n, kBlock);
  if (!quant_weights)
    throw Error("iq1_s needs importance weights (an importance matrix), as ggml does",
                {.expected = "quant_weights for every column (make them with `lowbit imatrix`)"});
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockIq1S*>(blocks);
  float weight[kSGroup], scales[kBlock / kSGroup];
  int shifts[kBlock / kSGroup];
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    const float* xbl = x + kBlock * ibl;
    BlockIq1S& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    const float sigma2 = block_sigma2(xbl);
    float max_scale = 0;
    for (int ib = 0; ib < kBlock / kSGroup; ++ib) {
      const float* xb = xbl + kSGroup * ib;
      group_weights<kSGroup>(xb, quant_weights + kBlock * ibl + kSGroup * ib, sigma2, weight);
      scales[ib] = 0;
      shifts[ib] = 1;
      if (abs_max<kSGroup>(xb) < 1e-12f) continue;  // GROUP_MAX_EPS_IQ1_S: stored as zero
      const SGroupFit fit = fit_iq1_s_group(kernels, xb, weight);
      if (!fit.found) continue;
      uint16_t h = 0;
      for (int k = 0; k < 4; ++k) {
        b.qs[4 * ib + k] = uint8_t(fit.index[k] & 255);
        h |= uint16_t((fit.index[k] >> 8) << (3 * k));
      }
      b.qh[ib] = h;
      scales[ib] = fit.scale;
      shifts[ib] = fit.shift;
      max_scale = std::max(max_scale, fit.scale);
    }
    if (!max_scale) continue;
    // The largest group scale maps to s = 7; ggml stores d 12.5% larger ("fudge factor").
    const float d = max_scale / 15;
    b.d = f32_to_f16(d * 1.125f);
    const float id = 1 / d;
    for (int ib = 0; ib < kBlock / kSGroup; ++ib) {
      const int l = scale_level(id, scales[ib]) | (shifts[ib] == -1 ? 8 : 0);
      b.qh[ib] = uint16_t(b.qh[ib] | (l << 12));
    }
  }
}

void quantize_row_iq1_m(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq1_m", n, kBlock);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  constexpr int kGroups = kBlock / kMGroup;
  constexpr uint8_t kShiftBits[4] = {0x00, 0x80, 0x08, 0x88};  // qh bit 3 (unit 0) and 7 (unit 1): delta -1/8
  auto* y = static_cast<BlockIq1M*>(blocks);
  float weight[kMGroup], scales[kGroups];
  int patterns[kGroups];
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    const float* xbl = x + kBlock * ibl;
    const float* qwbl = quant_weights ? quant_weights + kBlock * ibl : nullptr;
    BlockIq1M& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    const float sigma2 = block_sigma2(xbl);
    float max_scale = 0;
    for (int ib = 0; ib < kGroups; ++ib) {
      const float* xb = xbl + kMGroup * ib;
      group_weights<kMGroup>(xb, qwbl ? qwbl + kMGroup * ib : nullptr, sigma2, weight);
      scales[ib] = 0;
      patterns[ib] = 0;
      if (abs_max<kMGroup>(xb) < 1e-7f) continue;  // GROUP_MAX_EPS_IQ1_M: stored as zero
      const MGroupFit fit = fit_iq1_m_group(kernels, xb, weight);
      if (!fit.found) continue;
      b.qs[2 * ib] = uint8_t(fit.index[0] & 255);
      b.qs[2 * ib + 1] = uint8_t(fit.index[1] & 255);
      b.qh[ib] = uint8_t((fit.index[0] >> 8) | ((fit.index[1] >> 8) << 4));
      scales[ib] = fit.scale;
      patterns[ib] = fit.pattern;
      max_scale = std::max(max_scale, fit.scale);
    }
    if (!max_scale) continue;
    // 3-bit group scales against d = max/15; then d itself is re-fitted by least squares over the whole
    // block with those scales and grid points (skipped groups included, as ggml), and stored 11.25% larger.
    uint16_t sc[4] = {};
    float d = max_scale / 15;
    const float id = 1 / d;
    float sumqx = 0, sumq2 = 0;
    for (int ib = 0; ib < kGroups; ++ib) {
      const int l = scale_level(id, scales[ib]);
      sc[ib / 4] = uint16_t(sc[ib / 4] | (l << (3 * (ib % 4))));
      b.qh[ib] |= kShiftBits[patterns[ib]];
      const float* xb = xbl + kMGroup * ib;
      group_weights<kMGroup>(xb, qwbl ? qwbl + kMGroup * ib : nullptr, sigma2, weight);
      for (int k = 0; k < 2; ++k) {
        const int index = b.qs[2 * ib + k] | (((b.qh[ib] >> (4 * k)) & 7) << 8);
        for (int j = 0; j < 8; ++j) {
          const float w = weight[8 * k + j];
          const float q = unit_shift(patterns[ib], k)[point_level(index, j)] * float(2 * l + 1);
          sumqx += w * q * xb[8 * k + j];
          sumq2 += w * q * q;
        }
      }
    }
    if (sumq2 > 0) d = sumqx / sumq2;
    const uint16_t d16 = f32_to_f16(d * 1.1125f);
    sc[0] = uint16_t(sc[0] | ((d16 & 0x000f) << 12));
    sc[1] = uint16_t(sc[1] | ((d16 & 0x00f0) << 8));
    sc[2] = uint16_t(sc[2] | ((d16 & 0x0f00) << 4));
    sc[3] = uint16_t(sc[3] | (d16 & 0xf000));
    std::memcpy(b.scales, sc, sizeof sc);
  }
}

void dequantize_row_iq1_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq1_s", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq1_s(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq1S*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < kBlock / 32; ++ib)
      for (int l = 0; l < 4; ++l, y += 8) iq1::decode_s_subgroup(kIq1Grid.data(), d, b[i].qs[4 * ib + l], b[i].qh[ib], l, y);
  }
}

void dequantize_row_iq1_m(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq1_m", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq1_m(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq1M*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    uint16_t sc[4];
    std::memcpy(sc, b[i].scales, sizeof sc);
    const float d = f16_to_f32(iq1m_d_bits(sc));
    for (int ib = 0; ib < kBlock / 32; ++ib)
      for (int l = 0; l < 4; ++l, y += 8)
        iq1::decode_m_subgroup(kIq1Grid.data(), d, sc, b[i].qs[4 * ib + l], b[i].qh[2 * ib + l / 2], ib, l, y);
  }
}

}  // namespace lowbit::ggml
