// AVX2 kernels of the iq3 quantizers: every trial scale of a group at once, 8 trials per vector (the
// AVX-512 kernel's method, ggml_iq3_search_avx512.cpp, at 8 lanes), and the final re-fit's neighbour
// searches, 8 candidates per vector (the AVX-512 target runs this one too). Each lane computes exactly
// ggml's floats for its trial or candidate, so contraction is off for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>
#include <cmath>

#include "formats/ggml_iq3_search.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

#include "kernels/cpu/avx2_lanes.h"
#define LOWBIT_IQ3_AVX2 1
#endif

namespace lowbit::ggml::iq3 {

#if LOWBIT_IQ3_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

using cpu::avx2::bits_of;
using cpu::avx2::lanes_of;

// The term vector at byte `offset` of the term table. A function, not a lambda: clang does not give
// a lambda its enclosing function's target.
LOWBIT_AVX2 inline __m256 term_at(const char* terms, uint16_t offset) {
  return _mm256_load_ps(reinterpret_cast<const float*>(terms + offset));
}

// Per lane, the level code of the nearest candidate in code c's list at the lane's scale: the first strict
// minimum, as ggml's scan; the list's first candidate where no distance is below FLT_MAX (only non-finite
// input). term_table: the 4 x 8 terms of the lanes' scales. start: FLT_MAX on the lanes searched, -inf
// elsewhere (no distance, a sum of squares or NaN, compares below it, so no mask per candidate). The
// list is scanned as 4 consecutive quarters side by side (independent chains of compares); a quarter's
// minimum replaces the earlier quarters' only where strictly smaller. min(d2, best) is the strict update
// (a NaN keeps best).
LOWBIT_AVX2 inline __m256i nearest_in_list(const TrialGrid& grid, int c, const __m256* term_table, __m256 start) {
  const uint32_t begin = grid.list_begin[c], end = grid.list_begin[c + 1];
  const uint32_t quarter = (end - begin) / 4;
  const uint16_t* offset_list = grid.list_term_offsets + 4 * begin;
  const uint16_t* code_list = grid.list_codes + begin;
  const char* terms = reinterpret_cast<const char*>(term_table);
  __m256 best_d2[4];
  __m256i best[4];
  for (int h = 0; h < 4; ++h) {
    best_d2[h] = start;
    best[h] = _mm256_set1_epi32(code_list[0]);
  }
  for (uint32_t j = 0; j < quarter; ++j)
    for (int h = 0; h < 4; ++h) {
      const uint16_t* offsets = offset_list + 4 * (h * quarter + j);
      const __m256 d2 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(term_at(terms, offsets[0]), term_at(terms, offsets[1])),
                                                    term_at(terms, offsets[2])),
                                      term_at(terms, offsets[3]));
      const __m256 better = _mm256_cmp_ps(d2, best_d2[h], _CMP_LT_OQ);
      best_d2[h] = _mm256_min_ps(d2, best_d2[h]);
      best[h] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best[h]),
                                                     _mm256_castsi256_ps(_mm256_set1_epi32(code_list[h * quarter + j])), better));
    }
  for (int h = 1; h < 4; ++h) {
    const __m256 better = _mm256_cmp_ps(best_d2[h], best_d2[0], _CMP_LT_OQ);
    best_d2[0] = _mm256_min_ps(best_d2[h], best_d2[0]);
    best[0] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best[0]), _mm256_castsi256_ps(best[h]), better));
  }
  return best[0];
}

// AllTrialsFn, 8 trials per vector: the AVX-512 kernel's steps (its comments say why each is so). The
// on-grid table is read by a gather here; a unit's term table is computed whole; the list search
// (nearest_in_list) reads each candidate's 4 terms at byte offsets stored with the list; the codes are
// packed to 16 bits by packus and a permute.
LOWBIT_AVX2 void all_trials_avx2(const TrialGrid& grid, const float* xval, const float* waux, const float* weight,
                                 const float* ids, const float* scales, int count, uint16_t* codes, uint32_t* off_grid,
                                 float* sumqx, float* sumq2) {
  for (int k = 0; k < kUnits; ++k) off_grid[k] = 0;
  for (int first = 0; first < count; first += 8) {
    const __m256 id = _mm256_loadu_ps(ids + first);
    const __m256 scale = _mm256_loadu_ps(scales + first);
    const int used = count - first < 8 ? count - first : 8;
    const unsigned valid = (1u << used) - 1;
    __m256 scaled[8];  // scale * q, q = 2l + 1
    for (int l = 0; l < 8; ++l) scaled[l] = _mm256_mul_ps(scale, _mm256_set1_ps(float(2 * l + 1)));
    __m256 qx = _mm256_setzero_ps(), q2 = _mm256_setzero_ps();
    __m256i unit_code[kUnits];
    unsigned unit_off[kUnits];
    for (int k = 0; k < kUnits; ++k) {
      const float* xv = xval + 4 * k;
      __m256i code = _mm256_setzero_si256();
      for (int i = 0; i < 4; ++i) {  // clamp(nearest_int(0.5 * (id * x - 1)), 0, 7), as ggml rounds it
        const __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_mul_ps(id, _mm256_set1_ps(xv[i])), _mm256_set1_ps(1.f)));
        const __m256 shifted = _mm256_add_ps(half, _mm256_set1_ps(12582912.f));
        __m256i level = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x007fffff)),
                                         _mm256_set1_epi32(0x00400000));
        level = _mm256_min_epi32(_mm256_max_epi32(level, _mm256_setzero_si256()), _mm256_set1_epi32(7));
        code = _mm256_or_si256(code, _mm256_slli_epi32(level, 3 * i));
      }
      unit_code[k] = code;
      const __m256i words = _mm256_i32gather_epi32(reinterpret_cast<const int*>(grid.on_grid), _mm256_srli_epi32(code, 5), 4);
      const __m256i on = _mm256_and_si256(_mm256_srlv_epi32(words, _mm256_and_si256(code, _mm256_set1_epi32(31))), _mm256_set1_epi32(1));
      unit_off[k] = bits_of(_mm256_cmpeq_epi32(on, _mm256_setzero_si256())) & valid;
    }
    for (int k = 0; k < kUnits; ++k) {
      const float* xv = xval + 4 * k;
      const __m256i code = unit_code[k];
      unsigned off = unit_off[k];
      off_grid[k] |= off << first;
      __m256i chosen = code;
      if (off) {
        alignas(32) int lane_code[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane_code), code);
        // All 4 x 8 terms at once: a fixed loop costs less here than computing only those the lists read
        // (about a third), whose loop mispredicts its exits.
        alignas(32) __m256 term_table[32];
        for (int i = 0; i < 4; ++i) {
          const __m256 x = _mm256_set1_ps(xv[i]), w = _mm256_set1_ps(waux[4 * k + i]);
          for (int l = 0; l < 8; ++l) {
            const __m256 diff = _mm256_sub_ps(scaled[l], x);
            term_table[8 * i + l] = _mm256_mul_ps(_mm256_mul_ps(w, diff), diff);
          }
        }
        while (off) {
          const int c = lane_code[__builtin_ctz(off)];
          const unsigned run = bits_of(_mm256_cmpeq_epi32(code, _mm256_set1_epi32(c))) & off;
          const __m256 run_lanes = lanes_of(run);
          const __m256 start = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_set1_ps(FLT_MAX), run_lanes);
          const __m256i best = nearest_in_list(grid, c, term_table, start);
          chosen = _mm256_castps_si256(
              _mm256_blendv_ps(_mm256_castsi256_ps(chosen), _mm256_castsi256_ps(best), run_lanes));
          off &= ~run;
        }
      }
      // Codes < 4096: packus keeps them; the permute puts the two 128-bit halves' four codes side by side.
      const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(chosen, chosen), 0x08);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + kTrialLanes * k + first), _mm256_castsi256_si128(packed));
      for (int i = 0; i < 4; ++i) {  // sumqx += (w*x)*q, sumq2 += (w*q)*q, value by value
        const __m256i level = _mm256_and_si256(_mm256_srli_epi32(chosen, 3 * i), _mm256_set1_epi32(7));
        const __m256 q = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_add_epi32(level, level), _mm256_set1_epi32(1)));
        const float w = weight[4 * k + i];
        qx = _mm256_add_ps(qx, _mm256_mul_ps(_mm256_set1_ps(w * xv[i]), q));
        q2 = _mm256_add_ps(q2, _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(w), q), q));
      }
    }
    _mm256_storeu_ps(sumqx + first, qx);
    _mm256_storeu_ps(sumq2 + first, q2);
  }
}

// The distances of candidates [first, first + 8) of a list: each coordinate's term picked by the
// candidate's 3-bit level (vpermps reads an index's low 3 bits: the level at coordinate i, shifted
// down), summed in ggml's order; +Inf past the list's end. A function, not a lambda: clang does not
// give a lambda its enclosing function's target.
LOWBIT_AVX2 inline __m256 candidate_distances(const __m256 term[4], const uint16_t* code_list, int count, int first) {
  const __m256i cand = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(code_list + first)));
  __m256 d2 = _mm256_permutevar8x32_ps(term[0], cand);
  for (int i = 1; i < 4; ++i) d2 = _mm256_add_ps(d2, _mm256_permutevar8x32_ps(term[i], _mm256_srli_epi32(cand, 3 * i)));
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 in_list = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count - first), lane));
  return _mm256_blendv_ps(_mm256_set1_ps(INFINITY), d2, in_list);
}

// The nearest of code c's candidates at one scale, 8 candidates per vector: term_i holds the 8 terms
// (waux[i] * diff) * diff of coordinate i, one per level, so a candidate's distance is 4 permutes and
// 3 adds in ggml's order. First the least distance (min(d2, least) skips a NaN, as ggml's strict
// compare), then the first candidate at it: the one ggml's scan keeps. None below FLT_MAX (only
// non-finite input): the list's first, as the portable code.
LOWBIT_AVX2 int nearest_at_one_scale(const TrialGrid& grid, int c, const __m256 term[4]) {
  const uint32_t begin = grid.list_begin[c];
  const int count = int(grid.list_begin[c + 1] - begin);
  const uint16_t* code_list = grid.list_codes + begin;
  __m256 least = _mm256_set1_ps(FLT_MAX);
  for (int first = 0; first < count; first += 8)
    least = _mm256_min_ps(candidate_distances(term, code_list, count, first), least);
  least = _mm256_min_ps(least, _mm256_permute2f128_ps(least, least, 1));
  least = _mm256_min_ps(least, _mm256_permute_ps(least, 0x4e));
  least = _mm256_min_ps(least, _mm256_permute_ps(least, 0xb1));
  if (!(_mm256_cvtss_f32(least) < FLT_MAX)) return code_list[0];
  for (int first = 0;; first += 8)
    if (const unsigned at = bits_of(_mm256_cmp_ps(candidate_distances(term, code_list, count, first), least, _CMP_EQ_OQ)))
      return code_list[first + __builtin_ctz(at)];
}

// SnapUnitsFn: the 32 values' levels at id in 4 vectors, packed into the 8 units' codes by adds of
// shifted levels; then per unit a scalar on-grid test and, off the grid, the one-scale search.
LOWBIT_AVX2 void snap_units_avx2(const TrialGrid& grid, const float* xval, const float* waux, float id, float scale,
                                 unsigned units, int8_t* L) {
  const __m256 inverse = _mm256_set1_ps(id);
  const __m256i shift = _mm256_setr_epi32(0, 3, 6, 9, 0, 3, 6, 9);
  __m256i shifted_levels[4];
  for (int j = 0; j < 4; ++j) {  // clamp(nearest_int(0.5 * (id * x - 1)), 0, 7), as ggml rounds it
    const __m256 x = _mm256_loadu_ps(xval + 8 * j);
    const __m256 half = _mm256_mul_ps(_mm256_set1_ps(0.5f), _mm256_sub_ps(_mm256_mul_ps(inverse, x), _mm256_set1_ps(1.f)));
    const __m256 rounded = _mm256_add_ps(half, _mm256_set1_ps(12582912.f));
    __m256i level = _mm256_sub_epi32(_mm256_and_si256(_mm256_castps_si256(rounded), _mm256_set1_epi32(0x007fffff)),
                                     _mm256_set1_epi32(0x00400000));
    level = _mm256_min_epi32(_mm256_max_epi32(level, _mm256_setzero_si256()), _mm256_set1_epi32(7));
    shifted_levels[j] = _mm256_sllv_epi32(level, shift);
  }
  // hadd twice: lanes 0..3 hold units 0, 2, 4, 6 and lanes 4..7 units 1, 3, 5, 7.
  const __m256i codes = _mm256_hadd_epi32(_mm256_hadd_epi32(shifted_levels[0], shifted_levels[1]),
                                          _mm256_hadd_epi32(shifted_levels[2], shifted_levels[3]));
  alignas(32) int32_t lane_codes[8];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lane_codes), codes);
  const __m256 scaled = _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_setr_ps(1, 3, 5, 7, 9, 11, 13, 15));
  for (; units; units &= units - 1) {
    const int k = __builtin_ctz(units);
    int c = lane_codes[(k & 1) * 4 + k / 2];
    if (!((grid.on_grid[c >> 5] >> (c & 31)) & 1)) {
      __m256 term[4];
      for (int i = 0; i < 4; ++i) {
        const __m256 diff = _mm256_sub_ps(scaled, _mm256_set1_ps(xval[4 * k + i]));
        term[i] = _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(waux[4 * k + i]), diff), diff);
      }
      c = nearest_at_one_scale(grid, c, term);
    }
    for (int i = 0; i < 4; ++i) L[4 * k + i] = int8_t((c >> (3 * i)) & 7);
  }
}

}  // namespace

AllTrialsFn avx2_all_trials() { return all_trials_avx2; }
SnapUnitsFn avx2_snap_units() { return snap_units_avx2; }

#else

AllTrialsFn avx2_all_trials() { return nullptr; }
SnapUnitsFn avx2_snap_units() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq3
