// AVX-512 neighbour search of the iq3 quantizers: 16 candidate grid points per vector, one per lane.
// Each lane computes its candidate's weighted distance exactly as the scalar loop (ggml's
// iq3_find_best_neighbour): values in order, every product rounded before it is added; so no FMA may
// appear and contraction is off for this file (see ggml_kquants_search_avx512.cpp).
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

LOWBIT_AVX512 int nearest_candidate_avx512(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                           const float* scaled) {
  // scale * (2l + 1) for the 8 levels, picked per lane by its level: the product the scalar loop makes.
  const __m512 table = _mm512_castps256_ps512(_mm256_loadu_ps(scaled));
  __m512 x[4], w[4];
  for (int i = 0; i < 4; ++i) {
    x[i] = _mm512_set1_ps(xval[i]);
    w[i] = _mm512_set1_ps(waux[i]);
  }
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int first = 0; first < count; first += kLaneChunk, lane_levels += 4 * kLaneChunk) {
    __m512 d2 = _mm512_setzero_ps();
    for (int i = 0; i < 4; ++i) {
      const __m512i level = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(lane_levels + i * kLaneChunk)));
      const __m512 diff = _mm512_sub_ps(_mm512_permutexvar_ps(level, table), x[i]);
      d2 = _mm512_add_ps(d2, _mm512_mul_ps(_mm512_mul_ps(w[i], diff), diff));  // (w*diff)*diff
    }
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

#else

NearestCandidateFn avx512_nearest_candidate() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq3
