// iq3_xxs and iq3_s: ggml-quants.c's iq3xs_init_impl (the search tables), iq3_find_best_neighbour,
// quantize_row_iq3_xxs_impl, quantize_row_iq3_s_impl and the dequantizers, byte for byte.
//
// Both quantizers work on groups of 32 values: take absolute values (signs are stored apart), try a
// range of scales; at each, round every 4-value unit to levels 0..7 and, where that 4-vector is not a
// grid point, take the best of its nearest grid points; keep the scale with the best weighted
// least-squares fit. One fp16 d per 256 values and a 4-bit multiple of it per group encode the scales.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_iq3.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <span>
#include <vector>

#include "formats/ggml_block_check.h"
#include "formats/ggml_iq3_search.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

#if defined(__SSE2__)
#include <immintrin.h>
#endif

namespace lowbit::ggml {
namespace {

using ggml_search::round_nearest_even;

// Square roots of n values (n a multiple of 4), correctly rounded as sqrtf's: 4 per instruction where
// SSE2 is there (x86-64's baseline; std::sqrt's errno check keeps the compiler from vectorising it).
void square_roots(const float* in, float* out, int n) {
#if defined(__SSE2__)
  for (int i = 0; i < n; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(in + i)));
#else
  for (int i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
#endif
}

constexpr int kBlock = kIq3BlockValues;
constexpr int kGroup = 32;          // values per 4-bit scale
constexpr int kGroups = kBlock / kGroup;
constexpr int kUnits = kGroup / 4;  // grid points per group
constexpr int kMaxLevel = 7;
constexpr int kCodes = 1 << 12;     // all 4-vectors of levels 0..7

// The quantizer's view of one grid: the points as odd integers 2l+1, which 4-vectors of levels are
// grid points, and for every other 4-vector its candidate grid points (those at the `rings` smallest
// squared distances, ordered by distance, then index, as ggml's qsort orders them).
struct Iq3SearchGrid {
  std::vector<std::array<int8_t, 4>> points;
  std::array<int16_t, kCodes> index_of{};         // grid index of a level code, -1 if not on the grid
  std::array<uint32_t, kCodes + 1> neighbours_begin{};
  std::vector<uint16_t> neighbours;
  // The same lists as the all-trials kernel reads them (iq3::TrialGrid).
  std::array<uint32_t, kCodes / 32> on_grid{};
  std::vector<uint16_t> list_codes;
  std::vector<uint32_t> list_slots;
  std::array<uint32_t, kCodes + 1> list_begin{};
  std::array<uint32_t, kCodes> slot_mask{};
  std::vector<uint16_t> list_term_offsets;

  iq3::TrialGrid trial_grid() const {
    return {on_grid.data(), list_begin.data(), list_codes.data(), list_slots.data(), slot_mask.data(),
            list_term_offsets.data()};
  }

  std::span<const uint16_t> neighbours_of(int code) const {
    return {neighbours.data() + neighbours_begin[code], neighbours.data() + neighbours_begin[code + 1]};
  }
};

Iq3SearchGrid build_search_grid(std::span<const uint16_t> codes, int rings) {
  Iq3SearchGrid grid;
  grid.index_of.fill(-1);
  for (size_t j = 0; j < codes.size(); ++j) {
    std::array<int8_t, 4> point{};
    for (int i = 0; i < 4; ++i) point[i] = int8_t(2 * iq3_grid_level(codes[j], i) + 1);
    grid.points.push_back(point);
    grid.index_of[codes[j]] = int16_t(j);
  }
  // Squared distances between 4-vectors of odd levels 1..15: at most 4 * 14^2.
  constexpr int kMaxDistance = 4 * 14 * 14;
  std::vector<int> d2(codes.size());
  for (int code = 0; code < kCodes; ++code) {
    grid.neighbours_begin[code] = uint32_t(grid.neighbours.size());
    if (grid.index_of[code] >= 0) continue;
    std::array<bool, kMaxDistance + 1> present{};
    for (size_t j = 0; j < codes.size(); ++j) {
      int sum = 0;
      for (int i = 0; i < 4; ++i) {
        const int diff = grid.points[j][i] - (2 * iq3_grid_level(uint16_t(code), i) + 1);
        sum += diff * diff;
      }
      d2[j] = sum;
      present[size_t(sum)] = true;
    }
    // The points at the `rings` smallest distances, each ring in index order: ggml's (distance, index)
    // sort order.
    int found = 0;
    for (int ring = 0; ring <= kMaxDistance && found < rings; ++ring) {
      if (!present[size_t(ring)]) continue;
      ++found;
      for (size_t j = 0; j < codes.size(); ++j)
        if (d2[j] == ring) grid.neighbours.push_back(uint16_t(j));
    }
  }
  grid.neighbours_begin[kCodes] = uint32_t(grid.neighbours.size());
  for (size_t j = 0; j < codes.size(); ++j) grid.on_grid[codes[j] / 32] |= 1u << (codes[j] % 32);
  for (int code = 0; code < kCodes; ++code) {
    grid.list_begin[size_t(code)] = uint32_t(grid.list_codes.size());
    const auto list = grid.neighbours_of(code);
    for (size_t n = 0; n < (list.size() + 3) / 4 * 4; ++n) {
      const uint16_t j = list[std::min(n, list.size() - 1)];
      uint32_t slots = 0;
      for (int i = 0; i < 4; ++i) {
        const int slot = 8 * i + iq3_grid_level(codes[j], i);
        slots |= uint32_t(slot) << (8 * i);
        grid.list_term_offsets.push_back(uint16_t(32 * slot));
        grid.slot_mask[size_t(code)] |= 1u << slot;
      }
      grid.list_codes.push_back(codes[j]);
      grid.list_slots.push_back(slots);
    }
  }
  grid.list_begin[kCodes] = uint32_t(grid.list_codes.size());
  grid.list_codes.resize(grid.list_codes.size() + 8);  // a kernel's 8-code reads past the last list
  return grid;
}

// Built on first use (ggml's ggml_quantize_init); function-local statics are thread-safe.
const Iq3SearchGrid& xxs_search_grid() {
  static const Iq3SearchGrid grid = build_search_grid(kIq3XxsGridCodes, 2);
  return grid;
}
const Iq3SearchGrid& s_search_grid() {
  static const Iq3SearchGrid grid = build_search_grid(kIq3SGridCodes, 3);
  return grid;
}

// How the two types differ in their search (everything else is shared).
struct Iq3Search {
  const Iq3SearchGrid& grid;
  int scale_steps;           // trial inverse scales (15 + 0.2 k) / max for k = -steps..steps
  bool even_sign_parity;     // iq3_xxs stores 7 sign bits per 8 values: flip one to make the count even
  float skip_below;          // a group whose max |x| is below this is stored as zero (iq3_s: only 0)
  bool unaccepted_on_grid;   // is_on_grid before any trial fit is accepted (decides the final re-fit)
  bool refit_every_unit;     // the final re-fit re-rounds every unit (iq3_s), or only off-grid ones
};

// The grid point for 4 absolute values at `scale` among the neighbours of their rounded level code:
// the smallest sum of waux * (scale * q - x)^2, the first on ties.
int best_neighbour(const Iq3SearchGrid& grid, int code, const float* xval, const float* waux, float scale) {
  float best_d2 = FLT_MAX;
  int best = -1;
  for (const uint16_t j : grid.neighbours_of(code)) {
    float d2 = 0;
    for (int i = 0; i < 4; ++i) {
      const float diff = scale * float(grid.points[j][i]) - xval[i];
      d2 += waux[i] * diff * diff;
    }
    if (d2 < best_d2) {
      best_d2 = d2;
      best = j;
    }
  }
  return best;
}

// Levels of 4 values at inverse scale id, as a 12-bit code.
int level_code(const float* xval, float id) {
  int code = 0;
  for (int i = 0; i < 4; ++i) {
    const int l = std::clamp(round_nearest_even(0.5f * (id * xval[i] - 1)), 0, kMaxLevel);
    code |= l << (3 * i);
  }
  return code;
}

// The grid point of one unit at inverse scale id (searching neighbours at `scale` when off the grid);
// writes its levels to L. Returns whether the rounded levels were on the grid.
bool snap_unit(const Iq3SearchGrid& grid, const float* xval, const float* waux,
               float id, float scale, int8_t* L) {
  const int code = level_code(xval, id);
  int index = grid.index_of[code];
  const bool on_grid = index >= 0;
  if (!on_grid) index = best_neighbour(grid, code, xval, waux, scale);
  // Only non-finite input leaves every distance at or above FLT_MAX (ggml aborts); the pipeline refuses
  // such input before it gets here.
  if (index < 0) index = grid.neighbours_of(code)[0];
  for (int i = 0; i < 4; ++i) L[i] = int8_t((grid.points[index][i] - 1) / 2);
  return on_grid;
}

void weighted_fit_sums(const float* weight, const float* xval, const int8_t* L, float& sumqx, float& sumq2) {
  sumqx = 0;
  sumq2 = 0;
  for (int i = 0; i < kGroup; ++i) {
    const float q = float(2 * L[i] + 1);
    sumqx += weight[i] * xval[i] * q;
    sumq2 += weight[i] * q * q;
  }
}

struct GroupFit {
  bool skipped = false;    // max |x| below the type's threshold: nothing stored for the group
  float scale = 0;
  int8_t L[kGroup] = {};   // levels 0..7 of every value, each unit a grid point
  uint8_t signs[4] = {};   // sign byte of values 8l..8l+7 (iq3_xxs: 7 bits)
};

// Four trial scales side by side: GCC/clang vector extensions, one SSE register (x86-64's baseline).
// Each lane rounds every operation as the scalar code does.
using Floats4 = float __attribute__((vector_size(16)));
using Ints4 = int32_t __attribute__((vector_size(16)));
constexpr int kScaleLanes = 4;

// Every trial scale's rounding of one group. The trials are independent until ggml's sequential choice
// among them, so they are computed side by side, trial index innermost (the loops vectorise, each lane
// computing exactly the floats ggml computes for its trial).
constexpr int kMaxTrials = 31;
constexpr int kPaddedTrials = 32;  // a whole number of vectors
struct Trials {
  int count = 0;
  float id[kPaddedTrials], scale[kPaddedTrials];  // the padding repeats the last trial
  int8_t levels[kGroup][kMaxTrials];  // value-major: levels[i][t] is value i's level in trial t
  bool on_grid[kUnits][kMaxTrials];
};

// The level codes of unit xval (4 values) at every trial, 4 trials per vector: level_code's rounding
// (ggml's nearest_int: add 1.5 * 2^23, read the mantissa) and clamping, lane by lane.
void level_codes_all_trials(const float* xval, const Trials& trials, int* codes) {
  for (int first = 0; first < trials.count; first += kScaleLanes) {
    Floats4 id;
    std::memcpy(&id, trials.id + first, sizeof id);
    Ints4 code = {0, 0, 0, 0};
    for (int i = 0; i < 4; ++i) {
      const Floats4 shifted = 0.5f * (id * xval[i] - 1) + 12582912.f;
      Ints4 level = (Ints4(shifted) & 0x007fffff) - 0x00400000;
      level &= ~(level < 0);
      const Ints4 above = level > kMaxLevel;
      level = (above & kMaxLevel) | (~above & level);
      code |= level << (3 * i);
    }
    std::memcpy(codes + first, &code, sizeof code);
  }
}

// Among a code's neighbours, the nearest at each of `count` scales (ggml's iq3_find_best_neighbour run
// once per scale: the first strict minimum in list order). A candidate is evaluated at 4 scales at
// once; the per-scale minima see the candidates in the same order as separate runs would. `scales`
// and `best` hold kScaleLanes entries more than `count`.
void nearest_at_scales(const Iq3SearchGrid& grid, int code, const float* xval, const float* waux, const float* scales,
                       int count, int* best) {
  for (int first = 0; first < count; first += kScaleLanes) {
    Floats4 scale;
    std::memcpy(&scale, scales + first, sizeof scale);
    Floats4 best_d2 = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
    Ints4 best_j = {-1, -1, -1, -1};
    for (const uint16_t j : grid.neighbours_of(code)) {
      const std::array<int8_t, 4>& point = grid.points[j];
      Floats4 d2 = {0, 0, 0, 0};
      for (int i = 0; i < 4; ++i) {
        const Floats4 diff = scale * float(point[i]) - xval[i];
        d2 += waux[i] * diff * diff;
      }
      const Ints4 better = d2 < best_d2;  // all ones where strictly smaller (false for NaN, as ggml's)
      best_d2 = Floats4((better & Ints4(d2)) | (~better & Ints4(best_d2)));
      best_j = (better & int32_t(j)) | (~better & best_j);
    }
    std::memcpy(best + first, &best_j, sizeof best_j);
  }
}

// Unit k (values 4k..4k+3) at every trial: its rounded code, and where that is off the grid the nearest
// neighbour at the trial's scale. Trials that round to the same off-grid code search its list together.
void snap_unit_all_trials(const Iq3SearchGrid& grid, const float* xval, const float* waux, int k, Trials& trials) {
  const int n = trials.count;
  int codes[kPaddedTrials], index[kMaxTrials];
  level_codes_all_trials(xval + 4 * k, trials, codes);
  for (int t = 0; t < n; ++t) {
    index[t] = grid.index_of[codes[t]];
    trials.on_grid[k][t] = index[t] >= 0;
  }
  bool pending[kMaxTrials];
  for (int t = 0; t < n; ++t) pending[t] = index[t] < 0;
  for (int t = 0; t < n; ++t) {
    if (!pending[t]) continue;
    int members[kMaxTrials], found[kMaxTrials + kScaleLanes], count = 0;
    float scales[kMaxTrials + kScaleLanes];
    for (int u = t; u < n; ++u)
      if (pending[u] && codes[u] == codes[t]) {
        members[count] = u;
        scales[count++] = trials.scale[u];
        pending[u] = false;
      }
    std::fill(scales + count, scales + count + kScaleLanes, 0.f);  // lanes past the list: ignored
    nearest_at_scales(grid, codes[t], xval + 4 * k, waux + 4 * k, scales, count, found);
    // Only non-finite input leaves every distance at or above FLT_MAX (ggml aborts); the pipeline
    // refuses such input before it gets here.
    for (int m = 0; m < count; ++m) index[members[m]] = found[m] < 0 ? grid.neighbours_of(codes[t])[0] : found[m];
  }
  for (int i = 0; i < 4; ++i)
    for (int t = 0; t < n; ++t) trials.levels[4 * k + i][t] = int8_t((grid.points[index[t]][i] - 1) / 2);
}

// One group's signs, levels and float scale. x: the group's values; weight: their fitting weights.
GroupFit fit_group(const cpu::CpuKernels& kernels, const Iq3Search& search, const float* x, const float* weight) {
  GroupFit fit;
  float xval[kGroup], waux[kGroup];
  square_roots(weight, waux, kGroup);
  for (int i = 0; i < kGroup; ++i) xval[i] = x[i] >= 0 ? x[i] : -x[i];
  for (int l = 0; l < 4; ++l) {
    const float* xs = x + 8 * l;
    float* xv = xval + 8 * l;
    unsigned signs = 0;
    for (int i = 0; i < 8; ++i) signs |= unsigned(xs[i] < 0) << i;
    if (search.even_sign_parity && std::popcount(signs) % 2) {
      // Flip the value that costs least to get wrong (smallest w x^2): its sign now follows parity.
      int imin = 0;
      float min = weight[8 * l] * xs[0] * xs[0];
      for (int i = 1; i < 8; ++i) {
        const float cost = weight[8 * l + i] * xs[i] * xs[i];
        if (cost < min) {
          min = cost;
          imin = i;
        }
      }
      xv[imin] = -xv[imin];
      signs ^= 1u << imin;
    }
    fit.signs[l] = uint8_t(search.even_sign_parity ? signs & 127 : signs);
  }
  float max = xval[0];
  for (int i = 1; i < kGroup; ++i) max = max > xval[i] ? max : xval[i];
  if (max < search.skip_below || max == 0) {
    fit.skipped = true;
    return fit;
  }

  const Iq3SearchGrid& grid = search.grid;
  Trials trials;
  trials.count = 2 * search.scale_steps + 1;
  for (int t = 0; t < trials.count; ++t) {
    trials.id[t] = (2 * kMaxLevel + 1 + float(t - search.scale_steps) * 0.2f) / max;
    trials.scale[t] = 1 / trials.id[t];
  }
  std::fill(trials.id + trials.count, std::end(trials.id), trials.id[trials.count - 1]);
  std::fill(trials.scale + trials.count, std::end(trials.scale), trials.scale[trials.count - 1]);
  float sumqx[kPaddedTrials], sumq2[kPaddedTrials];  // the vector kernel writes them; the portable loop adds
  const iq3::AllTrialsFn all_trials = kernels.iq3_all_trials;
  const bool vector = all_trials != nullptr;
  // The vector kernel's result: each unit's grid point (level code) at every trial, and which trials
  // rounded it off the grid.
  uint16_t unit_codes[kUnits * iq3::kTrialLanes];
  uint32_t off_grid[kUnits];
  if (vector) {
    all_trials(grid.trial_grid(), xval, waux, weight, trials.id, trials.scale, trials.count, unit_codes, off_grid, sumqx,
               sumq2);
  } else {
    for (int k = 0; k < kUnits; ++k) snap_unit_all_trials(grid, xval, waux, k, trials);
    std::fill(std::begin(sumqx), std::end(sumqx), 0.f);
    std::fill(std::begin(sumq2), std::end(sumq2), 0.f);
    // Every trial's weighted sums, value by value in ggml's order: sumqx += (w*x)*q, sumq2 += (w*q)*q.
    for (int i = 0; i < kGroup; ++i) {
      const float wx = weight[i] * xval[i];
      for (int t = 0; t < trials.count; ++t) {
        const float q = float(2 * trials.levels[i][t] + 1);
        sumqx[t] += wx * q;
        sumq2[t] += weight[i] * q * q;
      }
    }
  }
  // ggml's sequential choice: the first trial that improves the fit strictly.
  float best = 0;
  float scale = max / (2 * kMaxLevel + 1);
  int chosen = -1;
  for (int t = 0; t < trials.count; ++t) {
    if (sumq2[t] > 0 && sumqx[t] * sumqx[t] > best * sumq2[t]) {
      scale = sumqx[t] / sumq2[t];
      best = scale * sumqx[t];
      chosen = t;
    }
  }
  bool on_grid[kUnits];
  if (vector) {
    for (int k = 0; k < kUnits; ++k) on_grid[k] = chosen < 0 ? search.unaccepted_on_grid : !((off_grid[k] >> chosen) & 1);
    if (chosen >= 0)
      for (int k = 0; k < kUnits; ++k)
        for (int i = 0; i < 4; ++i) fit.L[4 * k + i] = int8_t(iq3_grid_level(unit_codes[iq3::kTrialLanes * k + chosen], i));
  } else {
    for (int k = 0; k < kUnits; ++k) on_grid[k] = chosen < 0 ? search.unaccepted_on_grid : trials.on_grid[k][chosen];
    if (chosen >= 0)
      for (int i = 0; i < kGroup; ++i) fit.L[i] = trials.levels[i][chosen];
  }
  // Units that needed a neighbour search are re-rounded at the fitted scale, which is then re-fitted.
  if (std::count(std::begin(on_grid), std::end(on_grid), false) > 0 && scale > 0) {
    const float id = 1 / scale;
    if (const iq3::SnapUnitsFn snap_units = kernels.iq3_snap_units) {
      unsigned units = 0;
      for (int k = 0; k < kUnits; ++k) units |= unsigned(search.refit_every_unit || !on_grid[k]) << k;
      snap_units(grid.trial_grid(), xval, waux, id, scale, units, fit.L);
    } else {
      for (int k = 0; k < kUnits; ++k)
        if (search.refit_every_unit || !on_grid[k])
          snap_unit(grid, xval + 4 * k, waux + 4 * k, id, scale, fit.L + 4 * k);
    }
    float refit_qx, refit_q2;
    weighted_fit_sums(weight, xval, fit.L, refit_qx, refit_q2);
    if (refit_q2 > 0) scale = refit_qx / refit_q2;
  }
  if (scale < 0) {  // ggml's guard (scales are stored unsigned): flip the scale and every sign
    scale = -scale;
    for (uint8_t& s : fit.signs) s = uint8_t(search.even_sign_parity ? ~s & 127 : ~s);
  }
  fit.scale = scale;
  return fit;
}

// Fitting weights of one group: quant_weights * sqrt(sigma2 + x^2), or x^2 without importance weights.
void group_weights(const float* x, const float* qw, float sigma2, float* weight) {
  if (qw) {
    float spread[kGroup];
    for (int i = 0; i < kGroup; ++i) spread[i] = sigma2 + x[i] * x[i];
    square_roots(spread, weight, kGroup);
    for (int i = 0; i < kGroup; ++i) weight[i] = qw[i] * weight[i];
  } else {
    for (int i = 0; i < kGroup; ++i) weight[i] = x[i] * x[i];
  }
}

float block_sigma2(const float* x) {
  float sumx2 = 0;
  for (int i = 0; i < kBlock; ++i) sumx2 += x[i] * x[i];
  return 2 * sumx2 / kBlock;
}

int grid_index(const Iq3SearchGrid& grid, const int8_t* L) {
  int code = 0;
  for (int i = 0; i < 4; ++i) code |= L[i] << (3 * i);
  return grid.index_of[code];  // on the grid by construction: every unit was snapped to a grid point
}

// The 4-bit multiple s of d (scale ~ d * (2s + 1)).
inline uint32_t scale_nibble(float id, float scale) {
  return uint32_t(std::clamp(round_nearest_even(0.5f * (id * scale - 1)), 0, 15));
}

}  // namespace

void quantize_row_iq3_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                          cpu::CpuTarget target) {
  require_whole_blocks("iq3_xxs", n, kBlock);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  const Iq3Search search{xxs_search_grid(), 15, true, 1e-8f, true, false};
  auto* y = static_cast<BlockIq3Xxs*>(blocks);
  float weight[kGroup], scales[kGroups];
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    const float* xbl = x + kBlock * ibl;
    BlockIq3Xxs& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    const float sigma2 = quant_weights ? block_sigma2(xbl) : 0.f;  // only importance weights use it
    float max_scale = 0;
    for (int ib = 0; ib < kGroups; ++ib) {
      const float* xb = xbl + kGroup * ib;
      group_weights(xb, quant_weights ? quant_weights + kBlock * ibl + kGroup * ib : nullptr, sigma2, weight);
      const GroupFit fit = fit_group(kernels, search, xb, weight);
      scales[ib] = fit.scale;
      if (fit.skipped) continue;
      for (int k = 0; k < kUnits; ++k) b.qs[8 * ib + k] = uint8_t(grid_index(search.grid, fit.L + 4 * k));
      const uint32_t word = fit.signs[0] | (fit.signs[1] << 7) | (fit.signs[2] << 14) | (uint32_t(fit.signs[3]) << 21);
      std::memcpy(b.qs + 64 + 4 * ib, &word, 4);
      max_scale = std::max(max_scale, fit.scale);
    }
    if (!max_scale) {
      std::memset(&b, 0, sizeof b);
      continue;
    }
    // The largest group scale maps to s = 15; ggml stores d 1.25% larger ("small improvement").
    const float d = max_scale / 31;
    b.d = f32_to_f16(d * 1.0125f);
    const float id = 1 / d;
    for (int ib = 0; ib < kGroups; ++ib) {
      uint32_t word;
      std::memcpy(&word, b.qs + 64 + 4 * ib, 4);
      word |= scale_nibble(id, scales[ib]) << 28;
      std::memcpy(b.qs + 64 + 4 * ib, &word, 4);
    }
  }
}

void quantize_row_iq3_s(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq3_s", n, kBlock);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  const Iq3Search search{s_search_grid(), 9, false, 0.f, false, true};
  auto* y = static_cast<BlockIq3S*>(blocks);
  float weight[kGroup], scales[kGroups];
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    const float* xbl = x + kBlock * ibl;
    BlockIq3S& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    const float sigma2 = quant_weights ? block_sigma2(xbl) : 0.f;  // only importance weights use it
    float max_scale = 0;
    // ggml advances its qs and signs pointers only past stored groups, so a skipped (all-zero) group
    // shifts the grid indices and signs of every later group of the block down by one group (qh and
    // scales stay in place). Reproduced: the bytes are the format's as llama.cpp writes them.
    int stored = 0;
    for (int ib = 0; ib < kGroups; ++ib) {
      const float* xb = xbl + kGroup * ib;
      group_weights(xb, quant_weights ? quant_weights + kBlock * ibl + kGroup * ib : nullptr, sigma2, weight);
      const GroupFit fit = fit_group(kernels, search, xb, weight);
      scales[ib] = fit.scale;
      if (fit.skipped) continue;
      for (int k = 0; k < kUnits; ++k) {
        const int index = grid_index(search.grid, fit.L + 4 * k);
        b.qs[8 * stored + k] = uint8_t(index & 255);
        b.qh[ib] |= uint8_t((index >> 8) << k);
      }
      std::copy(std::begin(fit.signs), std::end(fit.signs), b.signs + 4 * stored);
      ++stored;
      max_scale = std::max(max_scale, fit.scale);
    }
    if (!max_scale) continue;
    const float d = max_scale / 31;
    b.d = f32_to_f16(d * 1.033f);
    const float id = 1 / d;
    for (int ib = 0; ib < kGroups; ib += 2)
      b.scales[ib / 2] = uint8_t(scale_nibble(id, scales[ib]) | (scale_nibble(id, scales[ib + 1]) << 4));
  }
}

void dequantize_row_iq3_xxs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq3_xxs", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq3_xxs(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq3Xxs*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < kGroups; ++ib) {
      uint32_t word;
      std::memcpy(&word, b[i].qs + 64 + 4 * ib, 4);
      for (int l = 0; l < 4; ++l, y += 8)
        iq3::decode_xxs_subgroup(kIq3XxsGrid.data(), d, b[i].qs[8 * ib + 2 * l], b[i].qs[8 * ib + 2 * l + 1], word, l, y);
    }
  }
}

void dequantize_row_iq3_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq3_s", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq3_s(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq3S*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < kGroups; ++ib)
      for (int l = 0; l < 4; ++l, y += 8)
        iq3::decode_s_subgroup(kIq3SGrid.data(), d, b[i].qs[8 * ib + 2 * l], b[i].qs[8 * ib + 2 * l + 1], b[i].qh[ib],
                               b[i].signs[4 * ib + l], b[i].scales[ib / 2], ib, l, y);
  }
}

}  // namespace lowbit::ggml
