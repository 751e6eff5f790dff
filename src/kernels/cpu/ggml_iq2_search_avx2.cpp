// AVX2 kernels of the iq2 quantizers, for CPUs without AVX-512: every trial at once, the neighbour
// search of a run of trials and iq2_s's search of all trials in one pass (all_trials, the AVX-512
// kernel's method), 8 trials per vector (ggml_iq2_trials.h); the one-scale rounding stays the portable
// kernel's. Each lane computes exactly the floats of ggml's loop for its trial; contraction is off for
// this file, as no multiply and add may fuse.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>

#include "formats/ggml_iq2_search.h"
#include "formats/ggml_iq2_trials.h"
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
// The term vector at byte `offset` of a table.
LOWBIT_AVX2 inline __m256 term_vector(const unsigned char* table, int offset) {
  return _mm256_loadu_ps(reinterpret_cast<const float*>(table + offset));
}
// 8 level bytes as 32-bit lanes.
LOWBIT_AVX2 inline __m256i level_bytes(const uint8_t* levels) {
  return _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(levels)));
}

// SearchKernels::nearest_at_scales, 8 scales per vector: nearest_at_scales_lanes<8>'s floats, with value j's
// term vector of level l at byte 192 j + 65 l of a table (SearchTables::kLaneByte: each vector within one
// cache line), so the lane byte of a candidate is the offset of its term: a candidate costs 8 byte loads
// and 8 adds with a memory operand (no index arithmetic), a compare, a min and a blend.
LOWBIT_AVX2 void nearest_at_scales_avx2(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                        const float* scales, int count_scales, int* best) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  constexpr int kStrideJ = 192;
  static_assert(SearchTables::kLaneByte * 2 + 32 <= kStrideJ);
  alignas(64) unsigned char table[8 * kStrideJ];
  float padded[kMaxScales + 8];
  for (int m = 0; m < count_scales; ++m) padded[m] = scales[m];
  for (int m = count_scales; m < count_scales + 8; ++m) padded[m] = 1.f;  // lanes past the scales: ignored
  for (int first = 0; first < count_scales; first += 8) {
    const __m256 scale = _mm256_loadu_ps(padded + first);
    for (int l = 0; l < 3; ++l) {
      const __m256 scaled = _mm256_mul_ps(scale, _mm256_set1_ps(float(2 * l + 1)));  // scale * q
      for (int j = 0; j < 8; ++j) {
        const __m256 diff = _mm256_sub_ps(scaled, _mm256_set1_ps(xval[j]));
        _mm256_storeu_ps(reinterpret_cast<float*>(table + kStrideJ * j + SearchTables::kLaneByte * l),
                         _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[j]), diff), diff));  // (w*diff)*diff
      }
    }
    __m256 best_d2 = _mm256_set1_ps(FLT_MAX);
    __m256i best_c = _mm256_set1_epi32(-1), c_lanes = _mm256_setzero_si256();
    const uint8_t* chunk = lane_levels;
    for (int start = 0; start < count; start += kChunk, chunk += 8 * kChunk) {
      const int in_chunk = count - start < kChunk ? count - start : kChunk;
      for (int c = 0; c < in_chunk; ++c) {
        // From the first term instead of 0 + it: the same float (terms are products of a square root and a square).
        __m256 d2 = term_vector(table, kStrideJ * 0 + chunk[c]);
        for (int j = 1; j < 8; ++j) d2 = _mm256_add_ps(d2, term_vector(table, kStrideJ * j + chunk[j * kChunk + c]));
        const __m256 better = _mm256_cmp_ps(d2, best_d2, _CMP_LT_OQ);  // false for NaN, as ggml's
        best_d2 = _mm256_min_ps(d2, best_d2);  // d2 where d2 < best_d2, else best_d2: the strict update
        best_c = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best_c), _mm256_castsi256_ps(c_lanes), better));
        c_lanes = _mm256_add_epi32(c_lanes, _mm256_set1_epi32(1));
      }
    }
    alignas(32) int found[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(found), best_c);
    const int lanes = count_scales - first < 8 ? count_scales - first : 8;
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
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += 8) {
    // 8 level bytes of value j: within the chunk (its bytes past the list's end are 0).
    const uint8_t* levels = lane_levels + (first / kChunk) * 8 * kChunk + first % kChunk;
    __m256 d2 = _mm256_permutevar_ps(term[0], level_bytes(levels));
    for (int j = 1; j < 8; ++j) d2 = _mm256_add_ps(d2, _mm256_permutevar_ps(term[j], level_bytes(levels + j * kChunk)));
    const int in_list = count - first < 8 ? count - first : 8;
    const unsigned better = bits_of(_mm256_cmp_ps(d2, _mm256_set1_ps(best_d2), _CMP_LT_OQ)) & ((1u << in_list) - 1);
    cpu::avx2::keep_first_least(d2, better, first, best_d2, best);
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
    return k;
  }();
  return &kernels;
}

#else

const SearchKernels* avx2_search_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq2
