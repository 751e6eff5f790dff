// AVX-512 "one group per lane" kernels for the ggml scale searches: up to 16 sub-blocks (or legacy
// blocks) searched at once, sub-block g in lane g. Inside a lane every operation of the one-group
// function (ggml_kquants_search.cpp) happens in the same order on the same floats: the loop over values
// stays sequential, the candidate scales are tried in ggml's order, and a candidate's win updates only
// its lane (masked moves). So each lane gives ggml's bits, and, unlike the candidate-per-lane batches,
// a search whose next step depends on the last winner (search_scale_and_min) never evaluates twice.
//
// No fused multiply-add may appear (ggml rounds every product): contraction is off for this file, as
// in ggml_kquants_search_avx512.cpp.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12: _mm512_undefined_* inside intrinsics
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/simd_kernels.h"

#include <algorithm>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_GGML_AVX512_LANES 1
#endif

namespace lowbit::ggml_search {

#if LOWBIT_GGML_AVX512_LANES
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f")))

constexpr int kMaxValues = 32;  // values per group

// ggml's nearest_int per lane: add 1.5*2^23 and read the integer from the mantissa bits.
LOWBIT_AVX512 inline __m512i round_nearest_even16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
  return _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
}

LOWBIT_AVX512 inline __m512i clamp16(__m512i v, __m512i lo, __m512i hi) {
  return _mm512_max_epi32(lo, _mm512_min_epi32(hi, v));
}

// In-register transpose of a 16x16 float matrix: row k of the result is column k of the input.
// Pairs are interleaved (unpack), then quads (shuffle_ps), then 128-bit lanes (shuffle_f32x4) twice.
LOWBIT_AVX512 inline void transpose16x16(__m512* rows) {
  __m512 pairs[16], quads[16], halves[16];
  for (int k = 0; k < 8; ++k) {
    pairs[2 * k] = _mm512_unpacklo_ps(rows[2 * k], rows[2 * k + 1]);
    pairs[2 * k + 1] = _mm512_unpackhi_ps(rows[2 * k], rows[2 * k + 1]);
  }
  for (int k = 0; k < 4; ++k) {
    quads[4 * k + 0] = _mm512_shuffle_ps(pairs[4 * k], pairs[4 * k + 2], 0x44);
    quads[4 * k + 1] = _mm512_shuffle_ps(pairs[4 * k], pairs[4 * k + 2], 0xEE);
    quads[4 * k + 2] = _mm512_shuffle_ps(pairs[4 * k + 1], pairs[4 * k + 3], 0x44);
    quads[4 * k + 3] = _mm512_shuffle_ps(pairs[4 * k + 1], pairs[4 * k + 3], 0xEE);
  }
  for (int k = 0; k < 2; ++k) {
    for (int j = 0; j < 4; ++j) {
      halves[8 * k + j] = _mm512_shuffle_f32x4(quads[8 * k + j], quads[8 * k + 4 + j], 0x88);
      halves[8 * k + 4 + j] = _mm512_shuffle_f32x4(quads[8 * k + j], quads[8 * k + 4 + j], 0xDD);
    }
  }
  for (int j = 0; j < 8; ++j) {
    rows[j] = _mm512_shuffle_f32x4(halves[j], halves[8 + j], 0x88);
    rows[8 + j] = _mm512_shuffle_f32x4(halves[j], halves[8 + j], 0xDD);
  }
}

// Value i of every group in one vector: out[i] lane g = x[n*g + i]; lanes >= count read 0. n is 16 or 32.
// (A transpose through shuffles: gathers are slow on CPUs with the Gather Data Sampling mitigation.)
LOWBIT_AVX512 void load_transposed(int count, int n, const float* x, __m512* out) {
  for (int column = 0; column < n; column += 16) {
    __m512* rows = out + column;
    for (int g = 0; g < 16; ++g) rows[g] = g < count ? _mm512_loadu_ps(x + n * g + column) : _mm512_setzero_ps();
    transpose16x16(rows);
  }
}

// The inverse for integer codes: codes[n*g + i] = lanes[i] lane g, for g < count.
template <class Code>
LOWBIT_AVX512 void store_transposed(int count, int n, const __m512i* lanes, Code* codes) {
  static_assert(sizeof(Code) == 1);
  for (int column = 0; column < n; column += 16) {
    __m512 rows[16];
    for (int i = 0; i < 16; ++i) rows[i] = _mm512_castsi512_ps(lanes[column + i]);
    transpose16x16(rows);
    for (int g = 0; g < count; ++g)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + n * g + column),
                       _mm512_cvtepi32_epi8(_mm512_castps_si512(rows[g])));
  }
}

LOWBIT_AVX512 void store_lanes(int count, __m512 v, float* out) {
  _mm512_mask_storeu_ps(out, __mmask16((1u << count) - 1), v);
}

// ---- search_scale_and_min (make_qkx2_quants) ----

LOWBIT_AVX512 inline __m512 error16(__m512 diff, bool use_abs_error) {
  return use_abs_error ? _mm512_abs_ps(diff) : _mm512_mul_ps(diff, diff);
}

// -v with the sign bit flipped, so 0 becomes -0 as in C (0 - v would give +0).
LOWBIT_AVX512 inline __m512 negate16(__m512 v) {
  return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(int32_t(0x80000000u))));
}

LOWBIT_AVX512 void search_scale_and_min_lanes(int count, int n, int nmax, const float* x_groups,
                                              const float* w_groups, uint8_t* codes_out, float* scales_out,
                                              float* mins_out, float rmin, float rdelta, int nstep,
                                              bool use_abs_error) {
  __m512 x[kMaxValues], w[kMaxValues], codes[kMaxValues];
  load_transposed(count, n, x_groups, x);
  load_transposed(count, n, w_groups, w);
  __m512 min = x[0], max = x[0];
  __m512 sum_w = w[0];
  __m512 sum_x = _mm512_mul_ps(sum_w, x[0]);
  for (int i = 1; i < n; ++i) {
    min = _mm512_min_ps(x[i], min);  // x < min ? x : min, as ggml's if
    max = _mm512_max_ps(x[i], max);
    sum_w = _mm512_add_ps(sum_w, w[i]);
    sum_x = _mm512_add_ps(sum_x, _mm512_mul_ps(w[i], x[i]));
  }
  const __m512 zero = _mm512_setzero_ps();
  min = _mm512_mask_mov_ps(min, _mm512_cmp_ps_mask(min, zero, _CMP_GT_OQ), zero);
  // max == min: all codes 0, scale 0 (unused lanes are such groups too). Masked out of every win.
  const __mmask16 flat = _mm512_cmp_ps_mask(max, min, _CMP_EQ_OQ);
  const __m512i lo = _mm512_setzero_si512(), hi = _mm512_set1_epi32(nmax);

  __m512 iscale = _mm512_div_ps(_mm512_set1_ps(float(nmax)), _mm512_sub_ps(max, min));
  __m512 scale = _mm512_div_ps(_mm512_set1_ps(1.f), iscale);
  __m512 best_error = zero;
  for (int i = 0; i < n; ++i) {
    const __m512 l =
        _mm512_cvtepi32_ps(clamp16(round_nearest_even16(_mm512_mul_ps(iscale, _mm512_sub_ps(x[i], min))), lo, hi));
    const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(scale, l), min), x[i]);
    best_error = _mm512_add_ps(best_error, _mm512_mul_ps(w[i], error16(diff, use_abs_error)));
  }
  // The codes are re-derived at the end from the winning step's iscale and the min it ran with.
  __m512 chosen_iscale = iscale, chosen_min = min;
  for (int step = 0; step <= nstep && nstep >= 1; ++step) {
    const __m512 step_iscale =
        _mm512_div_ps(_mm512_set1_ps(rmin + rdelta * float(step) + float(nmax)), _mm512_sub_ps(max, min));
    __m512 sum_l = zero, sum_l2 = zero, sum_xl = zero;
    for (int i = 0; i < n; ++i) {
      const __m512 l = _mm512_cvtepi32_ps(
          clamp16(round_nearest_even16(_mm512_mul_ps(step_iscale, _mm512_sub_ps(x[i], min))), lo, hi));
      codes[i] = l;
      const __m512 wl = _mm512_mul_ps(w[i], l);
      sum_l = _mm512_add_ps(sum_l, wl);
      sum_l2 = _mm512_add_ps(sum_l2, _mm512_mul_ps(wl, l));
      sum_xl = _mm512_add_ps(sum_xl, _mm512_mul_ps(wl, x[i]));
    }
    const __m512 det = _mm512_sub_ps(_mm512_mul_ps(sum_w, sum_l2), _mm512_mul_ps(sum_l, sum_l));
    __m512 this_scale = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_w, sum_xl), _mm512_mul_ps(sum_x, sum_l)), det);
    __m512 this_min = _mm512_div_ps(_mm512_sub_ps(_mm512_mul_ps(sum_l2, sum_x), _mm512_mul_ps(sum_l, sum_xl)), det);
    const __mmask16 positive = _mm512_cmp_ps_mask(this_min, zero, _CMP_GT_OQ);
    this_min = _mm512_mask_mov_ps(this_min, positive, zero);
    this_scale = _mm512_mask_mov_ps(this_scale, positive, _mm512_div_ps(sum_xl, sum_l2));
    __m512 error = zero;
    for (int i = 0; i < n; ++i) {
      const __m512 diff = _mm512_sub_ps(_mm512_add_ps(_mm512_mul_ps(this_scale, codes[i]), this_min), x[i]);
      error = _mm512_add_ps(error, _mm512_mul_ps(w[i], error16(diff, use_abs_error)));
    }
    const __mmask16 wins = _mm512_cmp_ps_mask(det, zero, _CMP_GT_OQ) &
                           _mm512_cmp_ps_mask(error, best_error, _CMP_LT_OQ) & __mmask16(~flat);
    best_error = _mm512_mask_mov_ps(best_error, wins, error);
    scale = _mm512_mask_mov_ps(scale, wins, this_scale);
    chosen_iscale = _mm512_mask_mov_ps(chosen_iscale, wins, step_iscale);
    chosen_min = _mm512_mask_mov_ps(chosen_min, wins, min);
    min = _mm512_mask_mov_ps(min, wins, this_min);
  }
  __m512i final_codes[kMaxValues];
  for (int i = 0; i < n; ++i)
    final_codes[i] = _mm512_maskz_mov_epi32(__mmask16(~flat), clamp16(round_nearest_even16(_mm512_mul_ps(
                                                                  chosen_iscale, _mm512_sub_ps(x[i], chosen_min))),
                                                              lo, hi));
  store_transposed(count, n, final_codes, codes_out);
  store_lanes(count, _mm512_maskz_mov_ps(__mmask16(~flat), scale), scales_out);
  store_lanes(count, negate16(min), mins_out);  // -min, as ggml's *the_min = -min
}

// ---- fit_signed_scale (make_qx_quants, rmse_type 1) ----

// Per lane, the value with the largest magnitude (sign kept, first one on ties) and that magnitude.
LOWBIT_AVX512 inline void signed_extremes(int n, const __m512* x, __m512& extreme, __m512& magnitude) {
  extreme = magnitude = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 ax = _mm512_abs_ps(x[i]);
    const __mmask16 larger = _mm512_cmp_ps_mask(ax, magnitude, _CMP_GT_OQ);
    magnitude = _mm512_mask_mov_ps(magnitude, larger, ax);
    extreme = _mm512_mask_mov_ps(extreme, larger, x[i]);
  }
}

// sum (w*x)*l and sum (w*l)*l over the codes l = clamp(round(iscale*x)) of one candidate, in order of i.
LOWBIT_AVX512 inline void signed_sums16(int n, const __m512* x, const __m512* w, const __m512* wx, __m512 iscale,
                                        __m512i lo, __m512i hi, __m512& sumlx, __m512& suml2) {
  sumlx = suml2 = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 l = _mm512_cvtepi32_ps(clamp16(round_nearest_even16(_mm512_mul_ps(iscale, x[i])), lo, hi));
    sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(wx[i], l));
    suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(w[i], l), l));
  }
}

LOWBIT_AVX512 void fit_signed_scale_lanes(int count, int n, int nmax, const float* x_groups, int8_t* codes_out,
                                          const float* w_groups, float* scales_out) {
  __m512 x[kMaxValues], w[kMaxValues], wx[kMaxValues];
  load_transposed(count, n, x_groups, x);
  if (w_groups) load_transposed(count, n, w_groups, w);
  for (int i = 0; i < n; ++i) {
    if (!w_groups) w[i] = _mm512_mul_ps(x[i], x[i]);
    wx[i] = _mm512_mul_ps(w[i], x[i]);
  }
  __m512 extreme, magnitude;
  signed_extremes(n, x, extreme, magnitude);
  const __mmask16 all_zero = _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(kGroupMaxEps), _CMP_LT_OQ);
  const __m512i lo = _mm512_set1_epi32(-nmax), hi = _mm512_set1_epi32(nmax - 1);
  const __m512 zero = _mm512_setzero_ps();

  // Candidate 0 maps the extreme to -nmax: scale = suml2 ? sumlx/suml2 : 0, best = scale*sumlx.
  __m512 chosen_iscale = _mm512_div_ps(_mm512_set1_ps(float(-nmax)), extreme);
  __m512 sumlx, suml2;
  signed_sums16(n, x, w, wx, chosen_iscale, lo, hi, sumlx, suml2);
  __m512 scale = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(suml2, zero, _CMP_NEQ_UQ), sumlx, suml2);
  __m512 best = _mm512_mul_ps(scale, sumlx);
  // Then (nmax + 0.1*step)/extreme for step -9..9, step != 0; a larger sumlx^2/suml2 wins.
  for (int step = -9; step <= 9; ++step) {
    if (step == 0) continue;
    const __m512 iscale = _mm512_div_ps(_mm512_set1_ps(-(float(nmax) + 0.1f * float(step))), extreme);
    signed_sums16(n, x, w, wx, iscale, lo, hi, sumlx, suml2);
    const __mmask16 wins = _mm512_cmp_ps_mask(suml2, zero, _CMP_GT_OQ) &
                           _mm512_cmp_ps_mask(_mm512_mul_ps(sumlx, sumlx), _mm512_mul_ps(best, suml2), _CMP_GT_OQ);
    scale = _mm512_mask_div_ps(scale, wins, sumlx, suml2);
    best = _mm512_mask_mov_ps(best, wins, _mm512_mul_ps(scale, sumlx));
    chosen_iscale = _mm512_mask_mov_ps(chosen_iscale, wins, iscale);
  }
  __m512i codes[kMaxValues];
  const __m512i offset = _mm512_set1_epi32(nmax);
  for (int i = 0; i < n; ++i)
    codes[i] = _mm512_maskz_add_epi32(__mmask16(~all_zero), offset,
                                      clamp16(round_nearest_even16(_mm512_mul_ps(chosen_iscale, x[i])), lo, hi));
  store_transposed(count, n, codes, codes_out);
  store_lanes(count, _mm512_maskz_mov_ps(__mmask16(~all_zero), scale), scales_out);
}

// ---- fit_signed_scale_refined (make_q3_quants with do_rmse) ----

// The descent of up to kRefinedGroupsPerCall groups of 16 values, one group per lane. Row i of each
// array holds value (or code) i of every group; lanes 16m..16m+15 form "set" m, one vector. Rows have
// 16 spare lanes so a compacted set may be stored past the last one.
constexpr int kRefineValues = 16;
constexpr int kRefineLanes = kRefinedGroupsPerCall;
constexpr int kRefineSets = kRefineLanes / kLanes;

struct RefineState {
  alignas(64) float x[kRefineValues][kRefineLanes + kLanes];
  alignas(64) float w[kRefineValues][kRefineLanes + kLanes];   // x^2
  alignas(64) float wx[kRefineValues][kRefineLanes + kLanes];  // x^2 * x
  alignas(64) float codes[kRefineValues][kRefineLanes + kLanes];
  alignas(64) float sumlx[kRefineLanes + kLanes];
  alignas(64) float suml2[kRefineLanes + kLanes];
  __mmask16 active[kRefineSets], changed[kRefineSets];
};

// Set m from the groups: initial codes from the scale that maps the extreme to -nmax, and their sums.
LOWBIT_AVX512 void refine_start(int count, int m, int nmax, const float* x_groups, RefineState& s,
                                __mmask16& all_zero) {
  __m512 x[kRefineValues];
  load_transposed(count, kRefineValues, x_groups, x);
  __m512 extreme, magnitude;
  signed_extremes(kRefineValues, x, extreme, magnitude);
  all_zero = _mm512_cmp_ps_mask(magnitude, _mm512_set1_ps(kGroupMaxEps), _CMP_LT_OQ);
  const __m512i lo = _mm512_set1_epi32(-nmax), hi = _mm512_set1_epi32(nmax - 1);
  const __m512 iscale = _mm512_div_ps(_mm512_set1_ps(float(-nmax)), extreme);
  __m512 sumlx = _mm512_setzero_ps(), suml2 = _mm512_setzero_ps();
  const int at = kLanes * m;
  for (int i = 0; i < kRefineValues; ++i) {
    const __m512 l = _mm512_cvtepi32_ps(clamp16(round_nearest_even16(_mm512_mul_ps(iscale, x[i])), lo, hi));
    const __m512 w = _mm512_mul_ps(x[i], x[i]);
    const __m512 wx = _mm512_mul_ps(w, x[i]);
    sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(wx, l));                     // (w*x)*l
    suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(w, l), l));  // (w*l)*l
    _mm512_store_ps(s.x[i] + at, x[i]);
    _mm512_store_ps(s.w[i] + at, w);
    _mm512_store_ps(s.wx[i] + at, wx);
    _mm512_store_ps(s.codes[i] + at, l);
  }
  _mm512_store_ps(s.sumlx + at, sumlx);
  _mm512_store_ps(s.suml2 + at, suml2);
  s.active[m] = __mmask16(~all_zero & ((1u << count) - 1));
}

// Moves code i of every active lane of set m to its best value given the others, where the fit improves.
LOWBIT_AVX512 inline void refine_value(int i, int m, __m512i lo, __m512i hi, RefineState& s) {
  const int at = kLanes * m;
  const __m512 zero = _mm512_setzero_ps();
  const __m512 x = _mm512_load_ps(s.x[i] + at), w = _mm512_load_ps(s.w[i] + at), wx = _mm512_load_ps(s.wx[i] + at);
  const __m512 code = _mm512_load_ps(s.codes[i] + at);
  const __m512 sumlx = _mm512_load_ps(s.sumlx + at), suml2 = _mm512_load_ps(s.suml2 + at);
  __m512 slx = _mm512_sub_ps(sumlx, _mm512_mul_ps(wx, code));
  const __mmask16 positive = _mm512_cmp_ps_mask(slx, zero, _CMP_GT_OQ) & s.active[m];
  __m512 sl2 = _mm512_sub_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(w, code), code));
  const __m512 new_l =
      _mm512_cvtepi32_ps(clamp16(round_nearest_even16(_mm512_div_ps(_mm512_mul_ps(x, sl2), slx)), lo, hi));
  const __mmask16 moved = _mm512_cmp_ps_mask(new_l, code, _CMP_NEQ_UQ) & positive;
  slx = _mm512_add_ps(slx, _mm512_mul_ps(wx, new_l));
  sl2 = _mm512_add_ps(sl2, _mm512_mul_ps(_mm512_mul_ps(w, new_l), new_l));
  const __mmask16 better = moved & _mm512_cmp_ps_mask(sl2, zero, _CMP_GT_OQ) &
                           _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_mul_ps(slx, slx), suml2),
                                              _mm512_mul_ps(_mm512_mul_ps(sumlx, sumlx), sl2), _CMP_GT_OQ);
  _mm512_mask_store_ps(s.codes[i] + at, better, new_l);
  _mm512_mask_store_ps(s.sumlx + at, better, slx);
  _mm512_mask_store_ps(s.suml2 + at, better, sl2);
  s.changed[m] |= better;
}

// Passes [first_pass, end_pass) over sets [0, sets). A lane stops after a pass that changed nothing
// (ggml's break, per lane); sets with no active lane are skipped. The sets advance value by value side
// by side: each lane's descent is one long dependency chain (subtract, divide, round, compare, select;
// about 60 cycles per value), which the core overlaps across sets.
LOWBIT_AVX512 void refine_passes(RefineState& s, int sets, int nmax, int first_pass, int end_pass) {
  const __m512i lo = _mm512_set1_epi32(-nmax), hi = _mm512_set1_epi32(nmax - 1);
  for (int pass = first_pass; pass < end_pass; ++pass) {
    int live[kRefineSets], live_count = 0;
    for (int m = 0; m < sets; ++m) {
      s.changed[m] = 0;
      if (s.active[m]) live[live_count++] = m;
    }
    if (!live_count) return;
    for (int i = 0; i < kRefineValues; ++i)
      for (int t = 0; t < live_count; ++t) refine_value(i, live[t], lo, hi, s);
    for (int m = 0; m < sets; ++m) s.active[m] &= s.changed[m];
  }
}

// Pointers to lane 0 of the rows a pass changes: the codes and the two sums, then (with_inputs) x.
// (w and wx follow from x.) Returns how many.
constexpr int kMaxRefineRows = 2 * kRefineValues + 2;

inline int refine_rows(RefineState& s, bool with_inputs, float** rows) {
  int r = 0;
  for (int i = 0; i < kRefineValues; ++i) rows[r++] = s.codes[i];
  rows[r++] = s.sumlx;
  rows[r++] = s.suml2;
  if (with_inputs)
    for (int i = 0; i < kRefineValues; ++i) rows[r++] = s.x[i];
  return r;
}

// Packs the active lanes of `from` (sets [0, sets)) densely into `to`, in order; returns their number.
// After the first pass few lanes are still active (about 1 in 6 on LLM-like weights), so the later
// passes run on a few full vectors instead of many nearly empty ones.
LOWBIT_AVX512 int compact_active(RefineState& from, int sets, RefineState& to) {
  float* from_rows[kMaxRefineRows];
  float* to_rows[kMaxRefineRows];
  const int rows = refine_rows(from, true, from_rows);
  refine_rows(to, true, to_rows);
  int offset = 0;
  for (int m = 0; m < sets; ++m) {
    const __mmask16 mask = from.active[m];
    if (!mask) continue;
    for (int r = 0; r < rows; ++r)
      _mm512_storeu_ps(to_rows[r] + offset, _mm512_maskz_compress_ps(mask, _mm512_load_ps(from_rows[r] + kLanes * m)));
    offset += __builtin_popcount(mask);
  }
  for (int m = 0; m * kLanes < offset; ++m) {
    to.active[m] = __mmask16((1u << std::min(kLanes, offset - kLanes * m)) - 1);
    for (int i = 0; i < kRefineValues; ++i) {
      const __m512 x = _mm512_load_ps(to.x[i] + kLanes * m);
      const __m512 w = _mm512_mul_ps(x, x);  // as refine_start computed them
      _mm512_store_ps(to.w[i] + kLanes * m, w);
      _mm512_store_ps(to.wx[i] + kLanes * m, _mm512_mul_ps(w, x));
    }
  }
  return offset;
}

// The inverse of compact_active for the rows a pass changes: each packed lane back to its place.
// `packed_from` are the active masks compact_active read.
LOWBIT_AVX512 void expand_back(RefineState& packed, const __mmask16* packed_from, int sets, RefineState& to) {
  float* packed_rows[kMaxRefineRows];
  float* to_rows[kMaxRefineRows];
  const int rows = refine_rows(packed, false, packed_rows);
  refine_rows(to, false, to_rows);
  int offset = 0;
  for (int m = 0; m < sets; ++m) {
    const __mmask16 mask = packed_from[m];
    if (!mask) continue;
    for (int r = 0; r < rows; ++r) {
      float* lanes = to_rows[r] + kLanes * m;
      const __m512 packed_lanes = _mm512_loadu_ps(packed_rows[r] + offset);
      _mm512_store_ps(lanes, _mm512_mask_expand_ps(_mm512_load_ps(lanes), mask, packed_lanes));
    }
    offset += __builtin_popcount(mask);
  }
}

// Codes (biased by nmax) and scale of set m; all-zero groups get codes 0 and scale 0.
LOWBIT_AVX512 void refine_finish(int count, int m, int nmax, const RefineState& s, __mmask16 all_zero,
                                 int8_t* codes_out, float* scales_out) {
  const int at = kLanes * m;
  __m512i out[kRefineValues];
  const __m512i offset = _mm512_set1_epi32(nmax);
  for (int i = 0; i < kRefineValues; ++i)
    out[i] = _mm512_maskz_add_epi32(__mmask16(~all_zero), offset, _mm512_cvtps_epi32(_mm512_load_ps(s.codes[i] + at)));
  store_transposed(count, kRefineValues, out, codes_out);
  const __m512 sumlx = _mm512_load_ps(s.sumlx + at), suml2 = _mm512_load_ps(s.suml2 + at);
  const __m512 scale = _mm512_maskz_div_ps(_mm512_cmp_ps_mask(suml2, _mm512_setzero_ps(), _CMP_GT_OQ), sumlx, suml2);
  store_lanes(count, _mm512_maskz_mov_ps(__mmask16(~all_zero), scale), scales_out);
}

// Up to kRefinedGroupsPerCall groups of 16 values: the first pass on every group, then the later
// passes on the groups still changing, packed together.
LOWBIT_AVX512 void fit_signed_scale_refined_lanes(int count, int n, int nmax, const float* x_groups,
                                                  int8_t* codes_out, float* scales_out) {
  if (n != kRefineValues) __builtin_trap();  // only q3_K's 16-value sub-blocks come here
  thread_local RefineState all, packed;  // 2 x 70 KB: more than a stack frame should hold
  const int sets = (count + kLanes - 1) / kLanes;
  __mmask16 all_zero[kRefineSets];
  for (int m = 0; m < sets; ++m) {
    // The input streams from memory: ask for the next set's 1 KB while this one is worked on.
    const float* next = x_groups + kRefineValues * kLanes * (m + 1);
    if (m + 1 < sets)
      for (int line = 0; line < kRefineValues * kLanes; line += 16)
        _mm_prefetch(reinterpret_cast<const char*>(next + line), _MM_HINT_T0);
    refine_start(std::min(kLanes, count - kLanes * m), m, nmax, x_groups + kRefineValues * kLanes * m, all,
                 all_zero[m]);
  }
  refine_passes(all, sets, nmax, 0, 1);
  __mmask16 still_active[kRefineSets];
  for (int m = 0; m < sets; ++m) still_active[m] = all.active[m];
  const int packed_lanes = compact_active(all, sets, packed);
  if (packed_lanes) {
    refine_passes(packed, (packed_lanes + kLanes - 1) / kLanes, nmax, 1, 5);
    expand_back(packed, still_active, sets, all);
  }
  for (int m = 0; m < sets; ++m)
    refine_finish(std::min(kLanes, count - kLanes * m), m, nmax, all, all_zero[m],
                  codes_out + kRefineValues * kLanes * m, scales_out + kLanes * m);
}

// ---- requantize: 16 values of one group per vector, each divided by its group's divisor ----

LOWBIT_AVX512 void requantize_lanes(int count, int n, const float* x, const float* offsets, const float* divisors,
                                    int lo, int hi, int bias, uint8_t* codes) {
  const __m512i low = _mm512_set1_epi32(lo), high = _mm512_set1_epi32(hi), offset = _mm512_set1_epi32(bias);
  for (int g = 0; g < count; ++g) {
    if (!divisors[g]) continue;
    const __m512 d = _mm512_set1_ps(divisors[g]);
    for (int i = n * g; i < n * (g + 1); i += 16) {
      __m512 v = _mm512_loadu_ps(x + i);
      if (offsets) v = _mm512_add_ps(v, _mm512_set1_ps(offsets[g]));
      const __m512i l = _mm512_add_epi32(offset, clamp16(round_nearest_even16(_mm512_div_ps(v, d)), low, high));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), _mm512_cvtepi32_epi8(l));
    }
  }
}

constexpr LaneKernels kAvx512LaneKernels = {search_scale_and_min_lanes, fit_signed_scale_lanes,
                                            fit_signed_scale_refined_lanes, requantize_lanes};

}  // namespace

const LaneKernels* avx512_lane_kernels() { return &kAvx512LaneKernels; }

#else

const LaneKernels* avx512_lane_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml_search
