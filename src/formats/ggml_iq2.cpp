// iq2_xxs, iq2_xs and iq2_s: ggml-quants.c's quantize_row_iq2_{xxs,xs,s}_impl and the dequantizers,
// byte for byte.
//
// The quantizer works per scale group (32 values for iq2_xxs, 16 for the others) of 8-value subgroups.
// Signs are taken out first (values become magnitudes), then a handful of trial scales are tried: each
// rounds every subgroup to levels 0..2 (values 1, 3, 5 times the scale); a rounding that is not a grid
// point is replaced by the nearest grid point under the weights. The trial whose codes fit the values
// best (weighted least squares) wins; then the group's scale is refitted, and finally all scales of the
// block are coded in 4 bits against the block's largest.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_iq2.h"

#include <algorithm>
#include <array>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <optional>
#include <string>

#include "formats/ggml_block_check.h"
#include "formats/ggml_iq2_grids.h"
#include "formats/ggml_iq2_search.h"
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
using iq2::SearchTables;

constexpr int kBlock = 256;
constexpr int kSub = 8;        // values per grid point
constexpr int kTopLevel = 2;   // levels 0..2 stand for the values 1, 3, 5
constexpr int kMaxGroup = 32;
constexpr float kIq2sGroupMaxEps = 1e-8f;  // iq2_s counts a group as zero below this (others: 1e-15)

void require_weights(const char* type_name, const float* quant_weights) {
  if (!quant_weights)
    throw Error(std::string(type_name) + " needs importance weights (ggml refuses to quantize it without them)",
                {.expected = "an importance matrix: lowbit imatrix MODEL --text FILE -o imatrix.gguf"});
}

// ggml's MAX(a, b) = a > b ? a : b, kept for its choice between equal values and signed zeros.
inline float ggml_max(float a, float b) { return a > b ? a : b; }

float block_sum_of_squares(const float* x) {
  float sum = 0;
  for (int i = 0; i < kBlock; ++i) sum += x[i] * x[i];
  return sum;
}

// `sum` + the squares of n values, added in order.
inline float add_squares(const float* x, int n, float sum) {
  for (int i = 0; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// out[i] = sqrtf(in[i]), n a multiple of 4: 4 correctly rounded square roots per SSE instruction
// (std::sqrt's errno check keeps the compiler from vectorising the loop).
inline void sqrt_values(const float* in, int n, float* out) {
#if defined(__SSE2__)
  for (int i = 0; i < n; i += 4) _mm_storeu_ps(out + i, _mm_sqrt_ps(_mm_loadu_ps(in + i)));
#else
  for (int i = 0; i < n; ++i) out[i] = std::sqrt(in[i]);
#endif
}

// weight[i] = qw[i] * sqrtf(sigma2 + x[i] * x[i]), n a multiple of 4, each float as ggml's.
inline void imatrix_weights(const float* x, const float* qw, float sigma2, int n, float* weight) {
#if defined(__SSE2__)
  for (int i = 0; i < n; i += 4) {
    const __m128 xi = _mm_loadu_ps(x + i);
    const __m128 root = _mm_sqrt_ps(_mm_add_ps(_mm_set1_ps(sigma2), _mm_mul_ps(xi, xi)));
    _mm_storeu_ps(weight + i, _mm_mul_ps(_mm_loadu_ps(qw + i), root));
  }
#else
  for (int i = 0; i < n; ++i) weight[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
#endif
}

// One scale group made ready for the search.
struct Group {
  int n = 0;                 // 32 (iq2_xxs) or 16
  float xval[kMaxGroup];     // magnitudes; a value flipped by the parity rule stays negative
  float weight[kMaxGroup];   // the least-squares weights
  float waux[kMaxGroup];     // sqrt(weight): the neighbour search's weights, as ggml
  uint8_t signs[kMaxGroup / kSub];
};

// Splits x into signs and magnitudes. With `even_parity` (iq2_xxs, iq2_xs store 7 sign bits), a
// subgroup with an odd number of negative values keeps its least important value (smallest w*x^2,
// first on ties) with the wrong sign: its magnitude is negated instead, so the grid fits it as is.
void prepare_group(const float* x, int n, bool even_parity, Group& g) {
  g.n = n;
  sqrt_values(g.weight, n, g.waux);
  for (int k = 0; k < n / kSub; ++k) {
    const float* xs = x + kSub * k;
    float* xv = g.xval + kSub * k;
    const float* w = g.weight + kSub * k;
    // A value is negative where !(x >= 0): NaN counts as negative, as ggml's else branch. Without
    // branches: the signs are unpredictable.
#if defined(__SSE2__)
    const __m128 sign_bit = _mm_set1_ps(-0.f);
    const __m128 low = _mm_loadu_ps(xs), high = _mm_loadu_ps(xs + 4);
    const __m128 negative_low = _mm_cmpnge_ps(low, _mm_setzero_ps()), negative_high = _mm_cmpnge_ps(high, _mm_setzero_ps());
    _mm_storeu_ps(xv, _mm_xor_ps(low, _mm_and_ps(negative_low, sign_bit)));  // -x where negative
    _mm_storeu_ps(xv + 4, _mm_xor_ps(high, _mm_and_ps(negative_high, sign_bit)));
    uint8_t s = uint8_t(_mm_movemask_ps(negative_low) | (_mm_movemask_ps(negative_high) << 4));
    const int negatives = __builtin_popcount(s);
#else
    int negatives = 0;
    uint8_t s = 0;
    for (int i = 0; i < kSub; ++i) {
      const bool negative = !(xs[i] >= 0);
      xv[i] = negative ? -xs[i] : xs[i];
      negatives += negative;
      s |= uint8_t(int(negative) << i);
    }
#endif
    if (even_parity && negatives % 2) {
      int imin = 0;
      float min = w[0] * xs[0] * xs[0];
      for (int i = 1; i < kSub; ++i) {
        const float importance = w[i] * xs[i] * xs[i];
        if (importance < min) {
          min = importance;
          imin = i;
        }
      }
      xv[imin] = -xv[imin];
      s ^= uint8_t(1 << imin);
    }
    g.signs[k] = even_parity ? uint8_t(s & 127) : s;
  }
}

float group_max(const Group& g) {
  float max = g.xval[0];
  for (int i = 1; i < g.n; ++i) max = ggml_max(max, g.xval[i]);
  return max;
}

// Resolves subgroup k of a trial rounding (levels, key): a key off the grid is replaced by the grid
// point nearest the magnitudes at `scale` under the weights (ggml's iq2_find_best_neighbour, first
// strict minimum in list order). Returns whether the rounding was on the grid. `by_lanes`: search the
// list's lane-major levels (what the trials of iq2_xxs and iq2_xs searched, so in the cache) instead of
// its candidate keys (what iq2_s's all-trials kernel read).
bool resolve_subgroup(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g, int k, uint32_t key,
                      float scale, int8_t* levels, bool by_lanes = false) {
  const int32_t entry = t.by_key[key];
  if (entry >= 0) return true;
  const SearchTables::List& list = t.list_of(entry);
  if (list.count == 0) throw Error("iq2 search table has no neighbours for a rounded subgroup (internal error)");
  if (by_lanes) {
    const uint8_t* lane_levels = t.lane_levels.data() + list.lane_first;
    const int best = kernels.nearest_lanes_at_scale(lane_levels, int(list.count), g.xval + kSub * k,
                                                    g.waux + kSub * k, scale);
    if (best < 0) throw Error("iq2 quantizer found no grid point for a subgroup (non-finite values?)");
    const uint8_t* chosen = iq2::lane_levels_of(lane_levels, best);
    for (int j = 0; j < kSub; ++j) levels[j] = int8_t(SearchTables::level_of_lane_byte(chosen[j * SearchTables::kLaneChunk]));
    return false;
  }
  const uint32_t* candidate_keys = t.neighbour_keys.data() + list.first;
  const int best = kernels.nearest_key_at_scale(candidate_keys, int(list.count), g.xval + kSub * k, g.waux + kSub * k,
                                                scale);
  if (best < 0) throw Error("iq2 quantizer found no grid point for a subgroup (non-finite values?)");
  for (int j = 0; j < kSub; ++j) levels[j] = int8_t((candidate_keys[best] >> (2 * j)) & 3);
  return false;
}

// Rounds the whole group at inverse scale `id` and resolves every subgroup at `scale`; on_grid[k]
// tells which roundings were grid points.
void round_group(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g, float id, float scale,
                 int8_t* levels, bool* on_grid) {
  uint32_t keys[kMaxGroup / kSub];
  kernels.round_levels(g.xval, g.n, id, levels, keys);
  for (int k = 0; k < g.n / kSub; ++k)
    on_grid[k] = resolve_subgroup(t, kernels, g, k, keys[k], scale, levels + kSub * k, true);
}

struct Sums {
  float qx = 0, q2 = 0;
};
// As ggml's sums: sumqx += (w*x)*q, sumq2 += (w*q)*q, q = 2l+1, in order of the values. The products
// first, side by side, so that the loop of dependent adds is short enough for the next group's work to
// start beside it.
Sums weighted_sums(const Group& g, const int8_t* levels) {
  float qx[kMaxGroup], q2[kMaxGroup];
  for (int i = 0; i < g.n; ++i) {
    const float q = float(2 * levels[i] + 1);
    qx[i] = g.weight[i] * g.xval[i] * q;
    q2[i] = g.weight[i] * q * q;
  }
  Sums s;
  for (int i = 0; i < g.n; ++i) {
    s.qx += qx[i];
    s.q2 += q2[i];
  }
  return s;
}

// ---- every trial scale of a group side by side ----
//
// The trials are independent until ggml's sequential choice among them, so each step runs over all of
// them at once, each vector lane computing exactly the floats ggml computes for its trial: the levels and
// keys of every subgroup and the weighted sums of the resolved keys (SearchKernels::round_trials, trial_sums: 4, 8 or 16 trials
// per vector), and the neighbour search of the trials that round a subgroup to the same off-grid key (one
// pass over the key's list for all of them: SearchKernels::nearest_at_scales). Only the choice among
// trials stays sequential.
constexpr int kMaxTrials = iq2::kMaxScales;  // iq2_xs, iq2_s: is = -9..9 (iq2_xxs: 13)
constexpr int kStride = iq2::kTrialStride;

struct Trials {
  int count = 0;
  float id[kStride], scale[kStride];  // the padding repeats the last trial
  uint32_t keys[kMaxGroup / kSub][kStride];      // the roundings (value j's level at bits 2j)
  uint32_t resolved[kMaxGroup / kSub][kStride];  // the same, off-grid ones replaced by their nearest grid point
  uint32_t off_grid[kMaxGroup / kSub];  // bit t of off_grid[k]: trial t rounded subgroup k off the grid
};

// The key of candidate `c` of a list from its lane-major levels (read by the search just before: in the cache).
uint32_t key_of_lanes(const uint8_t* list_lanes, int c) {
  const uint8_t* levels = iq2::lane_levels_of(list_lanes, c);
  uint32_t key = 0;
  for (int j = 0; j < kSub; ++j)
    key |= uint32_t(SearchTables::level_of_lane_byte(levels[j * SearchTables::kLaneChunk])) << (2 * j);
  return key;
}

void set_trial_scales(Trials& trials, int first_is, int last_is, float max) {
  trials.count = last_is - first_is + 1;
  for (int t = 0; t < trials.count; ++t) {
    trials.id[t] = (float(2 * kTopLevel + 1) + float(first_is + t) * 0.1f) / max;
    trials.scale[t] = 1 / trials.id[t];
  }
  for (int t = trials.count; t < kStride; ++t) {
    trials.id[t] = trials.id[trials.count - 1];
    trials.scale[t] = trials.scale[trials.count - 1];
  }
}

// Each subgroup's trials as bit masks (bit t for trial t): where a run of equal keys starts, and which
// trials round it off the grid. The runs are walked by their bits: no branch per trial to mispredict.
struct SubgroupRuns {
  uint32_t starts[kMaxGroup / kSub];
  uint32_t off_grid[kMaxGroup / kSub];
};

// Subgroup k at every trial: where its key is off the grid, the nearest neighbour at the trial's scale
// replaces it. A run of trials that round it to the same key searches that key's list together.
// (Each value's level moves one way as the trial scales grow, so a key never comes back after a run ends:
// runs are all the sharing there is. Were it otherwise, a key would only be searched more than once.)
// `entries`: by_key of each trial's key (lookup_entries). The next subgroup's lists' levels are fetched
// into the cache meanwhile.
void resolve_all_trials(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g, int k,
                        Trials& trials, const int32_t* entries, const int32_t* next_entries,
                        const SubgroupRuns& runs) {
  const int n = trials.count;
  const uint32_t* keys = trials.keys[k];
  uint32_t* resolved = trials.resolved[k];
  if (next_entries) {
    for (uint32_t left = runs.starts[k + 1] & runs.off_grid[k + 1]; left; left &= left - 1) {
      const uint8_t* lanes = t.lane_levels.data() + t.list_of(next_entries[__builtin_ctz(left)]).lane_first;
      __builtin_prefetch(lanes);
      __builtin_prefetch(lanes + 64);
    }
  }
  for (int v = 0; v < n; ++v) resolved[v] = keys[v];
  trials.off_grid[k] = runs.off_grid[k];
  for (uint32_t left = runs.starts[k] & runs.off_grid[k]; left; left &= left - 1) {
    const int u = __builtin_ctz(left);
    const uint32_t later_starts = runs.starts[k] >> (u + 1);
    const int end = later_starts ? u + 1 + __builtin_ctz(later_starts) : n;
    const SearchTables::List& list = t.list_of(entries[u]);
    if (list.count == 0) throw Error("iq2 search table has no neighbours for a rounded subgroup (internal error)");
    int found[kMaxTrials];
    const uint8_t* list_lanes = t.lane_levels.data() + list.lane_first;
    kernels.nearest_at_scales(list_lanes, int(list.count), g.xval + kSub * k, g.waux + kSub * k, trials.scale + u,
                              end - u, found);
    // Neighbouring trials mostly find the same candidate: its key is assembled once.
    int last_found = -1;
    uint32_t last_key = 0;
    for (int v = u; v < end; ++v) {
      if (found[v - u] < 0) throw Error("iq2 quantizer found no grid point for a subgroup (non-finite values?)");
      if (found[v - u] != last_found) {
        last_found = found[v - u];
        last_key = key_of_lanes(list_lanes, last_found);
      }
      resolved[v] = last_key;
    }
  }
  // The sums read whole vectors of up to 16 trials: lanes past the trials get a key too.
  for (int v = n; v % 16; ++v) resolved[v] = resolved[n - 1];
}

// by_key of every trial's key of every subgroup, the loads side by side (by_key is 175 KB: mostly L2
// misses, which overlap here instead of one per run in the search loop), the runs' masks, and the
// off-grid runs' lists fetched.
void lookup_entries(const SearchTables& t, int subgroups, const Trials& trials, int32_t (*entries)[kStride],
                    SubgroupRuns& runs) {
  for (int k = 0; k < subgroups; ++k)
    for (int u = 0; u < trials.count; ++u) entries[k][u] = t.by_key[trials.keys[k][u]];
  for (int k = 0; k < subgroups; ++k) {
    uint32_t starts = 1, off_grid = 0;
    for (int u = 1; u < trials.count; ++u) starts |= uint32_t(trials.keys[k][u] != trials.keys[k][u - 1]) << u;
    for (int u = 0; u < trials.count; ++u) off_grid |= (uint32_t(entries[k][u]) >> 31) << u;  // entry < 0
    runs.starts[k] = starts;
    runs.off_grid[k] = off_grid;
    for (uint32_t left = starts & off_grid; left; left &= left - 1)
      __builtin_prefetch(&t.list_of(entries[k][__builtin_ctz(left)]));
  }
}

// All trials of a group: the trial ggml keeps (the first that improves the fit strictly), or -1 if none
// does; `scale` becomes its fitted scale. With `all_in_one`, SearchKernels::all_trials does all steps
// where the kernels have it (trials in the lanes: better for iq2_s's short neighbour lists; iq2_xxs's and
// iq2_xs's lists of two distances are searched faster with the candidates in the lanes).
int choose_trial(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g, Trials& trials,
                 float& scale, bool all_in_one) {
  float sumqx[kStride], sumq2[kStride];
  if (all_in_one && kernels.all_trials) {
    const int status = kernels.all_trials(t, g.xval, g.waux, g.weight, g.n, trials.id, trials.scale, trials.count,
                                          &trials.resolved[0][0], trials.off_grid, sumqx, sumq2);
    if (status == iq2::kEmptyList)
      throw Error("iq2 search table has no neighbours for a rounded subgroup (internal error)");
    if (status != 0) throw Error("iq2 quantizer found no grid point for a subgroup (non-finite values?)");
  } else {
    kernels.round_trials(g.xval, g.n, trials.id, trials.count, &trials.keys[0][0]);
    const int subgroups = g.n / kSub;
    int32_t entries[kMaxGroup / kSub][kStride];
    SubgroupRuns runs;
    lookup_entries(t, subgroups, trials, entries, runs);
    for (int k = 0; k < subgroups; ++k)
      resolve_all_trials(t, kernels, g, k, trials, entries[k], k + 1 < subgroups ? entries[k + 1] : nullptr, runs);
    kernels.trial_sums(g.weight, g.xval, g.n, &trials.resolved[0][0], trials.count, sumqx, sumq2);
  }
  // ggml's scan: a trial replaces the best when sumqx^2 > best * sumq2, and then best = scale * sumqx,
  // scale = sumqx / sumq2. Each trial's scale and best are computed first, all at once, so that the
  // scan's chain of replacements holds no division.
  float trial_scale[kStride], trial_best[kStride];
  for (int u = 0; u < trials.count; ++u) {
    trial_scale[u] = sumqx[u] / sumq2[u];
    trial_best[u] = trial_scale[u] * sumqx[u];
  }
  float best = 0;
  int chosen = -1;
  for (int u = 0; u < trials.count; ++u) {
    if (sumq2[u] > 0 && sumqx[u] * sumqx[u] > best * sumq2[u]) {
      best = trial_best[u];
      chosen = u;
    }
  }
  if (chosen >= 0) scale = trial_scale[chosen];
  return chosen;
}

void copy_trial_levels(const Trials& trials, int n, int chosen, int8_t* levels) {
  for (int i = 0; i < n; ++i) levels[i] = int8_t((trials.resolved[i / kSub][chosen] >> (2 * (i % kSub))) & 3);
}

// The grid index of subgroup k's final levels (ggml aborts if they are off the grid; they never are).
int grid_index_of(const SearchTables& t, const int8_t* levels) {
  uint32_t key = 0;
  for (int i = 0; i < kSub; ++i) key |= uint32_t(levels[i]) << (2 * i);
  const int32_t entry = t.by_key[key];
  if (entry < 0) throw Error("iq2 quantizer ended on a point off its grid (internal error)");
  return entry;
}

// ---- iq2_xxs: one scale per 32 values ----

// The trial scales start from ggml's make_qp_quants fit (levels 0..4 of the magnitudes): 13 inverse
// scales (5 + 0.1 is) / (3 * that scale), is = -6..6; then the best trial's scale is refitted after
// re-rounding every subgroup. Returns the scale (negative if the fit came out negative), or nothing
// when the first fit is zero (all weights zero): then the group stays all zero.
std::optional<float> fit_group_xxs(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g,
                                   int8_t* levels) {
  uint8_t qp_codes[kMaxGroup];
  float scale = kernels.fit_unsigned_scale(32, kTopLevel + 2, g.xval, qp_codes, g.weight);
  const float eff_max = scale * float(kTopLevel + 1);
  if (eff_max <= 0) return std::nullopt;
  Trials trials;
  set_trial_scales(trials, -6, 6, eff_max);
  const int chosen = choose_trial(t, kernels, g, trials, scale, false);
  if (!(scale > 0)) {  // no re-rounding: the levels are the chosen trial's (or make_qp_quants')
    if (chosen >= 0) {
      copy_trial_levels(trials, 32, chosen, levels);
    } else {
      for (int i = 0; i < 32; ++i) levels[i] = int8_t(qp_codes[i]);
    }
    return scale;
  }
  // The re-rounding replaces all levels.
  bool on_grid[4];
  round_group(t, kernels, g, 1 / scale, scale, levels, on_grid);
  const Sums s = weighted_sums(g, levels);
  if (s.q2 > 0) scale = s.qx / s.q2;
  return scale;
}

// ---- iq2_xs, iq2_s: one scale per 16 values ----

// 19 inverse scales (5 + 0.1 is) / max, is = -9..9; the best trial's off-grid subgroups (only those)
// are re-rounded at its scale, and the scale refitted. Returns the scale (possibly negative).
float fit_group_16(const SearchTables& t, const iq2::SearchKernels& kernels, const Group& g, float max,
                   bool all_in_one, int8_t* levels) {
  std::memset(levels, 0, 16);
  float scale = max / float(2 * kTopLevel + 1);
  Trials trials;
  set_trial_scales(trials, -9, 9, max);
  const int chosen = choose_trial(t, kernels, g, trials, scale, all_in_one);
  bool on_grid[2] = {true, true};
  if (chosen >= 0) {
    copy_trial_levels(trials, 16, chosen, levels);
    on_grid[0] = !((trials.off_grid[0] >> chosen) & 1);
    on_grid[1] = !((trials.off_grid[1] >> chosen) & 1);
  }
  if ((!on_grid[0] || !on_grid[1]) && scale > 0) {
    int8_t rounded[16];
    uint32_t keys[2];
    kernels.round_levels(g.xval, 16, 1 / scale, rounded, keys);
    for (int k = 0; k < 2; ++k) {
      if (on_grid[k]) continue;
      std::memcpy(levels + kSub * k, rounded + kSub * k, kSub);
      resolve_subgroup(t, kernels, g, k, keys[k], scale, levels + kSub * k, !all_in_one);
    }
    const Sums s = weighted_sums(g, levels);
    if (s.q2 > 0) scale = s.qx / s.q2;
  }
  return scale;
}

// The 4-bit code of a group scale against the block's d: scale ~ d * (0.5 + code) ... the code of ggml's
// nearest_int(0.5 * (scale / d - 1)), clamped to 0..15.
int scale_code(float id, float scale) { return std::clamp(round_nearest_even(0.5f * (id * scale - 1)), 0, 15); }

}  // namespace

void quantize_row_iq2_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                          cpu::CpuTarget target) {
  require_whole_blocks("iq2_xxs", n, kBlock);
  require_weights("iq2_xxs", quant_weights);
  const SearchTables& t = iq2::search_tables(iq2::Grid::Xxs);
  const iq2::SearchKernels& kernels = iq2::search_kernels(target);
  auto* y = static_cast<BlockIq2Xxs*>(blocks);
  Group g;
  int8_t levels[32];
  const int64_t blocks_in_row = n / kBlock;
  float sum_of_squares = blocks_in_row ? block_sum_of_squares(x) : 0.f;
  for (int64_t ibl = 0; ibl < blocks_in_row; ++ibl) {
    const float* xbl = x + kBlock * ibl;
    const float sigma2 = sum_of_squares / float(kBlock);
    // The next block's sum of squares, a 32-value piece per group: its chain of dependent adds runs
    // beside the group's work instead of ahead of the block.
    const bool has_next = ibl + 1 < blocks_in_row;
    float next_sum_of_squares = 0;
    uint32_t q2[16] = {};
    float scales[8];
    float max_scale = 0;
    for (int ib = 0; ib < 8; ++ib) {
      if (has_next) next_sum_of_squares = add_squares(xbl + kBlock + 32 * ib, 32, next_sum_of_squares);
      const float* xb = xbl + 32 * ib;
      const float* qw = quant_weights + kBlock * ibl + 32 * ib;
      imatrix_weights(xb, qw, sigma2, 32, g.weight);
      prepare_group(xb, 32, true, g);
      scales[ib] = 0;
      if (group_max(g) < ggml_search::kGroupMaxEps) continue;
      const std::optional<float> fitted = fit_group_xxs(t, kernels, g, levels);
      if (!fitted) continue;
      float scale = *fitted;
      if (scale < 0) {           // never seen; ggml flips the scale and the signs with it
        scale = -scale;
        for (int k = 0; k < 4; ++k) g.signs[k] = uint8_t(~g.signs[k] & 127);
      }
      for (int k = 0; k < 4; ++k) {
        q2[2 * ib] |= uint32_t(grid_index_of(t, levels + kSub * k)) << (8 * k);
        q2[2 * ib + 1] |= uint32_t(g.signs[k]) << (7 * k);
      }
      scales[ib] = scale;
      max_scale = ggml_max(max_scale, scale);
    }
    sum_of_squares = next_sum_of_squares;
    BlockIq2Xxs& b = y[ibl];
    b.d = 0;
    if (!max_scale) {
      std::memset(b.qs, 0, sizeof b.qs);
      continue;
    }
    const float d = max_scale / 31;
    b.d = f32_to_f16(d);
    const float id = 1 / d;
    for (int ib = 0; ib < 8; ++ib) q2[2 * ib + 1] |= uint32_t(scale_code(id, scales[ib])) << 28;
    std::memcpy(b.qs, q2, sizeof b.qs);
  }
}

namespace {

// iq2_xs and iq2_s share the search; they differ in the weights without an imatrix (iq2_s only), the
// sign rule (7 bits with parity vs 8 bits), the zero threshold and how d is stored.
struct Xs16Options {
  bool even_parity;      // 7 sign bits (iq2_xs) or 8 (iq2_s)
  bool doubled_sigma2;   // sigma2 = 2 * mean x^2 (iq2_s) or mean x^2 (iq2_xs)
  float group_max_eps;
  bool all_in_one;       // choose_trial's all_trials kernel
};

// Fits the 16 groups of one block: grid indices, signs, float scales. Returns the largest scale.
float fit_block_16(const SearchTables& t, const iq2::SearchKernels& kernels, const float* xbl, const float* qw,
                   Xs16Options options, uint16_t grid_index[32], uint8_t signs[32], float scales[16]) {
  const float sum_x2 = block_sum_of_squares(xbl);
  const float sigma2 = options.doubled_sigma2 ? 2 * sum_x2 / float(kBlock) : sum_x2 / float(kBlock);
  Group g;
  int8_t levels[16];
  float max_scale = 0;
  for (int ib = 0; ib < 16; ++ib) {
    const float* xb = xbl + 16 * ib;
    if (qw) {
      imatrix_weights(xb, qw + 16 * ib, sigma2, 16, g.weight);
    } else {
      for (int i = 0; i < 16; ++i) g.weight[i] = 0.25f * sigma2 + xb[i] * xb[i];
    }
    prepare_group(xb, 16, options.even_parity, g);
    scales[ib] = 0;
    const float max = group_max(g);
    if (max < options.group_max_eps) continue;  // indices and signs stay 0
    float scale = fit_group_16(t, kernels, g, max, options.all_in_one, levels);
    if (scale < 0) {  // never seen; ggml flips the scale and the signs with it
      scale = -scale;
      for (int k = 0; k < 2; ++k) g.signs[k] = options.even_parity ? uint8_t(~g.signs[k] & 127) : uint8_t(~g.signs[k]);
    }
    for (int k = 0; k < 2; ++k) {
      grid_index[2 * ib + k] = uint16_t(grid_index_of(t, levels + kSub * k));
      signs[2 * ib + k] = g.signs[k];
    }
    scales[ib] = scale;
    max_scale = ggml_max(max_scale, scale);
  }
  return max_scale;
}

}  // namespace

void quantize_row_iq2_xs(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq2_xs", n, kBlock);
  require_weights("iq2_xs", quant_weights);
  const SearchTables& t = iq2::search_tables(iq2::Grid::Xs);
  const iq2::SearchKernels& kernels = iq2::search_kernels(target);
  auto* y = static_cast<BlockIq2Xs*>(blocks);
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    uint16_t grid_index[32] = {};
    uint8_t signs[32] = {};
    float scales[16];
    const float max_scale = fit_block_16(t, kernels, x + kBlock * ibl, quant_weights + kBlock * ibl,
                                         {.even_parity = true, .doubled_sigma2 = false, .group_max_eps = ggml_search::kGroupMaxEps, .all_in_one = false},
                                         grid_index, signs, scales);
    BlockIq2Xs& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    if (!max_scale) continue;
    const float d = max_scale / 31;
    b.d = f32_to_f16(d);
    const float id = 1 / d;
    for (int i = 0; i < 32; ++i) b.qs[i] = uint16_t(grid_index[i] | (signs[i] << 9));
    for (int ib = 0; ib < 16; ++ib) b.scales[ib / 2] |= uint8_t(scale_code(id, scales[ib]) << (4 * (ib % 2)));
  }
}

void quantize_row_iq2_s(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq2_s", n, kBlock);
  const SearchTables& t = iq2::search_tables(iq2::Grid::S);
  const iq2::SearchKernels& kernels = iq2::search_kernels(target);
  auto* y = static_cast<BlockIq2S*>(blocks);
  for (int64_t ibl = 0; ibl < n / kBlock; ++ibl) {
    uint16_t grid_index[32] = {};
    uint8_t signs[32] = {};
    float scales[16];
    const float max_scale = fit_block_16(t, kernels, x + kBlock * ibl,
                                         quant_weights ? quant_weights + kBlock * ibl : nullptr,
                                         {.even_parity = false, .doubled_sigma2 = true, .group_max_eps = kIq2sGroupMaxEps, .all_in_one = true},
                                         grid_index, signs, scales);
    BlockIq2S& b = y[ibl];
    std::memset(&b, 0, sizeof b);
    // ggml writes indices and signs even when the block's scales are all zero (they are then all zero).
    for (int i = 0; i < 32; ++i) {
      b.qs[i] = uint8_t(grid_index[i] & 255);
      b.qh[i / 4] |= uint8_t((grid_index[i] >> 8) << (2 * (i % 4)));
      b.qs[32 + i] = signs[i];
    }
    if (!max_scale) continue;
    const float d = max_scale / 31;
    b.d = f32_to_f16(d * 0.9875f);  // ggml stores d slightly shrunk, but codes the scales against d itself
    const float id = 1 / d;
    for (int ib = 0; ib < 16; ++ib) b.scales[ib / 2] |= uint8_t(scale_code(id, scales[ib]) << (4 * (ib % 2)));
  }
}

// ---- dequantizers: value = d * (0.5 + s) * 0.25 * magnitude, negated where the sign bit is set
// (the rules of iq2:: in lowbit/formats/ggml_iq2.h, which the CUDA kernels call too) ----

void dequantize_row_iq2_xxs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq2_xxs", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq2_xxs(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq2Xxs*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      uint32_t word[2];
      std::memcpy(word, b[i].qs + 4 * ib, sizeof word);
      for (int l = 0; l < 4; ++l)
        iq2::decode_xxs_subgroup(iq2::kIq2xxsGrid.data(), d, (word[0] >> (8 * l)) & 255, word[1], l, y + kSub * l);
    }
  }
}

void dequantize_row_iq2_xs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq2_xs", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq2_xs(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq2Xs*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      for (int l = 0; l < 4; ++l)
        iq2::decode_xs_subgroup(iq2::kIq2xsGrid.data(), d, b[i].qs[4 * ib + l], b[i].scales[ib], l, y + kSub * l);
    }
  }
}

void dequantize_row_iq2_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq2_s", n, kBlock);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq2_s(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq2S*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < 8; ++ib, y += 32) {
      for (int l = 0; l < 4; ++l)
        iq2::decode_s_subgroup(iq2::kIq2sGrid.data(), d, b[i].qs[4 * ib + l], b[i].qs[32 + 4 * ib + l], b[i].qh[ib],
                               b[i].scales[ib], l, y + kSub * l);
    }
  }
}

}  // namespace lowbit::ggml
