// AVX2 split search of iq1_s, for CPUs without AVX-512: the AVX-512 kernel's method (ggml_iq1_search_avx512.cpp)
// with 8 values of i2 per vector, one split per lane. Each lane computes its split's sums exactly as the
// scalar loop (ggml's): every product rounded before it is added, in the same order, so no FMA may appear
// and contraction is off for this file. A vector of splits where no lane beats the best so far changes
// nothing in ggml's sequential scan and is skipped; otherwise its lanes are replayed in ggml's order.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include <cfloat>

#include "formats/ggml_iq1_search.h"
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

LOWBIT_AVX2 Split best_split_avx2(const float* sumx, const float* sumw) {
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

}  // namespace

SplitSearchFn avx2_split_search() { return best_split_avx2; }

#else

SplitSearchFn avx2_split_search() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq1
