// AVX2 searches of the iq1 quantizers, for CPUs without AVX-512: the AVX-512 kernels' methods
// (ggml_iq1_search_avx512.cpp) with 8 lanes per vector. The split search of iq1_s: 8 values of i2 per
// vector, one split per lane, in two passes (ggml_iq1_split_candidates.h), or as fallback the full scan
// (a vector of splits where no lane beats the best so far changes nothing in ggml's sequential scan and
// is skipped; otherwise its lanes are replayed in ggml's order). Sums that decide are computed exactly
// as the scalar loop (ggml's): every product rounded before it is added, in the same order, so no FMA
// may appear and contraction is off for this file. The neighbour search: 8 candidates per vector. The
// group's ascending order by counting compares (both targets).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "formats/ggml_iq1_search.h"
#include "kernels/cpu/ggml_iq1_split_candidates.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

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

// (vector index) -> (i1, first i2) of pass 1's vectors (ggml_iq1_split_candidates.h).
constexpr auto kVectorSpans = split_vector_spans<kLanes>();
constexpr int kVectors = int(kVectorSpans.size());
static_assert(kVectors == 85);
// 8 mask bits spread to the even bits of 16 (lane l -> bit 2l): up and down masks interleaved in ggml's
// order (lane by lane, +1/8 first) without BMI2's pdep (slow on the AVX2-only Zen 1/2).
constexpr std::array<uint16_t, 256> kSpreadBits = [] {
  std::array<uint16_t, 256> spread{};
  for (int b = 0; b < 256; ++b)
    for (int l = 0; l < 8; ++l) spread[size_t(b)] = uint16_t(spread[size_t(b)] | (((b >> l) & 1) << (2 * l)));
  return spread;
}();

// ggml's split in two passes, as best_split_avx512 (ggml_iq1_split_candidates.h): every split's fit
// approximately, its largest T; then ggml's choice among the splits whose fit reaches T (1 - 2^-7).
LOWBIT_AVX2 Split best_split_avx2(const float* sumx, const float* sumw) {
  // Far from overflow (|sums| <= 2^60; NaN fails), weights not negative (sumw ascending) and a total
  // weight of at least 2^-60, or the full scan: the approximate fits below err by less than 2^-11 there
  // (ggml_iq1_split_candidates.h, approximate_split_terms).
  const __m256 limit = _mm256_set1_ps(0x1p60f), sign = _mm256_set1_ps(-0.f);
  __m256 ok = _mm256_cmp_ps(_mm256_set1_ps(sumw[kSGroup]), _mm256_set1_ps(0x1p-60f), _CMP_GE_OQ);
  ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_andnot_ps(sign, _mm256_set1_ps(sumx[kSGroup])), limit, _CMP_LE_OQ));
  ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_set1_ps(sumw[kSGroup]), limit, _CMP_LE_OQ));
  for (int i = 0; i < kSGroup; i += kLanes) {
    const __m256 x = _mm256_loadu_ps(sumx + i), w = _mm256_loadu_ps(sumw + i);
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_andnot_ps(sign, x), limit, _CMP_LE_OQ));
    ok = _mm256_and_ps(ok, _mm256_cmp_ps(_mm256_loadu_ps(sumw + i + 1), w, _CMP_GE_OQ));
  }
  if (_mm256_movemask_ps(ok) != 0xff) return best_split_replay_avx2(sumx, sumw);
  // Pass 1, per shift: sumqx = (X v2 - sx[i2]) - sx[i1], sumq2 = (W v2^2 + b sw[i2]) + a sw[i1]; the i2
  // parts once per i2. Past i2 = 32 the sumq2 part is +inf, so the fit is 0 there (rcp(inf) = 0).
  constexpr int kPadded = 40;
  alignas(32) float part_x[2][kPadded], part_w[2][kPadded];
  float low_weight[2];
  for (int s = 0; s < 2; ++s) {
    const ApproximateSplitTerms t = approximate_split_terms(s == 0 ? 1 : -1);
    low_weight[s] = t.a;
    const __m256 xv2 = _mm256_set1_ps(sumx[kSGroup] * t.v2), wv22 = _mm256_set1_ps(sumw[kSGroup] * t.v2_squared);
    const __m256 b = _mm256_set1_ps(t.b);
    for (int i = 0; i < kSGroup; i += kLanes) {
      _mm256_store_ps(part_x[s] + i, _mm256_sub_ps(xv2, _mm256_loadu_ps(sumx + i)));
      _mm256_store_ps(part_w[s] + i, _mm256_add_ps(wv22, _mm256_mul_ps(b, _mm256_loadu_ps(sumw + i))));
    }
    const __m256 last_x = _mm256_setr_ps(sumx[kSGroup], 0, 0, 0, 0, 0, 0, 0);
    const __m256 last_w = _mm256_setr_ps(sumw[kSGroup], 0, 0, 0, 0, 0, 0, 0);
    const __m256 beyond = _mm256_castsi256_ps(_mm256_setr_epi32(0, -1, -1, -1, -1, -1, -1, -1));
    _mm256_store_ps(part_x[s] + kSGroup, _mm256_andnot_ps(beyond, _mm256_sub_ps(xv2, last_x)));
    _mm256_store_ps(part_w[s] + kSGroup, _mm256_blendv_ps(_mm256_add_ps(wv22, _mm256_mul_ps(b, last_w)),
                                                          _mm256_set1_ps(INFINITY), beyond));
  }
  alignas(32) float fits[kVectors][2][kLanes];
  __m256 largest[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};  // two chains of max
  int vector = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    const __m256 x_i1 = _mm256_set1_ps(sumx[i1]);
    const __m256 w_i1[2] = {_mm256_set1_ps(low_weight[0] * sumw[i1]), _mm256_set1_ps(low_weight[1] * sumw[i1])};
    for (int first = i1; first <= kSGroup; first += kLanes, ++vector)
      for (int s = 0; s < 2; ++s) {
        const __m256 qx = _mm256_sub_ps(_mm256_loadu_ps(part_x[s] + first), x_i1);
        const __m256 q2 = _mm256_add_ps(_mm256_loadu_ps(part_w[s] + first), w_i1[s]);
        const __m256 fit = _mm256_mul_ps(_mm256_mul_ps(qx, qx), _mm256_rcp_ps(q2));
        _mm256_store_ps(fits[vector][s], fit);
        largest[s] = _mm256_max_ps(largest[s], fit);
      }
  }
  alignas(32) float lanes[kLanes];
  _mm256_store_ps(lanes, _mm256_max_ps(largest[0], largest[1]));
  float T = lanes[0];
  for (int lane = 1; lane < kLanes; ++lane) T = T > lanes[lane] ? T : lanes[lane];
  if (!(T >= 0x1p-60f && T <= 0x1p60f)) return best_split_replay_avx2(sumx, sumw);
  // Pass 2: the vectors holding a split whose fit reaches T (1 - 2^-7), found without a branch per
  // vector (which mispredicts), then their splits in ggml's order.
  const __m256 threshold = _mm256_set1_ps(T * kCandidateFraction);
  uint8_t hit[kVectors];
  int hits = 0;
  for (int v = 0; v < kVectors; ++v) {
    const __m256 either = _mm256_max_ps(_mm256_load_ps(fits[v][0]), _mm256_load_ps(fits[v][1]));
    hit[hits] = uint8_t(v);
    hits += _mm256_movemask_ps(_mm256_cmp_ps(either, threshold, _CMP_GE_OQ)) != 0;
  }
  SplitCandidate candidates[kMaxSplitCandidates];
  int count = 0;
  for (int h = 0; h < hits; ++h) {
    const int v = hit[h];
    const unsigned up = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(fits[v][0]), threshold, _CMP_GE_OQ)));
    const unsigned down = unsigned(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_load_ps(fits[v][1]), threshold, _CMP_GE_OQ)));
    for (unsigned b = unsigned(kSpreadBits[up] | kSpreadBits[down] << 1); b; b &= b - 1) {
      if (count == kMaxSplitCandidates) return best_split_replay_avx2(sumx, sumw);
      const int bit = __builtin_ctz(b);
      candidates[count++] = {kVectorSpans[size_t(v)].i1, kVectorSpans[size_t(v)].first + bit / 2, bit % 2 ? -1 : 1};
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
  // Per lane the least distance below FLT_MAX and the first candidate at it (a strict compare: a NaN or
  // a later tie never replaces it), without a branch per vector (a new best mispredicts); then the least
  // of the lanes and, among the lanes holding it, the first candidate: what ggml's scan keeps.
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256 lane_d2 = _mm256_set1_ps(FLT_MAX);
  __m256i lane_best = _mm256_set1_epi32(-1);
  for (int first = 0; first < count; first += kLanes, codes += kLanes) {
    const __m256i code = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
    __m256 d2 = _mm256_permutevar8x32_ps(terms[0], code);
    for (int i = 1; i < 8; ++i) d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(terms[i], _mm256_srli_epi32(code, 2 * i)));
    const __m256i candidate = _mm256_add_epi32(_mm256_set1_epi32(first), lane_index);
    const __m256 better = _mm256_and_ps(_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), candidate)),
                                        _mm256_cmp_ps(d2, lane_d2, _CMP_LT_OQ));
    lane_d2 = _mm256_blendv_ps(lane_d2, d2, better);
    lane_best = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(lane_best), _mm256_castsi256_ps(candidate), better));
  }
  alignas(32) float d2s[kLanes];
  alignas(32) int bests[kLanes];
  _mm256_store_ps(d2s, lane_d2);
  _mm256_store_si256(reinterpret_cast<__m256i*>(bests), lane_best);
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int lane = 0; lane < kLanes; ++lane)
    if (bests[lane] >= 0 && (d2s[lane] < best_d2 || (d2s[lane] == best_d2 && bests[lane] < best))) {
      best_d2 = d2s[lane];
      best = bests[lane];
    }
  return best;
}

// The stable ascending order (ggml_iq1_search.h): value j's position counts the values before it,
// x_i < x_j for i > j and x_i <= x_j for i < j (-0 and +0 compare equal), 8 j per vector; the compares
// are fixed, unlike the insertion sort's mispredicted branches. The AVX-512 target runs it too: on the
// team's EPYC it took ~0.4 of the time of the AVX-512 kernel it replaced (16 lanes, popcounts of masks).
LOWBIT_AVX2 bool ascending_order_avx2(const float* x, int* order) {
  __m256 v[4];
  __m256 unordered = _mm256_setzero_ps();
  for (int k = 0; k < 4; ++k) {
    v[k] = _mm256_loadu_ps(x + kLanes * k);
    unordered = _mm256_or_ps(unordered, _mm256_cmp_ps(v[k], v[k], _CMP_UNORD_Q));
  }
  if (_mm256_movemask_ps(unordered)) return false;
  const __m256i lane_index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  __m256i rank[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int b = 0; b < 4; ++b)
    for (int l = 0; l < kLanes; ++l) {
      const __m256 xi = _mm256_set1_ps(x[kLanes * b + l]);
      for (int k = 0; k < 4; ++k) {
        __m256 before;  // all ones where value i goes before value j (lane of block k)
        if (k < b) {
          before = _mm256_cmp_ps(xi, v[k], _CMP_LT_OQ);
        } else if (k > b) {
          before = _mm256_cmp_ps(xi, v[k], _CMP_LE_OQ);
        } else {
          const __m256 later = _mm256_castsi256_ps(_mm256_cmpgt_epi32(lane_index, _mm256_set1_epi32(l)));
          before = _mm256_blendv_ps(_mm256_cmp_ps(xi, v[k], _CMP_LT_OQ), _mm256_cmp_ps(xi, v[k], _CMP_LE_OQ), later);
        }
        rank[k] = _mm256_sub_epi32(rank[k], _mm256_castps_si256(before));
      }
    }
  alignas(32) int position[kSGroup];
  for (int k = 0; k < 4; ++k) _mm256_store_si256(reinterpret_cast<__m256i*>(position + kLanes * k), rank[k]);
  for (int j = 0; j < kSGroup; ++j) order[position[j]] = j;
  return true;
}

}  // namespace

SplitSearchFn avx2_split_search() { return best_split_avx2; }
NearestCandidateFn avx2_nearest_candidate() { return nearest_candidate_avx2; }
AscendingOrderFn avx2_ascending_order() { return ascending_order_avx2; }

#else

SplitSearchFn avx2_split_search() { return nullptr; }
NearestCandidateFn avx2_nearest_candidate() { return nullptr; }
AscendingOrderFn avx2_ascending_order() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq1
