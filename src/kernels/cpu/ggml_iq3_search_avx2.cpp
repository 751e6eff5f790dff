// AVX2 kernels of the iq3 quantizers, for CPUs without AVX-512: the AVX-512 kernels' method
// (ggml_iq3_search_avx512.cpp) at 8 lanes. Every trial scale of a group at once, 8 trials per vector,
// and the neighbour search of the final re-fit, 8 candidates per vector; each lane computes exactly
// ggml's floats for its trial or candidate, so contraction is off for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>

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

// (w * diff) * diff, the term ggml adds, for the candidates' levels at one coordinate.
LOWBIT_AVX2 inline __m256 term(__m256 table, __m256i level, __m256 x, __m256 w) {
  const __m256 diff = _mm256_sub_ps(_mm256_permutevar8x32_ps(table, level), x);
  return _mm256_mul_ps(_mm256_mul_ps(w, diff), diff);
}

// NearestCandidateFn: each 16-candidate chunk of lane_levels as two vectors of 8.
LOWBIT_AVX2 int nearest_candidate_avx2(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                       const float* scaled) {
  const __m256 table = _mm256_loadu_ps(scaled);  // scale * (2l + 1), picked per lane by its level
  __m256 x[4], w[4];
  for (int i = 0; i < 4; ++i) {
    x[i] = _mm256_set1_ps(xval[i]);
    w[i] = _mm256_set1_ps(waux[i]);
  }
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int chunk = 0; chunk < count; chunk += kLaneChunk, lane_levels += 4 * kLaneChunk)
    for (int half = 0; half < 2 && chunk + 8 * half < count; ++half) {
      const int first = chunk + 8 * half;
      __m256 d2 = _mm256_setzero_ps();
      for (int i = 0; i < 4; ++i) {
        const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(lane_levels + i * kLaneChunk + 8 * half));
        d2 = _mm256_add_ps(d2, term(table, _mm256_cvtepu8_epi32(bytes), x[i], w[i]));
      }
      const int in_list = count - first < 8 ? count - first : 8;
      // Lanes below the best so far (a NaN compares false, as in the scalar loop).
      const unsigned better = bits_of(_mm256_cmp_ps(d2, _mm256_set1_ps(best_d2), _CMP_LT_OQ)) & ((1u << in_list) - 1);
      cpu::avx2::keep_first_least(d2, better, first, best_d2, best);
    }
  return best;
}

// AllTrialsFn, 8 trials per vector: the AVX-512 kernel's steps (its comments say why each is so). The
// on-grid table is read by a gather here; the codes are packed to 16 bits by packus and a permute.
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
        alignas(32) __m256 term_table[32];
        alignas(32) int lane_code[8];
        _mm256_store_si256(reinterpret_cast<__m256i*>(lane_code), code);
        uint32_t have = 0;
        __m256 x[4], w[4];
        for (int i = 0; i < 4; ++i) {
          x[i] = _mm256_set1_ps(xv[i]);
          w[i] = _mm256_set1_ps(waux[4 * k + i]);
        }
        while (off) {
          const int c = lane_code[__builtin_ctz(off)];
          const unsigned run = bits_of(_mm256_cmpeq_epi32(code, _mm256_set1_epi32(c))) & off;
          const __m256 run_lanes = lanes_of(run);
          for (uint32_t need = grid.slot_mask[c] & ~have; need; need &= need - 1) {
            const int slot = __builtin_ctz(need);
            const __m256 diff = _mm256_sub_ps(scaled[slot & 7], x[slot >> 3]);
            term_table[slot] = _mm256_mul_ps(_mm256_mul_ps(w[slot >> 3], diff), diff);
          }
          have |= grid.slot_mask[c];
          const uint32_t begin = grid.list_begin[c], end = grid.list_begin[c + 1];
          // Four quarters of the list side by side, each its first strict minimum, then merged in order.
          const uint32_t quarter = (end - begin) / 4;
          const uint32_t* slot_list = grid.list_slots + begin;
          const uint16_t* code_list = grid.list_codes + begin;
          __m256 best_d2[4];
          __m256i best[4];
          for (int h = 0; h < 4; ++h) {
            best_d2[h] = _mm256_set1_ps(FLT_MAX);
            best[h] = _mm256_set1_epi32(code_list[0]);
          }
          for (uint32_t j = 0; j < quarter; ++j)
            for (int h = 0; h < 4; ++h) {
              const uint32_t slots = slot_list[h * quarter + j];
              const __m256 d2 = _mm256_add_ps(
                  _mm256_add_ps(_mm256_add_ps(term_table[slots & 0xff], term_table[(slots >> 8) & 0xff]), term_table[(slots >> 16) & 0xff]),
                  term_table[slots >> 24]);
              const __m256 better = _mm256_and_ps(_mm256_cmp_ps(d2, best_d2[h], _CMP_LT_OQ), run_lanes);
              best_d2[h] = _mm256_blendv_ps(best_d2[h], d2, better);
              best[h] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best[h]),
                                                             _mm256_castsi256_ps(_mm256_set1_epi32(code_list[h * quarter + j])), better));
            }
          for (int h = 1; h < 4; ++h) {
            const __m256 better = _mm256_and_ps(_mm256_cmp_ps(best_d2[h], best_d2[0], _CMP_LT_OQ), run_lanes);
            best_d2[0] = _mm256_blendv_ps(best_d2[0], best_d2[h], better);
            best[0] = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(best[0]), _mm256_castsi256_ps(best[h]), better));
          }
          chosen = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(chosen), _mm256_castsi256_ps(best[0]), run_lanes));
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

}  // namespace

NearestCandidateFn avx2_nearest_candidate() { return nearest_candidate_avx2; }
AllTrialsFn avx2_all_trials() { return all_trials_avx2; }

#else

NearestCandidateFn avx2_nearest_candidate() { return nullptr; }
AllTrialsFn avx2_all_trials() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq3
