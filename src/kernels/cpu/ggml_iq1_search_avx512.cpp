// AVX-512 searches of the iq1 quantizers. The split search of iq1_s: 16 values of i2 per vector, one split
// per lane, every split's fit approximately, then ggml's sequential choice among the few near the largest
// (ggml_iq1_split_candidates.h); the full scan, its fallback, replays a vector in ggml's order wherever a
// lane could win. Sums that decide are computed exactly as the scalar loop (ggml's): every product
// rounded before it is added, in the same order; so no FMA may appear and contraction is off for this
// file (see ggml_kquants_search_avx512.cpp). The neighbour search: 16 candidate grid points per vector,
// one per lane, each adding tabulated terms in ggml's order.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
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
#define LOWBIT_IQ1_AVX512 1
#endif

namespace lowbit::ggml::iq1 {

#if LOWBIT_IQ1_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f,bmi2")))

struct LaneSums {
  __m512 sumqx, sumq2;
};

// Sums of the 16 splits (i1, i2 + lane) for shifted levels v: as the scalar
// (sx[i1] - sx[0])*v0 + (sx[i2] - sx[i1])*v1 + (sx[32] - sx[i2])*v2, same for the weights with v^2.
LOWBIT_AVX512 inline LaneSums split_sums(const float* v, float low_x, float low_w, __m512 x_i1, __m512 w_i1, __m512 x_end,
                                         __m512 w_end, __m512 x_i2, __m512 w_i2) {
  const __m512 v1 = _mm512_set1_ps(v[1]), v2 = _mm512_set1_ps(v[2]);
  const __m512 qx_low = _mm512_set1_ps(low_x * v[0]);
  const __m512 q2_low = _mm512_set1_ps(low_w * v[0] * v[0]);
  const __m512 qx = _mm512_add_ps(_mm512_add_ps(qx_low, _mm512_mul_ps(_mm512_sub_ps(x_i2, x_i1), v1)),
                                  _mm512_mul_ps(_mm512_sub_ps(x_end, x_i2), v2));
  const __m512 q2 = _mm512_add_ps(_mm512_add_ps(q2_low, _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(w_i2, w_i1), v1), v1)),
                                  _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(w_end, w_i2), v2), v2));
  return {qx, q2};
}

// Lanes whose split would replace the best so far: sumq2 > 0 and sumqx^2 > best * sumq2.
LOWBIT_AVX512 inline __mmask16 winners(__mmask16 valid, const LaneSums& s, float best) {
  const __mmask16 positive = _mm512_mask_cmp_ps_mask(valid, s.sumq2, _mm512_setzero_ps(), _CMP_GT_OQ);
  return _mm512_mask_cmp_ps_mask(positive, _mm512_mul_ps(s.sumqx, s.sumqx),
                                 _mm512_mul_ps(_mm512_set1_ps(best), s.sumq2), _CMP_GT_OQ);
}

// ggml's full scan: 16 splits per vector, a vector replayed in ggml's order wherever a lane could win.
// The fallback of best_split_avx512.
LOWBIT_AVX512 Split best_split_replay_avx512(const float* sumx, const float* sumw) {
  Split best;
  float best_score = -FLT_MAX;
  const __m512 x_end = _mm512_set1_ps(sumx[kSGroup]), w_end = _mm512_set1_ps(sumw[kSGroup]);
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    const float low_x = sumx[i1] - sumx[0], low_w = sumw[i1] - sumw[0];
    const __m512 x_i1 = _mm512_set1_ps(sumx[i1]), w_i1 = _mm512_set1_ps(sumw[i1]);
    for (int first = i1; first <= kSGroup; first += 16) {
      const int lanes = kSGroup + 1 - first < 16 ? kSGroup + 1 - first : 16;
      const __mmask16 valid = __mmask16((1u << lanes) - 1);
      const __m512 x_i2 = _mm512_maskz_loadu_ps(valid, sumx + first), w_i2 = _mm512_maskz_loadu_ps(valid, sumw + first);
      const LaneSums up = split_sums(kShiftedUp, low_x, low_w, x_i1, w_i1, x_end, w_end, x_i2, w_i2);
      const LaneSums down = split_sums(kShiftedDown, low_x, low_w, x_i1, w_i1, x_end, w_end, x_i2, w_i2);
      if (!(winners(valid, up, best_score) | winners(valid, down, best_score))) continue;
      // Replay this vector's splits in ggml's order: i2 ascending, +1/8 before -1/8.
      alignas(64) float qx[2][16], q2[2][16];
      _mm512_store_ps(qx[0], up.sumqx);
      _mm512_store_ps(q2[0], up.sumq2);
      _mm512_store_ps(qx[1], down.sumqx);
      _mm512_store_ps(q2[1], down.sumq2);
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
constexpr auto kVectorSpans = split_vector_spans<16>();
constexpr int kVectors = int(kVectorSpans.size());
static_assert(kVectors == 51);

// ggml's split in two passes (ggml_iq1_split_candidates.h): every split's fit sumqx^2 / sumq2 approximately
// (the reciprocal to 2^-14, the sums rearranged), its largest T; then ggml's choice among the splits whose
// fit reaches T (1 - 2^-7), usually a handful. No lane is replayed where it cannot matter, so no branch
// depends on the sequence of winners.
LOWBIT_AVX512 Split best_split_avx512(const float* sumx, const float* sumw) {
  // Far from overflow (|sums| <= 2^60; NaN fails), weights not negative (sumw ascending) and a total
  // weight of at least 2^-60, or the full scan: the approximate fits err by less than 2^-13 there.
  const __m512 limit = _mm512_set1_ps(0x1p60f);
  const __mmask16 last = 1;
  __mmask16 bad = _mm512_cmp_ps_mask(_mm512_set1_ps(sumw[kSGroup]), _mm512_set1_ps(0x1p-60f), _CMP_NGE_UQ);
  bad |= _mm512_mask_cmp_ps_mask(last, _mm512_abs_ps(_mm512_set1_ps(sumx[kSGroup])), limit, _CMP_NLE_UQ) |
         _mm512_mask_cmp_ps_mask(last, _mm512_set1_ps(sumw[kSGroup]), limit, _CMP_NLE_UQ);
  for (int i = 0; i < kSGroup; i += 16) {
    const __m512 w = _mm512_loadu_ps(sumw + i);
    bad |= _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(sumx + i)), limit, _CMP_NLE_UQ) |
           _mm512_cmp_ps_mask(_mm512_loadu_ps(sumw + i + 1), w, _CMP_NGE_UQ);
  }
  if (bad) return best_split_replay_avx512(sumx, sumw);
  // Pass 1, per shift: sumqx = (X v2 - sx[i2]) - sx[i1], sumq2 = (W v2^2 + b sw[i2]) + a sw[i1], the i2
  // parts once per i2; past i2 = 32 the sumq2 part is +inf, so the fit is 0 there (rcp14(inf) = 0).
  constexpr int kPadded = 48;
  alignas(64) float part_x[2][kPadded], part_w[2][kPadded];
  float low_weight[2];
  for (int s = 0; s < 2; ++s) {
    const ApproximateSplitTerms t = approximate_split_terms(s == 0 ? 1 : -1);
    low_weight[s] = t.a;
    const __m512 xv2 = _mm512_set1_ps(sumx[kSGroup] * t.v2), wv22 = _mm512_set1_ps(sumw[kSGroup] * t.v2_squared);
    const __m512 b = _mm512_set1_ps(t.b);
    for (int i = 0; i < kPadded; i += 16) {
      const __mmask16 in = i < kSGroup ? 0xffff : last;
      const __m512 x = _mm512_maskz_loadu_ps(in, sumx + i), w = _mm512_maskz_loadu_ps(in, sumw + i);
      _mm512_store_ps(part_x[s] + i, _mm512_maskz_sub_ps(in, xv2, x));
      _mm512_store_ps(part_w[s] + i, _mm512_mask_add_ps(_mm512_set1_ps(INFINITY), in, wv22, _mm512_mul_ps(b, w)));
    }
  }
  alignas(64) float fits[kVectors][2][16];
  __m512 largest[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};  // two chains of max
  int vector = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1) {
    const __m512 x_i1 = _mm512_set1_ps(sumx[i1]);
    const __m512 w_i1[2] = {_mm512_set1_ps(low_weight[0] * sumw[i1]), _mm512_set1_ps(low_weight[1] * sumw[i1])};
    for (int first = i1; first <= kSGroup; first += 16, ++vector)
      for (int s = 0; s < 2; ++s) {
        const __m512 qx = _mm512_sub_ps(_mm512_loadu_ps(part_x[s] + first), x_i1);
        const __m512 q2 = _mm512_add_ps(_mm512_loadu_ps(part_w[s] + first), w_i1[s]);
        const __m512 fit = _mm512_mul_ps(_mm512_mul_ps(qx, qx), _mm512_rcp14_ps(q2));
        _mm512_store_ps(fits[vector][s], fit);
        largest[s] = _mm512_max_ps(largest[s], fit);
      }
  }
  const float T = _mm512_reduce_max_ps(_mm512_max_ps(largest[0], largest[1]));
  if (!(T >= 0x1p-60f && T <= 0x1p60f)) return best_split_replay_avx512(sumx, sumw);
  // Pass 2: the vectors holding a split whose fit reaches T (1 - 2^-7), found without a branch per
  // vector, then their splits in ggml's order (lane by lane, +1/8 first).
  const __m512 threshold = _mm512_set1_ps(T * kCandidateFraction);
  uint32_t bits[kVectors];
  uint8_t hit[kVectors];
  int hits = 0;
  for (int v = 0; v < kVectors; ++v) {
    const uint32_t up = _mm512_cmp_ps_mask(_mm512_load_ps(fits[v][0]), threshold, _CMP_GE_OQ);
    const uint32_t down = _mm512_cmp_ps_mask(_mm512_load_ps(fits[v][1]), threshold, _CMP_GE_OQ);
    bits[v] = _pdep_u32(up, 0x55555555u) | _pdep_u32(down, 0xaaaaaaaau);
    hit[hits] = uint8_t(v);
    hits += bits[v] != 0;
  }
  SplitCandidate candidates[kMaxSplitCandidates];
  int count = 0;
  for (int h = 0; h < hits; ++h) {
    const int v = hit[h];
    for (uint32_t b = bits[v]; b; b &= b - 1) {
      if (count == kMaxSplitCandidates) return best_split_replay_avx512(sumx, sumw);
      const int bit = __builtin_ctz(b);
      candidates[count++] = {kVectorSpans[size_t(v)].i1, kVectorSpans[size_t(v)].first + bit / 2, bit % 2 ? -1 : 1};
    }
  }
  Split best;
  if (!choose_among_candidates(sumx, sumw, T, candidates, count, best)) return best_split_replay_avx512(sumx, sumw);
  return best;
}

// Each candidate's distance adds 8 terms w[i] * diff * diff, diff = scaled[level] - x[i], one per
// coordinate, in coordinate order. A term depends only on the coordinate and its level: the 24 are
// computed once (each rounded as the scalar loop rounds it) and looked up by the candidate's code, whose
// low 4 bits after a shift by 2i are levels i and i + 1: coordinate i's table holds its term at entry
// level_i + 4 * anything. The first two terms' sum (the scalar loop's second partial sum) is one table
// of 16 entries, level_0 + 4 * level_1.
LOWBIT_AVX512 int nearest_candidate_avx512(const uint16_t* codes, int count, const float* xval, const float* weight,
                                           const float* scaled) {
  const __m256 x = _mm256_loadu_ps(xval), w = _mm256_loadu_ps(weight);
  __m256 term[3];
  for (int l = 0; l < 3; ++l) {
    const __m256 diff = _mm256_sub_ps(_mm256_set1_ps(scaled[l]), x);
    term[l] = _mm256_mul_ps(_mm256_mul_ps(w, diff), diff);  // (w*diff)*diff
  }
  // Entry e of a table: coordinate i's term at level e % 4 (lanes 8l + i of low:high); level 3 never occurs.
  const __m512 low = _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(term[0])), _mm256_castps_pd(term[1]), 1));
  const __m512 high = _mm512_castps256_ps512(term[2]);
  const __m512i by_level = _mm512_setr_epi32(0, 8, 16, 0, 0, 8, 16, 0, 0, 8, 16, 0, 0, 8, 16, 0);
  __m512 terms[8];
  for (int i = 0; i < 8; ++i) terms[i] = _mm512_permutex2var_ps(low, _mm512_add_epi32(by_level, _mm512_set1_epi32(i)), high);
  // Entry e: term 0 at level e % 4 plus term 1 at level e / 4, rounded once as the scalar loop's sum.
  const __m512i by_next_level = _mm512_setr_epi32(1, 1, 1, 1, 9, 9, 9, 9, 17, 17, 17, 17, 1, 1, 1, 1);
  const __m512 first_two = _mm512_add_ps(terms[0], _mm512_permutex2var_ps(low, by_next_level, high));
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += kLaneChunk, codes += kLaneChunk) {
    const __m512i code = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes)));
    __m512 d2 = _mm512_permutexvar_ps(code, first_two);
    for (int i = 2; i < 8; ++i) d2 = _mm512_add_ps(d2, _mm512_permutexvar_ps(_mm512_srli_epi32(code, 2 * i), terms[i]));
    const int in_list = count - first < kLaneChunk ? count - first : kLaneChunk;
    const __mmask16 valid = __mmask16((1u << in_list) - 1);
    // Lanes that beat the best so far (a NaN compares false, as in the scalar loop); the first lane
    // holding their minimum is the one a sequential scan keeps.
    const __mmask16 better = _mm512_mask_cmp_ps_mask(valid, d2, _mm512_set1_ps(best_d2), _CMP_LT_OQ);
    if (!better) continue;
    best_d2 = _mm512_mask_reduce_min_ps(better, d2);
    const __mmask16 at_min = _mm512_mask_cmp_ps_mask(better, d2, _mm512_set1_ps(best_d2), _CMP_EQ_OQ);
    best = first + __builtin_ctz(unsigned(at_min));
  }
  return best;
}

}  // namespace

NearestCandidateFn avx512_nearest_candidate() { return nearest_candidate_avx512; }
SplitSearchFn avx512_split_search() { return best_split_avx512; }

#else

SplitSearchFn avx512_split_search() { return nullptr; }
NearestCandidateFn avx512_nearest_candidate() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq1
