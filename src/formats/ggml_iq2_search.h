// The inner steps of the iq2 quantizers' grid search, as swappable kernels: rounding a group's magnitudes
// at every trial scale and summing every trial's fit, rounding at one scale, and finding, at several trial
// scales at once, the nearest grid point among a key's neighbours. The portable kernels (ggml_iq2_search.cpp)
// follow ggml-quants.c; the CPU backend's (kernels/cpu/ggml_iq2_search_avx512.cpp on the avx512 target,
// ggml_iq2_search_avx2.cpp, 8 scales per vector, on the avx2 target) give the same bits. An AVX2 search
// with 8 candidates per vector instead was tried: on AMD EPYC it was no faster.
#pragma once

#include <cstdint>

#include "formats/ggml_iq2_grids.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml::iq2 {

// The most trial scales a group tries (iq2_xs, iq2_s: 19), so the most one search serves.
inline constexpr int kMaxScales = 19;
// Per-trial arrays hold this many entries (whole vectors of 16 lanes); inverse scales past the trials
// repeat the last one.
inline constexpr int kTrialStride = 32;

struct SearchKernels {
  // Every trial at once (ggml_iq2_trials.h): keys[k * kTrialStride + t] of subgroup k (value j's level l
  // at bits 2j) at inverse scale ids[t], t < count; and, from each trial's resolved keys (laid out the
  // same), its weighted sums sumqx[t] = sum (w*x)*q, sumq2[t] = sum (w*q)*q, q = 2l+1, over the n values in order.
  void (*round_trials)(const float* xval, int n, const float* ids, int count, uint32_t* keys);
  void (*trial_sums)(const float* weight, const float* xval, int n, const uint32_t* keys, int count, float* sumqx,
                     float* sumq2);
  // Levels l = clamp(nearest_int(0.5 * (id * xval[i] - 1)), 0, 2) of n values (n = 16 or 32), and the
  // key (level of value j at bits 2j) of each 8-value subgroup.
  void (*round_levels)(const float* xval, int n, float id, int8_t* levels, uint32_t* keys);
  // ggml's iq2_find_best_neighbour at each of `count` scales (count <= kMaxScales): over a list's
  // candidates (lane-major levels, SearchTables::lane_levels), the position best[m] of the first with the
  // least sum over j of waux[j] * diff * diff, diff = scales[m] * (2l+1) - xval[j] (each product rounded,
  // summed in order of j); -1 if none is below FLT_MAX. That sum's term for value j depends only on j and
  // the candidate's level there, so each kernel computes the 8 x 3 terms of a scale once and a candidate
  // costs 8 additions of looked-up terms, in ggml's order.
  void (*nearest_at_scales)(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                            const float* scales, int count_scales, int* best);
  // All of the above for a whole group in one pass (optional: null in kernels without it): at each of
  // `count` trials (inverse scale ids[t], scale scales[t]; both padded to kTrialStride with the last
  // trial), each subgroup's rounding, replaced where it is off the grid by its nearest neighbour at the
  // trial's scale, as keys[k * kTrialStride + t]; bit t of off_grid[k] set where subgroup k's rounding
  // was off the grid; and the weighted sums of the resolved levels. Returns 0, or kNoGridPoint when some
  // search found no candidate below FLT_MAX (non-finite values), kEmptyList when a key had no list.
  int (*all_trials)(const SearchTables& t, const float* xval, const float* waux, const float* weight, int n,
                    const float* ids, const float* scales, int count, uint32_t* keys, uint32_t* off_grid,
                    float* sumqx, float* sumq2);
  // ggml's iq2_find_best_neighbour at one scale over `count` candidates given by their keys (a list's
  // run of SearchTables::neighbour_keys): the position of the first with the least distance, or -1 if
  // none is below FLT_MAX. For the final re-fit, which searches a list the trials have just searched:
  // its keys are in the cache, where its lane-major levels are not.
  int (*nearest_key_at_scale)(const uint32_t* candidate_keys, int count, const float* xval, const float* waux,
                              float scale);
  // The same search over a list's lane-major levels (as nearest_at_scales at one scale): for the re-fit
  // of iq2_xxs and iq2_xs, whose trials searched those levels, not the keys.
  int (*nearest_lanes_at_scale)(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                float scale);
  // iq2_xxs's first fit: ggml_search::fit_unsigned_scale (ggml's make_qp_quants), the same bits.
  float (*fit_unsigned_scale)(int n, int nmax, const float* x, uint8_t* codes, const float* weights);
};
inline constexpr int kNoGridPoint = 1;
inline constexpr int kEmptyList = 2;

// The kernels of `target` (kernels/cpu/cpu_kernels.h, which refuses a target this CPU lacks), else the
// portable ones.
const SearchKernels& search_kernels(cpu::CpuTarget target);
const SearchKernels& portable_search_kernels();

}  // namespace lowbit::ggml::iq2
