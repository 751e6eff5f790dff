// AVX2 kernels of the iq2 quantizers, for CPUs without AVX-512: every trial at once, the neighbour
// search of a run of trials and iq2_s's search of all trials in one pass (all_trials, the AVX-512
// kernel's method), 8 trials per vector (ggml_iq2_trials.h), and iq2_xxs's first fit (make_qp_quants)
// with its 8 steps in one vector; the one-scale rounding stays the portable kernel's. Each lane computes
// exactly the floats of ggml's loop for its trial; contraction is off for this file, as no multiply and
// add may fuse.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
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

#include "kernels/cpu/avx2_lanes.h"
#define LOWBIT_IQ2_AVX2 1
#endif

namespace lowbit::ggml::iq2 {

#if LOWBIT_IQ2_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

LOWBIT_AVX2 void round_trials_avx2(const float* xval, int n, const float* ids, int count, uint32_t* keys) {
  round_trials_lanes<8>(xval, n, ids, count, keys);
}

// trial_sums_lanes<8>'s floats, q = 2l+1 picked by vpermilps from the level in the key's bits 2j, 2j + 1.
LOWBIT_AVX2 void trial_sums_avx2(const float* weight, const float* xval, int n, const uint32_t* keys, int count,
                                 float* sumqx, float* sumq2) {
  const __m256 odd = _mm256_setr_ps(1.f, 3.f, 5.f, 5.f, 1.f, 3.f, 5.f, 5.f);
  for (int first = 0; first < count; first += 8) {
    __m256 qx = _mm256_setzero_ps(), q2 = _mm256_setzero_ps();
    for (int k = 0; k < n / 8; ++k) {
      const __m256i key = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + k * kTrialStride + first));
      for (int j = 0; j < 8; ++j) {
        const int i = 8 * k + j;
        const __m256 q = _mm256_permutevar_ps(odd, _mm256_srli_epi32(key, 2 * j));
        const float w = weight[i];
        qx = _mm256_add_ps(qx, _mm256_mul_ps(_mm256_set1_ps(w * xval[i]), q));
        q2 = _mm256_add_ps(q2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), q), q));
      }
    }
    _mm256_storeu_ps(sumqx + first, qx);
    _mm256_storeu_ps(sumq2 + first, q2);
  }
}

// Helpers as functions, not lambdas: clang does not give a lambda its enclosing function's target.
// 8 level bytes as 32-bit lanes.
LOWBIT_AVX2 inline __m256i level_bytes(const uint8_t* levels) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(levels)));
}

// nearest_at_scales_avx2's tables of terms, one per vector of 8 scales: value j's (j >= 2) term vector of
// level l at byte kTermStride * j + kLaneByte * l (SearchTables::kLaneByte: each vector within one cache line),
// so the lane byte of a candidate is the offset of its term; and at kPairs + kLaneByte * (l0 + 4 l1) the
// sums of values 0's and 1's terms (a candidate's first addition, the same float however early it is
// done), found at the lane bytes' offset b0 + 4 b1.
constexpr int kTermStride = 192;
constexpr int kPairs = 8 * kTermStride;
constexpr int kTermTable = kPairs + 11 * 64;  // pairs at 65 (l0 + 4 l1) <= 650, each within one cache line
static_assert(SearchTables::kLaneByte * 2 + 32 <= kTermStride && SearchTables::kLaneByte * 10 + 32 <= 11 * 64);

LOWBIT_AVX2 inline __m256 term_vector(const unsigned char* table, int offset) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(table + offset));
}

// The term table of 8 scales: (w*diff)*diff, diff = scale * q - x, each rounded as ggml rounds it. Values
// 0 and 1 only as their pairs' sums (the search reads no single term of theirs).
LOWBIT_AVX2 inline __m256 term_of(__m256 scaled, float x, float waux) {
  const __m256 diff = _mm256_sub_ps(scaled, _mm256_set1_ps(x));
  return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux), diff), diff);
}
LOWBIT_AVX2 inline void fill_term_table(__m256 scale, const float* xval, const float* waux, unsigned char* table) {
  __m256 first_terms[2][3];
  for (int l = 0; l < 3; ++l) {
    const __m256 scaled = _mm256_mul_ps(scale, _mm256_set1_ps(float(2 * l + 1)));  // scale * q
    for (int j = 0; j < 2; ++j) first_terms[j][l] = term_of(scaled, xval[j], waux[j]);
    for (int j = 2; j < 8; ++j)
      _mm256_storeu_ps(reinterpret_cast<float*>(table + kTermStride * j + SearchTables::kLaneByte * l),
                       term_of(scaled, xval[j], waux[j]));
  }
  for (int l0 = 0; l0 < 3; ++l0)
    for (int l1 = 0; l1 < 3; ++l1)
      _mm256_storeu_ps(reinterpret_cast<float*>(table + kPairs + SearchTables::kLaneByte * (l0 + 4 * l1)),
                       _mm256_add_ps(first_terms[0][l0], first_terms[1][l1]));
}

// Keeps candidate `c_lanes` where its distance is strictly below the best (false for NaN, as ggml's).
LOWBIT_AVX2 inline void keep_better(__m256 d2, __m256i c_lanes, __m256& best_d2, __m256i& best_c) {
  const __m256 better = _mm256_cmp_ps(d2, best_d2, _CMP_LT_OQ);
  best_d2 = _mm256_min_ps(d2, best_d2);  // d2 where d2 < best_d2, else best_d2: the strict update
  best_c = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_c), _mm256_castsi256_ps(c_lanes), better));
}

// One pass over a list for `kVectors` (1 or 2) vectors of scales, whose term tables lie kTermTable apart:
// the candidates' level bytes are loaded once for both. A candidate's distance adds its terms in ggml's
// order (from the pair of values 0 and 1: terms are products of a square root and a square, so 0 + the
// first term is that term).
template <int kVectors>
LOWBIT_AVX2 inline void search_term_tables(const unsigned char* table, const uint8_t* lane_levels, int count,
                                           __m256i* best_c) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  __m256 best_d2[2] = {_mm256_set1_ps(FLT_MAX), _mm256_set1_ps(FLT_MAX)};
  best_c[0] = best_c[1] = _mm256_set1_epi32(-1);
  __m256i c_lanes = _mm256_setzero_si256();
  const uint8_t* chunk = lane_levels;
  for (int start = 0; start < count; start += kChunk, chunk += 8 * kChunk) {
    const int in_chunk = count - start < kChunk ? count - start : kChunk;
    for (int c = 0; c < in_chunk; ++c) {
      const uint8_t* at = chunk + c;
      const int pair = kPairs + at[0] + 4 * at[kChunk];
      __m256 d2[2];
      for (int v = 0; v < kVectors; ++v) d2[v] = term_vector(table + kTermTable * v, pair);
      for (int j = 2; j < 8; ++j) {
        const int offset = kTermStride * j + at[j * kChunk];
        for (int v = 0; v < kVectors; ++v) d2[v] = _mm256_add_ps(d2[v], term_vector(table + kTermTable * v, offset));
      }
      for (int v = 0; v < kVectors; ++v) keep_better(d2[v], c_lanes, best_d2[v], best_c[v]);
      c_lanes = _mm256_add_epi32(c_lanes, _mm256_set1_epi32(1));
    }
  }
}

// SearchKernels::nearest_at_scales, 8 scales per vector: nearest_at_scales_lanes<8>'s floats, from term
// tables (above): a candidate costs 8 byte loads, an lea and 7 adds with a memory operand per vector of
// scales, a compare, a min and a blend. Runs of 9 to 16 scales take one pass with two vectors.
LOWBIT_AVX2 void nearest_at_scales_avx2(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                        const float* scales, int count_scales, int* best) {
  alignas(64) unsigned char table[2 * kTermTable];
  for (int first = 0; first < count_scales; first += 16) {
    const int vectors = count_scales - first > 8 ? 2 : 1;
    for (int v = 0; v < vectors; ++v) {
      // Lanes past the scales: scale 0 (not loaded), their results ignored.
      const __m256i in_run = _mm256_cmpgt_epi32(_mm256_set1_epi32(count_scales - first - 8 * v),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
      fill_term_table(_mm256_maskload_ps(scales + first + 8 * v, in_run), xval, waux, table + kTermTable * v);
    }
    __m256i best_c[2];
    if (vectors == 2) {
      search_term_tables<2>(table, lane_levels, count, best_c);
    } else {
      search_term_tables<1>(table, lane_levels, count, best_c);
    }
    alignas(32) int found[16];
    _mm256_store_si256(reinterpret_cast<__m256i*>(found), best_c[0]);
    _mm256_store_si256(reinterpret_cast<__m256i*>(found + 8), best_c[1]);
    const int lanes = count_scales - first < 16 ? count_scales - first : 16;
    for (int lane = 0; lane < lanes; ++lane) best[first + lane] = found[lane];
  }
}

using cpu::avx2::bits_of;
using cpu::avx2::lanes_of;

// SearchKernels::nearest_key_at_scale, 8 candidates per vector (as the AVX-512 kernel): the first lane
// at the least distance below the best so far is the one a sequential scan keeps.
LOWBIT_AVX2 int nearest_key_at_scale_avx2(const uint32_t* candidate_keys, int count, const float* xval,
                                          const float* waux, float scale) {
  const __m256 scaled = _mm256_setr_ps(scale * 1.f, scale * 3.f, scale * 5.f, scale * 5.f, scale * 1.f, scale * 3.f,
                                       scale * 5.f, scale * 5.f);
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += 8) {
    const int in_list = count - first < 8 ? count - first : 8;
    // Lanes past the list: masked off (no load there, 0 read).
    const __m256i in_list_lanes = _mm256_cmpgt_epi32(_mm256_set1_epi32(in_list), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    const __m256i keys = _mm256_maskload_epi32(reinterpret_cast<const int*>(candidate_keys + first), in_list_lanes);
    __m256 d2 = _mm256_setzero_ps();
    for (int j = 0; j < 8; ++j) {
      const __m256i level = _mm256_srli_epi32(keys, 2 * j);  // vpermilps reads bits 0, 1
      const __m256 diff = _mm256_sub_ps(_mm256_permutevar_ps(scaled, level), _mm256_set1_ps(xval[j]));
      d2 = _mm256_add_ps(d2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[j]), diff), diff));  // (w*diff)*diff
    }
    const unsigned better = bits_of(_mm256_cmp_ps(d2, _mm256_set1_ps(best_d2), _CMP_LT_OQ)) & ((1u << in_list) - 1);
    cpu::avx2::keep_first_least(d2, better, first, best_d2, best);
  }
  return best;
}

// SearchKernels::nearest_lanes_at_scale, 8 candidates per vector: value j's 3 terms (one per level, in
// both 128-bit halves) computed once, then per value one vpermilps by the candidates' level bytes and an
// add, in ggml's order (from the first term instead of 0: terms are products of a square root and a square).
LOWBIT_AVX2 int nearest_lanes_at_scale_avx2(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                            float scale) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  const __m256 scaled = _mm256_setr_ps(scale * 1.f, scale * 3.f, scale * 5.f, scale * 5.f, scale * 1.f, scale * 3.f,
                                       scale * 5.f, scale * 5.f);
  __m256 term[8];
  for (int j = 0; j < 8; ++j) {
    const __m256 diff = _mm256_sub_ps(scaled, _mm256_set1_ps(xval[j]));
    term[j] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[j]), diff), diff);  // (w*diff)*diff
  }
  // Each lane keeps the first least distance among its candidates (lane, lane + 8, ...); the least over
  // the lanes, at the lowest candidate among ties, is then the first least of the list.
  __m256 best_d2 = _mm256_set1_ps(FLT_MAX);
  __m256i best_c = _mm256_set1_epi32(-1), c_lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int first = 0; first < count; first += 8) {
    // 8 level bytes of value j: within the chunk (its bytes past the list's end are 0).
    const uint8_t* levels = lane_levels + (first / kChunk) * 8 * kChunk + first % kChunk;
    __m256 d2 = _mm256_permutevar_ps(term[0], level_bytes(levels));
    for (int j = 1; j < 8; ++j) d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(term[j], level_bytes(levels + j * kChunk)));
    __m256 better = _mm256_cmp_ps(d2, best_d2, _CMP_LT_OQ);  // false for NaN, as ggml's
    if (count - first < 8)
      better = _mm256_and_ps(better, _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), c_lanes)));
    best_d2 = _mm256_blendv_ps(best_d2, d2, better);
    best_c = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_c), _mm256_castsi256_ps(c_lanes), better));
    c_lanes = _mm256_add_epi32(c_lanes, _mm256_set1_epi32(8));
  }
  alignas(32) float lane_d2[8];
  alignas(32) int lane_c[8];
  _mm256_store_ps(lane_d2, best_d2);
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_c), best_c);
  float least = FLT_MAX;
  int best = -1;
  for (int lane = 0; lane < 8; ++lane) {
    // A lane that kept none holds FLT_MAX and never wins.
    if (lane_d2[lane] < least || (lane_d2[lane] == least && lane_c[lane] >= 0 && lane_c[lane] < best)) {
      least = lane_d2[lane];
      best = lane_c[lane];
    }
  }
  return best;
}

// The AVX-512 kernel's subgroup_terms, 8 lanes: the 24 term vectors and the margin of
// nearest_by_differences (ggml_iq2_search_avx512.cpp gives the bound); `fast` as mask bits.
LOWBIT_AVX2 inline __m256 subgroup_terms(__m256 scale, const float* xval, const float* waux, __m256* term,
                                         unsigned& fast) {
  __m256 total[3];
  for (int l = 0; l < 3; ++l) {
    const __m256 scaled = _mm256_mul_ps(scale, _mm256_set1_ps(float(2 * l + 1)));  // scale * q
    for (int j = 0; j < 8; ++j) {
      const __m256 diff = _mm256_sub_ps(scaled, _mm256_set1_ps(xval[j]));
      term[3 * j + l] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[j]), diff), diff);  // (w*diff)*diff
      total[l] = j ? _mm256_add_ps(total[l], term[3 * j + l]) : term[l];
    }
  }
  const __m256 sum = _mm256_add_ps(_mm256_add_ps(total[0], total[1]), total[2]);
  fast = bits_of(_mm256_cmp_ps(sum, _mm256_set1_ps(0x1p100f), _CMP_LE_OQ));
  return _mm256_add_ps(_mm256_mul_ps(sum, _mm256_set1_ps(0x1p-16f)), _mm256_set1_ps(0x1p-120f));
}

// The AVX-512 kernel's nearest_by_differences, 8 lanes: returns the bits of the `run` lanes where two
// candidates come within the margin.
template <int M>
LOWBIT_AVX2 inline unsigned nearest_by_differences(const __m256* term, const uint8_t* pairs, const uint32_t* candidate_keys,
                                                   uint32_t count, __m256 run, unsigned run_bits, __m256 margin,
                                                   __m256i& best) {
  constexpr int kPairBytes = 2 * SearchTables::kMaxDiffering;
  __m256 least = _mm256_set1_ps(__builtin_inff()), second = least;
  for (uint32_t i = 0; i < count; ++i, pairs += kPairBytes) {
    __m256 d = _mm256_sub_ps(term[pairs[0]], term[pairs[1]]);
    for (int p = 1; p < M; ++p) d = _mm256_add_ps(d, _mm256_sub_ps(term[pairs[2 * p]], term[pairs[2 * p + 1]]));
    const __m256 better = _mm256_and_ps(_mm256_cmp_ps(d, least, _CMP_LT_OQ), run);
    second = _mm256_min_ps(second, _mm256_max_ps(d, least));  // the least of all but the least
    least = _mm256_min_ps(least, d);  // (not a blend by `better`: keeps the compare out of the loop's chain)
    best = _mm256_castps_si256(
        _mm256_blendv_ps(_mm256_castsi256_ps(best), _mm256_castsi256_ps(_mm256_set1_epi32(int(candidate_keys[i]))), better));
  }
  return bits_of(_mm256_cmp_ps(second, _mm256_add_ps(least, margin), _CMP_LE_OQ)) & run_bits;
}

// SearchKernels::all_trials, 8 trials per vector: the AVX-512 kernel's method (all_trials_avx512), lane
// for lane the same floats.
LOWBIT_AVX2 int all_trials_avx2(const SearchTables& t, const float* xval, const float* waux, const float* weight, int n,
                                const float* ids, const float* scales, int count, uint32_t* keys, uint32_t* off_grid,
                                float* sumqx, float* sumq2) {
  const int subgroups = n / 8;
  for (int k = 0; k < subgroups; ++k) off_grid[k] = 0;
  const int32_t* by_key = t.by_key.data();
  for (int first = 0; first < count; first += 8) {
    const __m256 id = _mm256_loadu_ps(ids + first);
    const __m256 scale = _mm256_loadu_ps(scales + first);
    const int used = count - first < 8 ? count - first : 8;
    const unsigned valid = (1u << used) - 1;
    __m256i resolved[4];
    for (int k = 0; k < subgroups; ++k) {
      const float* xv = xval + 8 * k;
      __m256i key = _mm256_setzero_si256();
      for (int j = 0; j < 8; ++j) {
        const __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_mul_ps(id, _mm256_set1_ps(xv[j])),
                                                                               _mm256_set1_ps(1.f)));
        const __m256 shifted = _mm256_add_ps(half, _mm256_set1_ps(12582912.f));
        __m256i level = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                                         _mm256_set1_epi32(0x00400000));
        level = _mm256_min_epi32(_mm256_max_epi32(level, _mm256_setzero_si256()), _mm256_set1_epi32(2));
        key = _mm256_or_si256(key, _mm256_sll_epi32(level, _mm_cvtsi32_si128(2 * j)));
      }
      alignas(32) uint32_t lane_key[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(lane_key), key);
      __m256i chosen = key;
      unsigned off = 0;
      alignas(32) __m256 term[24];  // term[3j + l]
      bool have_terms = false;
      __m256 margin = _mm256_setzero_ps();
      unsigned fast = 0;
      for (unsigned left = valid; left;) {
        const uint32_t c = lane_key[__builtin_ctz(left)];
        const unsigned run_bits = bits_of(_mm256_castsi256_ps(_mm256_cmpeq_epi32(key, _mm256_set1_epi32(int(c))))) & left;
        left &= ~run_bits;
        const int32_t entry = by_key[c];
        if (entry >= 0) continue;
        off |= run_bits;
        const SearchTables::List& list = t.list_of(entry);
        if (list.count == 0) return kEmptyList;
        if (!have_terms) {
          margin = subgroup_terms(scale, xv, waux + 8 * k, term, fast);
          have_terms = true;
        }
        const __m256 run = lanes_of(run_bits);
        const uint32_t* candidate_keys = t.neighbour_keys.data() + list.first;
        if (list.differing && !(run_bits & ~fast)) {
          const uint8_t* pairs = t.neighbour_deltas.data() + 2 * SearchTables::kMaxDiffering * size_t(list.first);
          __m256i found = key;
          unsigned ambiguous = run_bits;
          switch (list.differing) {
            case 1: ambiguous = nearest_by_differences<1>(term, pairs, candidate_keys, list.count, run, run_bits, margin, found); break;
            case 2: ambiguous = nearest_by_differences<2>(term, pairs, candidate_keys, list.count, run, run_bits, margin, found); break;
            case 3: ambiguous = nearest_by_differences<3>(term, pairs, candidate_keys, list.count, run, run_bits, margin, found); break;
            case 4: ambiguous = nearest_by_differences<4>(term, pairs, candidate_keys, list.count, run, run_bits, margin, found); break;
          }
          if (!ambiguous) {
            chosen = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(chosen), _mm256_castsi256_ps(found), run));
            continue;
          }
        }
        const uint8_t* slots = t.neighbour_slots.data() + 8 * size_t(list.first);
        __m256 best_d2 = _mm256_set1_ps(FLT_MAX);
        __m256i best = key;
        for (uint32_t i = 0; i < list.count; ++i, slots += 8) {
          __m256 d2 = term[slots[0]];
          for (int j = 1; j < 8; ++j) d2 = _mm256_add_ps(d2, term[slots[j]]);
          const __m256 better = _mm256_and_ps(_mm256_cmp_ps(d2, best_d2, _CMP_LT_OQ), run);
          best_d2 = _mm256_blendv_ps(best_d2, d2, better);
          best = _mm256_castps_si256(
              _mm256_blendv_ps(_mm256_castsi256_ps(best), _mm256_castsi256_ps(_mm256_set1_epi32(int(candidate_keys[i]))), better));
        }
        // A lane found a candidate exactly where its least distance came out below FLT_MAX.
        if ((bits_of(_mm256_cmp_ps(best_d2, _mm256_set1_ps(FLT_MAX), _CMP_LT_OQ)) & run_bits) != run_bits) return kNoGridPoint;
        chosen = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(chosen), _mm256_castsi256_ps(best), run));
      }
      off_grid[k] |= off << first;
      resolved[k] = chosen;
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(keys + k * kTrialStride + first), chosen);
    }
    // sumqx += (w*x)*q, sumq2 += (w*q)*q, q = 2l+1, in order of the values.
    __m256 qx = _mm256_setzero_ps(), q2 = _mm256_setzero_ps();
    for (int i = 0; i < n; ++i) {
      // q = 2l+1 picked by vpermilps from the level in the key's bits 2j, 2j + 1.
      const __m256 q = _mm256_permutevar_ps(_mm256_setr_ps(1.f, 3.f, 5.f, 5.f, 1.f, 3.f, 5.f, 5.f),
                                            _mm256_srl_epi32(resolved[i / 8], _mm_cvtsi32_si128(2 * (i % 8))));
      const float w = weight[i];
      qx = _mm256_add_ps(qx, _mm256_mul_ps(_mm256_set1_ps(w * xval[i]), q));
      q2 = _mm256_add_ps(q2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), q), q));
    }
    _mm256_storeu_ps(sumqx + first, qx);
    _mm256_storeu_ps(sumq2 + first, q2);
  }
  return 0;
}

// The first_proposal of fit_unsigned_scale's passes (ggml_kquants_search.cpp), 8 values per vector:
// each lane the scalar step's floats.
LOWBIT_AVX2 int first_proposal_avx2(int i, int n, int nmax, const float* x, const uint8_t* codes, const float* weights,
                                    float sumlx, float suml2) {
  for (; i + 8 <= n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(weights + i);
    const __m256i code_int = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + i)));
    const __m256 code = _mm256_cvtepi32_ps(code_int);
    const __m256 slx = _mm256_sub_ps(_mm256_set1_ps(sumlx), _mm256_mul_ps(_mm256_mul_ps(w, xv), code));
    const __m256 sl2 = _mm256_sub_ps(_mm256_set1_ps(suml2), _mm256_mul_ps(_mm256_mul_ps(w, code), code));
    const __m256 shifted = _mm256_add_ps(_mm256_div_ps(_mm256_mul_ps(xv, sl2), slx), _mm256_set1_ps(12582912.f));
    const __m256i l = _mm256_min_epi32(
        _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                         _mm256_set1_epi32(0x00400000)),
        _mm256_set1_epi32(nmax));
    const __m256 positive = _mm256_and_ps(_mm256_cmp_ps(slx, _mm256_setzero_ps(), _CMP_GT_OQ),
                                          _mm256_cmp_ps(sl2, _mm256_setzero_ps(), _CMP_GT_OQ));
    const unsigned same = bits_of(_mm256_cmpeq_epi32(l, code_int));
    if (const unsigned proposes = bits_of(positive) & ~same) return i + __builtin_ctz(proposes);
  }
  for (; i < n; ++i) {
    const float w = weights[i];
    const float slx = sumlx - w * x[i] * float(codes[i]);
    const float sl2 = suml2 - w * float(codes[i]) * float(codes[i]);
    if (slx > 0 && sl2 > 0 && std::min(nmax, ggml_search::round_nearest_even(x[i] * sl2 / slx)) != codes[i]) return i;
  }
  return n;
}

// ggml_search::fit_unsigned_scale's scale search, n a multiple of 8: the first fit's error (a scalar
// chain of adds) and the 8 steps' (one vector) in one loop, so their chains run side by side; then the
// chosen scale's codes, with their products 8 values per vector ahead of the sums' chain of adds. Every
// float as the portable function's; its passes (refine_unsigned_codes) are shared, with 8 values per vector.
LOWBIT_AVX2 float fit_unsigned_scale_avx2(int n, int nmax, const float* x, uint8_t* codes, const float* weights) {
  if (n % 8 || n > 64) return ggml_search::fit_unsigned_scale(n, nmax, x, codes, weights);
  // max = std::max(max, x[i]) from 0: the largest value that is not NaN (or 0), in any order.
  __m256 max_lanes = _mm256_setzero_ps();
  for (int i = 0; i < n; i += 8) max_lanes = _mm256_max_ps(_mm256_loadu_ps(x + i), max_lanes);
  alignas(32) float lane_max[8];
  _mm256_store_ps(lane_max, max_lanes);
  float max = 0;
  for (int lane = 0; lane < 8; ++lane) max = lane_max[lane] > max ? lane_max[lane] : max;
  if (max < ggml_search::kGroupMaxEps) {
    for (int i = 0; i < n; ++i) codes[i] = 0;
    return 0.f;
  }
  const float first_iscale = float(nmax) / max;
  const float first_scale = 1 / first_iscale;
  const __m256 step = _mm256_setr_ps(-4.f, -3.f, -2.f, -1.f, 1.f, 2.f, 3.f, 4.f);
  const __m256 step_iscale = _mm256_div_ps(_mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(0.1f), step), _mm256_set1_ps(float(nmax))),
                                           _mm256_set1_ps(max));
  const __m256 step_scale = _mm256_div_ps(_mm256_set1_ps(1.f), step_iscale);
  const __m256i top = _mm256_set1_epi32(nmax);
  float best_mse = 0;
  __m256 mse = _mm256_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const float xi = x[i], w = weights[i];
    // The first fit's codes are bytes (a negative value's wraps, as ggml's uint8_t) and not clamped.
    const float first_code = float(uint8_t(ggml_search::round_nearest_even(first_iscale * xi)));
    const float first_diff = xi - first_scale * first_code;
    best_mse += w * first_diff * first_diff;
    const __m256 shifted = _mm256_add_ps(_mm256_mul_ps(step_iscale, _mm256_set1_ps(xi)), _mm256_set1_ps(12582912.f));
    const __m256i level = _mm256_min_epi32(
        _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                         _mm256_set1_epi32(0x00400000)),
        top);
    const __m256 diff = _mm256_sub_ps(_mm256_set1_ps(xi), _mm256_mul_ps(step_scale, _mm256_cvtepi32_ps(level)));
    mse = _mm256_add_ps(mse, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), diff), diff));
  }
  alignas(32) float step_mse[8], step_iscales[8];
  _mm256_store_ps(step_mse, mse);
  _mm256_store_ps(step_iscales, step_iscale);
  float iscale = first_iscale;
  for (int s = 0; s < 8; ++s) {
    if (step_mse[s] < best_mse) {
      best_mse = step_mse[s];
      iscale = step_iscales[s];
    }
  }
  alignas(32) int32_t level_of[64];
  alignas(32) float lx[64], l2[64];
  for (int i = 0; i < n; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(weights + i);
    const __m256 shifted = _mm256_add_ps(_mm256_mul_ps(_mm256_set1_ps(iscale), xv), _mm256_set1_ps(12582912.f));
    const __m256i level = _mm256_min_epi32(
        _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                         _mm256_set1_epi32(0x00400000)),
        top);
    const __m256 l = _mm256_cvtepi32_ps(level);
    _mm256_store_si256(reinterpret_cast<__m256i*>(level_of + i), level);
    _mm256_store_ps(lx + i, _mm256_mul_ps(_mm256_mul_ps(w, xv), l));  // (w*x)*l
    _mm256_store_ps(l2 + i, _mm256_mul_ps(_mm256_mul_ps(w, l), l));   // (w*l)*l
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    codes[i] = uint8_t(level_of[i]);
    sumlx += lx[i];
    suml2 += l2[i];
  }
  return ggml_search::refine_unsigned_codes<first_proposal_avx2>(n, nmax, x, codes, weights, sumlx, suml2);
}

}  // namespace

const SearchKernels* avx2_search_kernels() {
  static const SearchKernels kernels = [] {
    SearchKernels k = portable_search_kernels();
    k.round_trials = round_trials_avx2;
    k.trial_sums = trial_sums_avx2;
    k.nearest_at_scales = nearest_at_scales_avx2;
    k.all_trials = all_trials_avx2;
    k.nearest_key_at_scale = nearest_key_at_scale_avx2;
    k.nearest_lanes_at_scale = nearest_lanes_at_scale_avx2;
    k.fit_unsigned_scale = fit_unsigned_scale_avx2;
    return k;
  }();
  return &kernels;
}

#else

const SearchKernels* avx2_search_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq2
