// AVX2 searches of the iq1 quantizers, for CPUs without AVX-512: the AVX-512 kernels' methods
// (ggml_iq1_search_avx512.cpp) with 8 lanes per vector. The split search of iq1_s: 8 values of i2 per
// vector, one split per lane, in two passes (ggml_iq1_split_candidates.h), or as fallback the full scan
// (a vector of splits where no lane beats the best so far changes nothing in ggml's sequential scan and
// is skipped; otherwise its lanes are replayed in ggml's order). Sums that decide are computed exactly
// as the scalar loop (ggml's): every product rounded before it is added, in the same order, so no FMA
// may appear and contraction is off for this file. The neighbour search: 8 candidates per vector.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>
#include <cmath>

#include "formats/ggml_iq1_search.h"
#include "kernels/cpu/ggml_iq1_split_candidates.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx2_lanes.h"
#define LOWBIT_IQ1_AVX2 1
#endif

namespace lowbit::ggml::iq1 {

#if LOWBIT_IQ1_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

constexpr int kLanes = 8;

struct LaneSums {
  __m256 sumqx, sumq2;
};

// Sums of the 8 splits (i1, i2 + lane) for shifted levels v: as the scalar
// (sx[i1] - sx[0])*v0 + (sx[i2] - sx[i1])*v1 + (sx[32] - sx[i2])*v2, same for the weights with v^2.
LOWBIT_AVX2 inline LaneSums split_sums(const float* v, float low_x, float low_w, __m256 x_i1, __m256 w_i1, __m256 x_end,
                                       __m256 w_end, __m256 x_i2, __m256 w_i2) {
  const __m256 v1 = _mm256_set1_ps(v[1]), v2 = _mm256_set1_ps(v[2]);
  const __m256 qx_low = _mm256_set1_ps(low_x * v[0]);
  const __m256 q2_low = _mm256_set1_ps(low_w * v[0] * v[0]);
  const __m256 qx = _mm256_add_ps(_mm256_add_ps(qx_low, _mm256_mul_ps(_mm256_sub_ps(x_i2, x_i1), v1)),
                                  _mm256_mul_ps(_mm256_sub_ps(x_end, x_i2), v2));
  const __m256 q2 = _mm256_add_ps(_mm256_add_ps(q2_low, _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(w_i2, w_i1), v1), v1)),
                                  _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(w_end, w_i2), v2), v2));
  return {qx, q2};
}

// Lanes (bits) whose split would replace the best so far: sumq2 > 0 and sumqx^2 > best * sumq2.
LOWBIT_AVX2 inline unsigned winners(const LaneSums& s, float best) {
  const __m256 positive = _mm256_cmp_ps(s.sumq2, _mm256_setzero_ps(), _CMP_GT_OQ);
  const __m256 better = _mm256_cmp_ps(_mm256_mul_ps(s.sumqx, s.sumqx), _mm256_mul_ps(_mm256_set1_ps(best), s.sumq2),
                                      _CMP_GT_OQ);
  return unsigned(_mm256_movemask_ps(_mm256_and_ps(positive, better)));
}

// ggml's full scan, 8 splits per vector, a vector replayed wherever a lane could win: the fallback of
// best_split_avx2.
LOWBIT_AVX2 Split best_split_replay_avx2(const float* sumx, const float* sumw) {
  Split best;
  float best_score = -FLT_MAX;
  const __m256 x_end = _mm256_set1_ps(sumx[kSGroup]), w_end = _mm256_set1_ps(sumw[kSGroup]);
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    const float low_x = sumx[i1] - sumx[0], low_w = sumw[i1] - sumw[0];
    const __m256 x_i1 = _mm256_set1_ps(sumx[i1]), w_i1 = _mm256_set1_ps(sumw[i1]);
    for (int first = i1; first <= kSGroup; first += kLanes) {
      const int lanes = kSGroup + 1 - first < kLanes ? kSGroup + 1 - first : kLanes;
      const unsigned valid = (1u << lanes) - 1;
      // Lanes past i2 = 32 load nothing (the prefix sums end there).
      const __m256i load = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes), lane_index);
      const __m256 x_i2 = _mm256_maskload_ps(sumx + first, load), w_i2 = _mm256_maskload_ps(sumw + first, load);
      const LaneSums up = split_sums(kShiftedUp, low_x, low_w, x_i1, w_i1, x_end, w_end, x_i2, w_i2);
      const LaneSums down = split_sums(kShiftedDown, low_x, low_w, x_i1, w_i1, x_end, w_end, x_i2, w_i2);
      if (!((winners(up, best_score) | winners(down, best_score)) & valid)) continue;
      // Replay this vector's splits in ggml's order: i2 ascending, +1/8 before -1/8.
      alignas(32) float qx[2][kLanes], q2[2][kLanes];
      _mm256_store_ps(qx[0], up.sumqx);
      _mm256_store_ps(q2[0], up.sumq2);
      _mm256_store_ps(qx[1], down.sumqx);
      _mm256_store_ps(q2[1], down.sumq2);
      for (int lane = 0; lane < lanes; ++lane)
        for (int s = 0; s < 2; ++s)
          if (q2[s][lane] > 0 && qx[s][lane] * qx[s][lane] > best_score * q2[s][lane]) {
            best.scale = qx[s][lane] / q2[s][lane];
            best_score = best.scale * qx[s][lane];
            best.i1 = i1;
            best.i2 = first + lane;
            best.shift = s == 0 ? 1 : -1;
          }
    }
  }
  return best;
}

// ggml's split in two passes, as best_split_avx512 (ggml_iq1_split_candidates.h): every split's fit
// approximately (the reciprocal to 1.5 * 2^-12), its largest T; then ggml's choice among the splits whose
// fit reaches T (1 - 2^-7).
LOWBIT_AVX2 Split best_split_avx2(const float* sumx, const float* sumw) {
  constexpr int kPadded = 40;
  alignas(32) float x_at[kPadded] = {}, w_at[kPadded] = {};
  alignas(32) float end_x[2][kPadded] = {}, end_w[2][kPadded] = {};
  bool too_large = false;  // sums at 2^60 or beyond, or NaN: the full scan
  for (int i = 0; i <= kSGroup; ++i) {
    x_at[i] = sumx[i];
    w_at[i] = sumw[i];
    too_large |= !(std::fabs(sumx[i]) <= 0x1p60f && std::fabs(sumw[i]) <= 0x1p60f);
  }
  if (too_large) return best_split_replay_avx2(sumx, sumw);
  for (int s = 0; s < 2; ++s) {
    const float v2 = (s == 0 ? kShiftedUp : kShiftedDown)[2];
    for (int i = 0; i <= kSGroup; ++i) {
      end_x[s][i] = (sumx[kSGroup] - sumx[i]) * v2;
      end_w[s][i] = (sumw[kSGroup] - sumw[i]) * v2 * v2;
    }
  }
  constexpr int kVectors = 85;  // sum over i1 of ceil((33 - i1) / 8)
  alignas(32) float fits[kVectors][2][kLanes];
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 largest = _mm256_setzero_ps();
  int vector = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    const float low_x = sumx[i1] - sumx[0], low_w = sumw[i1] - sumw[0];
    const __m256 x_i1 = _mm256_set1_ps(sumx[i1]), w_i1 = _mm256_set1_ps(sumw[i1]);
    for (int first = i1; first <= kSGroup; first += kLanes, ++vector) {
      const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(kSGroup + 1 - first), lane_index));
      const __m256 mid_x = _mm256_sub_ps(_mm256_loadu_ps(x_at + first), x_i1);
      const __m256 mid_w = _mm256_sub_ps(_mm256_loadu_ps(w_at + first), w_i1);
      for (int s = 0; s < 2; ++s) {
        const float* v = s == 0 ? kShiftedUp : kShiftedDown;
        const __m256 v1 = _mm256_set1_ps(v[1]);
        const __m256 qx = _mm256_add_ps(_mm256_add_ps(_mm256_set1_ps(low_x * v[0]), _mm256_mul_ps(mid_x, v1)),
                                        _mm256_loadu_ps(end_x[s] + first));
        const __m256 q2 = _mm256_add_ps(_mm256_add_ps(_mm256_set1_ps(low_w * v[0] * v[0]), _mm256_mul_ps(_mm256_mul_ps(mid_w, v1), v1)),
                                        _mm256_loadu_ps(end_w[s] + first));
        const __m256 counted = _mm256_and_ps(valid, _mm256_cmp_ps(q2, _mm256_setzero_ps(), _CMP_GT_OQ));
        const __m256 fit = _mm256_and_ps(counted, _mm256_mul_ps(_mm256_mul_ps(qx, qx), _mm256_rcp_ps(q2)));
        _mm256_store_ps(fits[vector][s], fit);
        largest = _mm256_max_ps(largest, fit);
      }
    }
  }
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, largest);
  float T = lanes[0];
  for (int lane = 1; lane < kLanes; ++lane) T = T > lanes[lane] ? T : lanes[lane];
  if (!(T >= 0x1p-60f && T <= 0x1p60f)) return best_split_replay_avx2(sumx, sumw);
  SplitCandidate candidates[kMaxSplitCandidates];
  int count = 0;
  const __m256 threshold = _mm256_set1_ps(T * kCandidateFraction);
  vector = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1)
    for (int first = i1; first <= kSGroup; first += kLanes, ++vector) {
      const unsigned up = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(fits[vector][0]), threshold, _CMP_GE_OQ)));
      const unsigned down = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(fits[vector][1]), threshold, _CMP_GE_OQ)));
      if (!(up | down)) continue;
      for (int lane = 0; lane < kLanes; ++lane)
        for (int s = 0; s < 2; ++s) {
          if (!(((s == 0 ? up : down) >> lane) & 1)) continue;
          if (count == kMaxSplitCandidates) return best_split_replay_avx2(sumx, sumw);
          candidates[count++] = {i1, first + lane, s == 0 ? 1 : -1};
        }
    }
  Split best;
  if (!choose_among_candidates(sumx, sumw, T, candidates, count, best)) return best_split_replay_avx2(sumx, sumw);
  return best;
}

// ggml's neighbour search, 8 candidates per vector, one per lane, as nearest_candidate_avx512: each
// coordinate's 3 terms w[i] * diff * diff (rounded as the scalar loop rounds them) in a table of 8 entries
// looked up by the candidate's code shifted by 2i (its low 3 bits: level i + 4 * anything), added in
// coordinate order.
LOWBIT_AVX2 int nearest_candidate_avx2(const uint16_t* codes, int count, const float* xval, const float* weight,
                                       const float* scaled) {
  const __m256 x = _mm256_loadu_ps(xval), w = _mm256_loadu_ps(weight);
  alignas(32) float term[3][kLanes];
  for (int l = 0; l < 3; ++l) {
    const __m256 diff = _mm256_sub_ps(_mm256_set1_ps(scaled[l]), x);
    _mm256_store_ps(term[l], _mm256_mul_ps(_mm256_mul_ps(w, diff), diff));  // (w*diff)*diff
  }
  __m256 terms[8];
  for (int i = 0; i < 8; ++i) {
    const __m128 levels = _mm_setr_ps(term[0][i], term[1][i], term[2][i], 0);
    terms[i] = _mm256_insertf128_ps(_mm256_castps128_ps256(levels), levels, 1);
  }
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += kLanes, codes += kLanes) {
    const __m256i code = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    __m256 d2 = _mm256_permutevar8x32_ps(terms[0], code);
    for (int i = 1; i < 8; ++i) d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(terms[i], _mm256_srli_epi32(code, 2 * i)));
    // Lanes in the list that beat the best so far (a NaN compares false, as in the scalar loop); the
    // first lane holding their minimum is the one a sequential scan keeps.
    const __m256 valid = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count - first), lane_index));
    const __m256 better = _mm256_and_ps(valid, _mm256_cmp_ps(d2, _mm256_set1_ps(best_d2), _CMP_LT_OQ));
    cpu::avx2::keep_first_least(d2, unsigned(_mm256_movemask_ps(better)), first, best_d2, best);
  }
  return best;
}

}  // namespace

SplitSearchFn avx2_split_search() { return best_split_avx2; }
NearestCandidateFn avx2_nearest_candidate() { return nearest_candidate_avx2; }

#else

SplitSearchFn avx2_split_search() { return nullptr; }
NearestCandidateFn avx2_nearest_candidate() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq1
