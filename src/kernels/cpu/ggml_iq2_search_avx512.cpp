// AVX-512 search kernels of the iq2 quantizers: 16 candidate grid points per vector, one per lane.
// Each lane computes its candidate's weighted distance exactly as ggml's iq2_find_best_neighbour:
// values in order, every product rounded before it is added; so no FMA may appear and contraction is off
// for this file (see ggml_kquants_search_avx512.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>

#include "formats/ggml_iq2_search.h"
#include "formats/ggml_iq2_trials.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_IQ2_AVX512 1
#endif

namespace lowbit::ggml::iq2 {

#if LOWBIT_IQ2_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,bmi2")))

// 16 values per vector: 0.5 * (id * x - 1) rounded by ggml's nearest_int (add 1.5 * 2^23, read the
// mantissa), clamped to 0..2, narrowed to bytes; a subgroup's key is its 8 level bytes' low 2 bits
// gathered by pext.
LOWBIT_AVX512 void round_levels_avx512(const float* xval, int n, float id, int8_t* levels, uint32_t* keys) {
  const __m512 vid = _mm512_set1_ps(id);
  for (int i = 0; i < n; i += 16) {
    const __m512 v = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_sub_ps(_mm512_mul_ps(vid, _mm512_loadu_ps(xval + i)),
                                                                        _mm512_set1_ps(1.f)));
    const __m512i bits = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
    __m512i l = _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
    l = _mm512_max_epi32(_mm512_setzero_si512(), _mm512_min_epi32(_mm512_set1_epi32(2), l));
    const __m128i bytes = _mm512_cvtepi32_epi8(l);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(levels + i), bytes);
    constexpr uint64_t kLowBits = 0x0303030303030303ull;
    keys[i / 8] = uint32_t(_pext_u64(uint64_t(_mm_cvtsi128_si64(bytes)), kLowBits));
    keys[i / 8 + 1] = uint32_t(_pext_u64(uint64_t(_mm_extract_epi64(bytes, 1)), kLowBits));
  }
}

// Keeps, for one scale, the first lane of this chunk at the least distance below best_d2 (a NaN compares
// false, as in the scalar loop): the one a sequential scan keeps.
LOWBIT_AVX512 inline void keep_nearest(__m512 d2, __mmask16 valid, int first, float& best_d2, int& best) {
  const __mmask16 better = _mm512_mask_cmp_ps_mask(valid, d2, _mm512_set1_ps(best_d2), _CMP_LT_OQ);
  if (!better) return;
  best_d2 = _mm512_mask_reduce_min_ps(better, d2);
  const __mmask16 at_min = _mm512_mask_cmp_ps_mask(better, d2, _mm512_set1_ps(best_d2), _CMP_EQ_OQ);
  best = first + __builtin_ctz(unsigned(at_min));
}

// 16 candidates per vector, one per lane; the scales one after another over the same loaded levels. A
// lane's distance adds its candidate's 8 terms in order of the values. A list of one chunk (most of
// iq2_s's) computes each term where it is needed: diff = scale * q picked by level, minus x, then
// (w*diff)*diff; a longer list first tabulates a scale's 8 x 3 terms and then only picks and adds them.
// Both are the portable kernel's floats.
LOWBIT_AVX512 void nearest_at_scales_avx512(const uint8_t* lane_levels, int count, const float* xval,
                                            const float* waux, const float* scales, int count_scales, int* best) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  float best_d2[kMaxScales];
  for (int m = 0; m < count_scales; ++m) {
    best_d2[m] = FLT_MAX;
    best[m] = -1;
  }
  if (count <= kChunk) {
    __m512 diff_x[8], w[8];
    __m512i level[8];
    for (int j = 0; j < 8; ++j) {
      diff_x[j] = _mm512_set1_ps(xval[j]);
      w[j] = _mm512_set1_ps(waux[j]);
      level[j] = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lane_levels + j * kChunk)));
    }
    const __mmask16 valid = __mmask16((1u << count) - 1);
    for (int m = 0; m < count_scales; ++m) {
      const float s = scales[m];
      const __m512 scaled = _mm512_broadcast_f32x4(_mm_setr_ps(s * 1.f, s * 3.f, s * 5.f, s * 5.f));
      __m512 d2 = _mm512_setzero_ps();
      for (int j = 0; j < 8; ++j) {
        const __m512 diff = _mm512_sub_ps(_mm512_permutevar_ps(scaled, level[j]), diff_x[j]);
        d2 = _mm512_add_ps(d2, _mm512_mul_ps(_mm512_mul_ps(w[j], diff), diff));  // (w*diff)*diff
      }
      keep_nearest(d2, valid, 0, best_d2[m], best[m]);
    }
    return;
  }
  // terms[m][j][l] = waux[j] * diff * diff, diff = scales[m] * (2l+1) - xval[j] (lane 3 unused).
  alignas(16) float terms[kMaxScales][8][4];
  for (int m = 0; m < count_scales; ++m) {
    const float s = scales[m];
    const __m128 scaled = _mm_setr_ps(s * 1.f, s * 3.f, s * 5.f, s * 5.f);
    for (int j = 0; j < 8; ++j) {
      const __m128 diff = _mm_sub_ps(scaled, _mm_set1_ps(xval[j]));
      _mm_store_ps(terms[m][j], _mm_mul_ps(_mm_mul_ps(_mm_set1_ps(waux[j]), diff), diff));
    }
  }
  for (int first = 0; first < count; first += kChunk, lane_levels += 8 * kChunk) {
    __m512i level[8];
    for (int j = 0; j < 8; ++j)
      level[j] = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lane_levels + j * kChunk)));
    const int in_list = count - first < kChunk ? count - first : kChunk;
    const __mmask16 valid = __mmask16((1u << in_list) - 1);
    for (int m = 0; m < count_scales; ++m) {
      __m512 d2 = _mm512_setzero_ps();
      for (int j = 0; j < 8; ++j)
        d2 = _mm512_add_ps(d2, _mm512_permutevar_ps(_mm512_broadcast_f32x4(_mm_load_ps(terms[m][j])), level[j]));
      keep_nearest(d2, valid, first, best_d2[m], best[m]);
    }
  }
}

// The exact search below adds 8 terms per candidate; a candidate of a list whose candidates all differ
// from the key in m values (List::differing) is ranked first by the m differences between its terms and
// the key's there, in the m values: 2m - 1 additions. That difference is its distance minus the key's up
// to rounding, and all of it is far below `margin` (terms_margin), so where the least difference is
// ahead of every other candidate's by more than the margin, that candidate's distance is below all
// others' as ggml rounds them: it is the one ggml's search keeps. Returns the lanes of `run` where it is
// not (two candidates within the margin: ties among them included): those need the exact search. `best`
// takes each lane's candidate key.
template <int M>
LOWBIT_AVX512 inline __mmask16 nearest_by_differences(const __m512* term, const uint8_t* pairs,
                                                      const uint32_t* candidate_keys, uint32_t count, __mmask16 run,
                                                      __m512 margin, __m512i& best) {
  constexpr int kPairBytes = 2 * SearchTables::kMaxDiffering;
  __m512 least = _mm512_set1_ps(__builtin_inff()), second = least;
  for (uint32_t i = 0; i < count; ++i, pairs += kPairBytes) {
    __m512 d = _mm512_sub_ps(term[pairs[0]], term[pairs[1]]);
    for (int p = 1; p < M; ++p) d = _mm512_add_ps(d, _mm512_sub_ps(term[pairs[2 * p]], term[pairs[2 * p + 1]]));
    const __mmask16 better = _mm512_mask_cmp_ps_mask(run, d, least, _CMP_LT_OQ);
    second = _mm512_min_ps(second, _mm512_max_ps(d, least));  // the least of all but the least
    least = _mm512_min_ps(least, d);  // (not a blend by `better`: keeps the compare out of the loop's chain)
    best = _mm512_mask_set1_epi32(best, better, int(candidate_keys[i]));
  }
  return _mm512_mask_cmp_ps_mask(run, second, _mm512_add_ps(least, margin), _CMP_LE_OQ);
}

// A subgroup's 8 x 3 term vectors term[3j + l] = waux[j] * diff * diff, diff = scale * (2l+1) - xval[j]
// (each rounded as ggml rounds it), and the margin of nearest_by_differences per lane, from the sum T of
// the 24 terms (nonnegative: products of a square root and a square): every distance is at most T, ggml's
// sum of 8 terms is off by at most 7 * 2^-24 of it, a sum of m term differences by at most
// 2 (2m - 1) 2^-24 T, so two candidates whose differences are 2^-16 T apart keep that order in ggml's
// sums (plus 2^-120 against subnormal terms' absolute rounding). `fast` leaves out the lanes where T is
// not finite or above 2^100 (huge or non-finite values).
LOWBIT_AVX512 inline __m512 subgroup_terms(__m512 scale, const float* xval, const float* waux, __m512* term,
                                           __mmask16& fast) {
  __m512 total[3];
  for (int l = 0; l < 3; ++l) {
    const __m512 scaled = _mm512_mul_ps(scale, _mm512_set1_ps(float(2 * l + 1)));  // scale * q
    for (int j = 0; j < 8; ++j) {
      const __m512 diff = _mm512_sub_ps(scaled, _mm512_set1_ps(xval[j]));
      term[3 * j + l] = _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(waux[j]), diff), diff);  // (w*diff)*diff
      total[l] = j ? _mm512_add_ps(total[l], term[3 * j + l]) : term[l];
    }
  }
  const __m512 sum = _mm512_add_ps(_mm512_add_ps(total[0], total[1]), total[2]);
  fast = _mm512_cmp_ps_mask(sum, _mm512_set1_ps(0x1p100f), _CMP_LE_OQ);
  return _mm512_add_ps(_mm512_mul_ps(sum, _mm512_set1_ps(0x1p-16f)), _mm512_set1_ps(0x1p-120f));
}

// SearchKernels::nearest_key_at_scale: 16 candidates per vector, each lane's levels shifted out of its
// key (vpermilps reads the level from the index's bits 0, 1), its distance added in ggml's order.
LOWBIT_AVX512 int nearest_key_at_scale_avx512(const uint32_t* candidate_keys, int count, const float* xval,
                                              const float* waux, float scale) {
  const __m512 scaled = _mm512_broadcast_f32x4(_mm_setr_ps(scale * 1.f, scale * 3.f, scale * 5.f, scale * 5.f));
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += 16) {
    const __mmask16 valid = count - first >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (count - first)) - 1);
    const __m512i keys = _mm512_maskz_loadu_epi32(valid, candidate_keys + first);
    __m512 d2 = _mm512_setzero_ps();
    for (int j = 0; j < 8; ++j) {
      const __m512i level = _mm512_srli_epi32(keys, unsigned(2 * j));
      const __m512 diff = _mm512_sub_ps(_mm512_permutevar_ps(scaled, level), _mm512_set1_ps(xval[j]));
      d2 = _mm512_add_ps(d2, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(waux[j]), diff), diff));  // (w*diff)*diff
    }
    keep_nearest(d2, valid, first, best_d2, best);
  }
  return best;
}

// Every trial at once, 16 trials per vector.
LOWBIT_AVX512 void round_trials_avx512(const float* xval, int n, const float* ids, int count, uint32_t* keys) {
  round_trials_lanes<16>(xval, n, ids, count, keys);
}

LOWBIT_AVX512 void trial_sums_avx512(const float* weight, const float* xval, int n, const uint32_t* keys, int count,
                                     float* sumqx, float* sumq2) {
  trial_sums_lanes<16>(weight, xval, n, keys, count, sumqx, sumq2);
}

// SearchKernels::all_trials, 16 trials per vector, the trials in the lanes. Per subgroup and vector: the
// 16 trials' keys (levels rounded as round_trials_lanes rounds them); each distinct key among the lanes
// looked up once; an off-grid key's neighbour list searched once for all lanes holding it, each lane at
// its own trial's scale. A candidate's distance adds 8 terms waux[j] * diff * diff, diff = scale * (2l+1)
// - xval[j], which depend only on the value, its level and the lane's scale: the 8 x 3 term vectors are
// computed once per subgroup and vector (each rounded as ggml rounds it, as in nearest_at_scales_lanes)
// and a candidate adds its 8 in ggml's order (starting from the first term instead of 0 changes no
// comparison: the terms are products of a square root and a square). Each lane keeps the first strict
// minimum (NaN compares false), ggml's choice. Where a list's candidates all differ from the key in a few
// values (iq2_s's do), nearest_by_differences ranks them first and the full sums run only where two come
// too close to tell apart. Then the weighted sums of the resolved levels, value by
// value in ggml's order, as trial_sums_lanes. Nothing of a trial is stored but its resolved keys.
LOWBIT_AVX512 int all_trials_avx512(const SearchTables& t, const float* xval, const float* waux, const float* weight,
                                    int n, const float* ids, const float* scales, int count, uint32_t* keys,
                                    uint32_t* off_grid, float* sumqx, float* sumq2) {
  const int subgroups = n / 8;
  for (int k = 0; k < subgroups; ++k) off_grid[k] = 0;
  const int32_t* by_key = t.by_key.data();
  __m512i resolved[kTrialStride / 16][4];
  for (int first = 0; first < count; first += 16) {
    const __m512 id = _mm512_loadu_ps(ids + first);
    const __m512 scale = _mm512_loadu_ps(scales + first);
    const int used = count - first < 16 ? count - first : 16;
    const __mmask16 valid = __mmask16((1u << used) - 1);
    for (int k = 0; k < subgroups; ++k) {
      const float* xv = xval + 8 * k;
      __m512i key = _mm512_setzero_si512();
      for (int j = 0; j < 8; ++j) {
        const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_sub_ps(_mm512_mul_ps(id, _mm512_set1_ps(xv[j])),
                                                                               _mm512_set1_ps(1.f)));
        const __m512 shifted = _mm512_add_ps(half, _mm512_set1_ps(12582912.f));
        __m512i level = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x007fffff)),
                                         _mm512_set1_epi32(0x00400000));
        level = _mm512_min_epi32(_mm512_max_epi32(level, _mm512_setzero_si512()), _mm512_set1_epi32(2));
        key = _mm512_or_si512(key, _mm512_sll_epi32(level, _mm_cvtsi32_si128(2 * j)));
      }
      alignas(64) uint32_t lane_key[16];
      _mm512_store_si512(lane_key, key);
      __m512i chosen = key;
      __mmask16 off = 0;
      alignas(64) __m512 term[24];  // term[3j + l]
      bool have_terms = false;
      __m512 margin = _mm512_setzero_ps();
      __mmask16 fast = 0;
      for (__mmask16 left = valid; left;) {
        const uint32_t c = lane_key[__builtin_ctz(unsigned(left))];
        const __mmask16 run = _mm512_mask_cmpeq_epi32_mask(left, key, _mm512_set1_epi32(int(c)));
        left = __mmask16(left & ~run);
        const int32_t entry = by_key[c];
        if (entry >= 0) continue;
        off = __mmask16(off | run);
        const SearchTables::List& list = t.list_of(entry);
        if (list.count == 0) return kEmptyList;
        if (!have_terms) {
          margin = subgroup_terms(scale, xv, waux + 8 * k, term, fast);
          have_terms = true;
        }
        if (list.differing && !(run & ~fast)) {
          const uint8_t* pairs = t.neighbour_deltas.data() + 2 * SearchTables::kMaxDiffering * size_t(list.first);
          const uint32_t* candidate_keys = t.neighbour_keys.data() + list.first;
          __m512i found = key;
          __mmask16 ambiguous = run;
          switch (list.differing) {
            case 1: ambiguous = nearest_by_differences<1>(term, pairs, candidate_keys, list.count, run, margin, found); break;
            case 2: ambiguous = nearest_by_differences<2>(term, pairs, candidate_keys, list.count, run, margin, found); break;
            case 3: ambiguous = nearest_by_differences<3>(term, pairs, candidate_keys, list.count, run, margin, found); break;
            case 4: ambiguous = nearest_by_differences<4>(term, pairs, candidate_keys, list.count, run, margin, found); break;
          }
          if (!ambiguous) {
            chosen = _mm512_mask_mov_epi32(chosen, run, found);
            continue;
          }
        }
        const uint8_t* slots = t.neighbour_slots.data() + 8 * size_t(list.first);
        const uint32_t* candidate_keys = t.neighbour_keys.data() + list.first;
        __m512 best_d2 = _mm512_set1_ps(FLT_MAX);
        __m512i best = key;
        for (uint32_t i = 0; i < list.count; ++i, slots += 8) {
          __m512 d2 = term[slots[0]];
          for (int j = 1; j < 8; ++j) d2 = _mm512_add_ps(d2, term[slots[j]]);
          const __mmask16 better = _mm512_mask_cmp_ps_mask(run, d2, best_d2, _CMP_LT_OQ);
          best_d2 = _mm512_mask_mov_ps(best_d2, better, d2);
          best = _mm512_mask_set1_epi32(best, better, int(candidate_keys[i]));
        }
        // A lane found a candidate exactly where its least distance came out below FLT_MAX.
        if (_mm512_mask_cmp_ps_mask(run, best_d2, _mm512_set1_ps(FLT_MAX), _CMP_LT_OQ) != run) return kNoGridPoint;
        chosen = _mm512_mask_mov_epi32(chosen, run, best);
      }
      off_grid[k] |= uint32_t(off) << first;
      resolved[first / 16][k] = chosen;
      _mm512_storeu_si512(keys + k * kTrialStride + first, chosen);
    }
  }
  // sumqx += (w*x)*q, sumq2 += (w*q)*q, q = 2l+1, in order of the values; q picked by vpermilps from
  // the level in the key's bits 2j, 2j + 1. Both vectors of trials at once: each lane's sums are a chain
  // of dependent additions, two vectors' chains overlap.
  const __m512 odd = _mm512_broadcast_f32x4(_mm_setr_ps(1.f, 3.f, 5.f, 5.f));
  const int vectors = (count + 15) / 16;
  __m512 qx[kTrialStride / 16], q2[kTrialStride / 16];
  for (int v = 0; v < vectors; ++v) qx[v] = q2[v] = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 wx = _mm512_set1_ps(weight[i] * xval[i]), w = _mm512_set1_ps(weight[i]);
    for (int v = 0; v < vectors; ++v) {
      const __m512 q = _mm512_permutevar_ps(odd, _mm512_srl_epi32(resolved[v][i / 8], _mm_cvtsi32_si128(2 * (i % 8))));
      qx[v] = _mm512_add_ps(qx[v], _mm512_mul_ps(wx, q));
      q2[v] = _mm512_add_ps(q2[v], _mm512_mul_ps(_mm512_mul_ps(w, q), q));
    }
  }
  for (int v = 0; v < vectors; ++v) {
    _mm512_storeu_ps(sumqx + 16 * v, qx[v]);
    _mm512_storeu_ps(sumq2 + 16 * v, q2[v]);
  }
  return 0;
}

// One scale: nearest_at_scales_avx512 holds the candidates in the lanes already.
LOWBIT_AVX512 int nearest_lanes_at_scale_avx512(const uint8_t* lane_levels, int count, const float* xval,
                                                const float* waux, float scale) {
  int best = -1;
  nearest_at_scales_avx512(lane_levels, count, xval, waux, &scale, 1, &best);
  return best;
}

constexpr SearchKernels kAvx512Kernels = {round_trials_avx512,         trial_sums_avx512,
                                          round_levels_avx512,         nearest_at_scales_avx512,
                                          all_trials_avx512,           nearest_key_at_scale_avx512,
                                          nearest_lanes_at_scale_avx512,
                                          ggml_search::fit_unsigned_scale};

}  // namespace

const SearchKernels* avx512_search_kernels() { return &kAvx512Kernels; }

#else

const SearchKernels* avx512_search_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq2
