// AVX-512 all-trials kernel of the iq3 quantizers: 16 trial scales per vector, one per lane. Each lane
// computes its trial's weighted distances exactly as the scalar loop (ggml's iq3_find_best_neighbour):
// values in order, every product rounded before it is added; so no FMA may appear and contraction is
// off for this file (see ggml_kquants_search_avx512.cpp). The final re-fit's searches at one scale run
// the AVX2 kernel (ggml_iq3_search_avx2.cpp), which the AVX-512 target inherits.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>

#include "formats/ggml_iq3_search.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_IQ3_AVX512 1
#endif

namespace lowbit::ggml::iq3 {

#if LOWBIT_IQ3_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f")))

// Every trial of a group, 16 trials per vector (ggml_iq3_search.h). Per unit and vector: the level codes
// of all 16 trials, which are on the grid, and for each distinct off-grid code among the lanes the
// neighbour search of ggml's list run once for all lanes holding that code. A candidate's distance at a
// lane's scale is a sum of 4 terms waux[i] * diff * diff, diff = scale * (2l + 1) - xval[i], which
// depend only on the coordinate, the level and the scale: the 4 x 8 terms are computed once per unit
// (each rounded as ggml rounds it) and a candidate adds its 4 in ggml's order.
LOWBIT_AVX512 void all_trials_avx512(const TrialGrid& grid, const float* xval, const float* waux, const float* weight,
                                     const float* ids, const float* scales, int count, uint16_t* codes,
                                     uint32_t* off_grid, float* sumqx, float* sumq2) {
  for (int k = 0; k < kUnits; ++k) off_grid[k] = 0;
  for (int first = 0; first < count; first += 16) {
    const __m512 id = _mm512_loadu_ps(ids + first);
    const __m512 scale = _mm512_loadu_ps(scales + first);
    const int used = count - first < 16 ? count - first : 16;
    const __mmask16 valid = __mmask16((1u << used) - 1);
    __m512 scaled[8];  // scale * q, q = 2l + 1: the product ggml's search makes
    for (int l = 0; l < 8; ++l) scaled[l] = _mm512_mul_ps(scale, _mm512_set1_ps(float(2 * l + 1)));
    __m512 qx = _mm512_setzero_ps(), q2 = _mm512_setzero_ps();
    // Every unit's level codes first, and which are on the grid (the table lookups of all units are
    // independent, so their latencies overlap).
    __m512i unit_code[kUnits];
    __mmask16 unit_off[kUnits];
    __m512i bits[8];  // the 4096-bit on-grid table in registers: word w of it is lane w % 16 of bits[w / 16]
    for (int v = 0; v < 8; ++v) bits[v] = _mm512_loadu_si512(grid.on_grid + 16 * v);
    for (int k = 0; k < kUnits; ++k) {
      const float* xv = xval + 4 * k;
      // Levels clamp(nearest_int(0.5 * (id * x - 1)), 0, 7): ggml's nearest_int adds 1.5 * 2^23 and
      // reads the mantissa.
      __m512i code = _mm512_setzero_si512();
      for (int i = 0; i < 4; ++i) {
        const __m512 half = _mm512_mul_ps(_mm512_set1_ps(0.5f), _mm512_sub_ps(_mm512_mul_ps(id, _mm512_set1_ps(xv[i])), _mm512_set1_ps(1.f)));
        const __m512 shifted = _mm512_add_ps(half, _mm512_set1_ps(12582912.f));
        __m512i level = _mm512_sub_epi32(_mm512_and_si512(_mm512_castps_si512(shifted), _mm512_set1_epi32(0x007fffff)),
                                         _mm512_set1_epi32(0x00400000));
        level = _mm512_min_epi32(_mm512_max_epi32(level, _mm512_setzero_si512()), _mm512_set1_epi32(7));
        code = _mm512_or_si512(code, _mm512_slli_epi32(level, 3 * i));
      }
      unit_code[k] = code;
      // Word code / 32 of the table (4 two-register permutes on its low 5 bits, picked by bits 5 and 6),
      // then bit code % 32 of it: cheaper than a gather.
      const __m512i word = _mm512_srli_epi32(code, 5);
      const __m512i pick[4] = {_mm512_permutex2var_epi32(bits[0], word, bits[1]), _mm512_permutex2var_epi32(bits[2], word, bits[3]),
                               _mm512_permutex2var_epi32(bits[4], word, bits[5]), _mm512_permutex2var_epi32(bits[6], word, bits[7])};
      const __mmask16 high = _mm512_test_epi32_mask(word, _mm512_set1_epi32(64));
      const __mmask16 odd = _mm512_test_epi32_mask(word, _mm512_set1_epi32(32));
      const __m512i words = _mm512_mask_mov_epi32(_mm512_mask_mov_epi32(pick[0], odd, pick[1]), high,
                                                  _mm512_mask_mov_epi32(pick[2], odd, pick[3]));
      const __m512i on = _mm512_srlv_epi32(words, _mm512_and_si512(code, _mm512_set1_epi32(31)));
      unit_off[k] = _mm512_mask_testn_epi32_mask(valid, on, _mm512_set1_epi32(1));
    }
    for (int k = 0; k < kUnits; ++k) {
      const float* xv = xval + 4 * k;
      const __m512i code = unit_code[k];
      __mmask16 off = unit_off[k];
      off_grid[k] |= uint32_t(off) << first;
      __m512i chosen = code;
      if (off) {
        // The terms, computed as the candidate lists of the unit's codes first need them.
        alignas(64) __m512 term[32];
        uint32_t have = 0;
        __m512 x[4], w[4];
        for (int i = 0; i < 4; ++i) {
          x[i] = _mm512_set1_ps(xv[i]);
          w[i] = _mm512_set1_ps(waux[4 * k + i]);
        }
        while (off) {
          const int c = _mm_cvtsi128_si32(
              _mm512_castsi512_si128(_mm512_permutexvar_epi32(_mm512_set1_epi32(__builtin_ctz(unsigned(off))), code)));
          const __mmask16 run = _mm512_mask_cmpeq_epi32_mask(off, code, _mm512_set1_epi32(c));
          for (uint32_t need = grid.slot_mask[c] & ~have; need; need &= need - 1) {
            const int slot = __builtin_ctz(need);
            const __m512 diff = _mm512_sub_ps(scaled[slot & 7], x[slot >> 3]);
            term[slot] = _mm512_mul_ps(_mm512_mul_ps(w[slot >> 3], diff), diff);  // (w*diff)*diff
          }
          have |= grid.slot_mask[c];
          const uint32_t begin = grid.list_begin[c], end = grid.list_begin[c + 1];
          // The first strict minimum per lane (NaN compares false, as in ggml); lanes where no distance
          // is below FLT_MAX (only non-finite input) keep the list's first point. The list is scanned as
          // 4 consecutive quarters side by side (independent chains of compares); each quarter's first
          // minimum, taken over the earlier quarters' only where strictly smaller, is the whole list's.
          const uint32_t quarter = (end - begin) / 4;
          const uint32_t* slot_list = grid.list_slots + begin;
          const uint16_t* code_list = grid.list_codes + begin;
          __m512 best_d2[4];
          __m512i best[4];
          for (int h = 0; h < 4; ++h) {
            best_d2[h] = _mm512_set1_ps(FLT_MAX);
            best[h] = _mm512_set1_epi32(code_list[0]);
          }
          for (uint32_t j = 0; j < quarter; ++j)
            for (int h = 0; h < 4; ++h) {
              const uint32_t slots = slot_list[h * quarter + j];
              const __m512 d2 = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(term[slots & 0xff], term[(slots >> 8) & 0xff]),
                                                            term[(slots >> 16) & 0xff]),
                                              term[slots >> 24]);
              const __mmask16 better = _mm512_mask_cmp_ps_mask(run, d2, best_d2[h], _CMP_LT_OQ);
              best_d2[h] = _mm512_mask_mov_ps(best_d2[h], better, d2);
              best[h] = _mm512_mask_set1_epi32(best[h], better, code_list[h * quarter + j]);
            }
          for (int h = 1; h < 4; ++h) {
            const __mmask16 better = _mm512_mask_cmp_ps_mask(run, best_d2[h], best_d2[0], _CMP_LT_OQ);
            best_d2[0] = _mm512_mask_mov_ps(best_d2[0], better, best_d2[h]);
            best[0] = _mm512_mask_mov_epi32(best[0], better, best[h]);
          }
          const __m512i best_code = best[0];
          chosen = _mm512_mask_mov_epi32(chosen, run, best_code);
          off = __mmask16(off & ~run);
        }
      }
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(codes + kTrialLanes * k + first), _mm512_cvtepi32_epi16(chosen));
      // The unit's 4 values into every trial's sums, in ggml's order: sumqx += (w*x)*q, sumq2 += (w*q)*q.
      for (int i = 0; i < 4; ++i) {
        const __m512i level = _mm512_and_si512(_mm512_srli_epi32(chosen, 3 * i), _mm512_set1_epi32(7));
        const __m512 q = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_add_epi32(level, level), _mm512_set1_epi32(1)));
        const float w = weight[4 * k + i];
        qx = _mm512_add_ps(qx, _mm512_mul_ps(_mm512_set1_ps(w * xv[i]), q));
        q2 = _mm512_add_ps(q2, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w), q), q));
      }
    }
    _mm512_storeu_ps(sumqx + first, qx);
    _mm512_storeu_ps(sumq2 + first, q2);
  }
}

}  // namespace

AllTrialsFn avx512_all_trials() { return all_trials_avx512; }

#else

AllTrialsFn avx512_all_trials() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq3
