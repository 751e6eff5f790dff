// AVX-512 batch kernels for the ggml scale searches: one candidate scale per vector lane, 16 at once.
// Each lane runs exactly the scalar kernel's operations (ggml_kquants_search.cpp) in the same order:
// the loop over values stays sequential, so every lane's float sums round as ggml's do. Only the
// candidates run side by side. Part of the avx512 CPU target (cpu_kernels.cpp).
//
// No fused multiply-add may appear: ggml rounds every product before adding it. GCC contracts a*b+c
// into an FMA by default in C++ (even with -std=c++20) once the target has FMA, as AVX-512 does, and
// the intrinsics are plain vector arithmetic to it; so contraction is switched off for this file.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
// GCC 12 flags its own _mm512_undefined_* placeholders inside the intrinsics; false positives.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_GGML_AVX512 1
#endif

namespace lowbit::ggml_search {

#if LOWBIT_GGML_AVX512
namespace {

#define LOWBIT_AVX512 __attribute__((target("avx512f")))

// ggml's nearest_int per lane: add 1.5*2^23 and read the integer from the mantissa bits.
LOWBIT_AVX512 inline __m512i round_nearest_even16(__m512 v) {
  const __m512i bits = _mm512_castps_si512(_mm512_add_ps(v, _mm512_set1_ps(12582912.f)));
  return _mm512_sub_epi32(_mm512_and_si512(bits, _mm512_set1_epi32(0x007fffff)), _mm512_set1_epi32(0x00400000));
}

LOWBIT_AVX512 inline __m512 clamped_codes16(__m512 scaled, __m512i lo, __m512i hi) {
  return _mm512_cvtepi32_ps(_mm512_max_epi32(lo, _mm512_min_epi32(hi, round_nearest_even16(scaled))));
}

LOWBIT_AVX512 inline __mmask16 first_lanes(int count) { return __mmask16((1u << count) - 1); }

LOWBIT_AVX512 void signed_sums_avx512(int n, int nmax, const float* x, const float* w, const float* wx,
                                      const float* iscales, int count, SignedSums& out) {
  const __mmask16 used = first_lanes(count);
  const __m512 iscale = _mm512_maskz_loadu_ps(used, iscales);
  const __m512i lo = _mm512_set1_epi32(-nmax), hi = _mm512_set1_epi32(nmax - 1);
  __m512 sumlx = _mm512_setzero_ps(), suml2 = _mm512_setzero_ps();
  for (int i = 0; i < n; ++i) {
    const __m512 l = clamped_codes16(_mm512_mul_ps(iscale, _mm512_set1_ps(x[i])), lo, hi);
    sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(_mm512_set1_ps(wx[i]), l));                    // (w*x)*l
    suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(w[i]), l), l));  // (w*l)*l
  }
  _mm512_mask_storeu_ps(out.sumlx, used, sumlx);
  _mm512_mask_storeu_ps(out.suml2, used, suml2);
}

// nearest_codebook_index per lane, for a sorted 16-entry codebook held in a register. A 4-step
// branchless search finds p, the last entry <= v (0 below the first); ggml's rule then keeps p only if
// v - c[p] < c[p+1] - v (ties go up). Below c[0] this gives 0, above c[15] 15, and NaN 15, as ggml's
// binary search does.
LOWBIT_AVX512 inline __m512i nearest_index16(__m512 table, __m512 v) {
  __m512i p = _mm512_setzero_si512();
  for (int step = 8; step >= 1; step /= 2) {
    const __m512i candidate = _mm512_add_epi32(p, _mm512_set1_epi32(step));
    const __mmask16 below = _mm512_cmp_ps_mask(_mm512_permutexvar_ps(candidate, table), v, _CMP_LE_OQ);
    p = _mm512_mask_mov_epi32(p, below, candidate);
  }
  const __m512i last = _mm512_set1_epi32(15);
  const __m512i next = _mm512_min_epi32(_mm512_add_epi32(p, _mm512_set1_epi32(1)), last);
  const __m512 below_gap = _mm512_sub_ps(v, _mm512_permutexvar_ps(p, table));
  const __m512 above_gap = _mm512_sub_ps(_mm512_permutexvar_ps(next, table), v);
  __m512i index = _mm512_mask_mov_epi32(next, _mm512_cmp_ps_mask(below_gap, above_gap, _CMP_LT_OQ), p);
  return _mm512_mask_mov_epi32(index, _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q), last);
}

LOWBIT_AVX512 void codebook_sums_avx512(const float* x, const float* w, const int8_t* codebook, const float* ids,
                                        int count, CodebookSums& out) {
  const __mmask16 used = first_lanes(count);
  const __m512 table = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codebook))));
  const __m512 id = _mm512_maskz_loadu_ps(used, ids);
  __m512 sumqx = _mm512_setzero_ps(), sumq2 = _mm512_setzero_ps();
  for (int j = 0; j < 32; ++j) {
    const __m512 q = _mm512_permutexvar_ps(nearest_index16(table, _mm512_mul_ps(id, _mm512_set1_ps(x[j]))), table);
    const __m512 wq = _mm512_mul_ps(_mm512_set1_ps(w[j]), q);
    sumqx = _mm512_add_ps(sumqx, _mm512_mul_ps(wq, _mm512_set1_ps(x[j])));  // (w*q)*x
    sumq2 = _mm512_add_ps(sumq2, _mm512_mul_ps(wq, q));                     // (w*q)*q
  }
  _mm512_mask_storeu_ps(out.sumqx, used, sumqx);
  _mm512_mask_storeu_ps(out.sumq2, used, sumq2);
}

constexpr BatchKernels kAvx512Kernels = {signed_sums_avx512, codebook_sums_avx512};

}  // namespace

const BatchKernels* avx512_batch_kernels() { return &kAvx512Kernels; }

#else

const BatchKernels* avx512_batch_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml_search
