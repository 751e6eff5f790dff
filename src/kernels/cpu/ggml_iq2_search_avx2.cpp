// AVX2 kernels of the iq2 quantizers, for CPUs without AVX-512: every trial at once and the neighbour
// search of a run of trials, 8 trials per vector (ggml_iq2_trials.h); the one-scale rounding stays the
// portable kernel's. Each
// lane computes exactly the floats of ggml's loop for its trial; contraction is off for this file, as no
// multiply and add may fuse.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("fp-contract=off")
#endif
#if defined(__clang__)
#pragma clang fp contract(off)
#endif

#include "formats/ggml_iq2_search.h"
#include "formats/ggml_iq2_trials.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_IQ2_AVX2 1
#endif

namespace lowbit::ggml::iq2 {

#if LOWBIT_IQ2_AVX2
namespace {

#define LOWBIT_AVX2 __attribute__((target("avx2")))

LOWBIT_AVX2 void round_trials_avx2(const float* xval, int n, const float* ids, int count, float* q,
                                   uint32_t* keys) {
  round_trials_lanes<8>(xval, n, ids, count, q, keys);
}

LOWBIT_AVX2 void trial_sums_avx2(const float* weight, const float* xval, int n, const float* q, int count,
                                 float* sumqx, float* sumq2) {
  trial_sums_lanes<8>(weight, xval, n, q, count, sumqx, sumq2);
}

LOWBIT_AVX2 void nearest_at_scales_avx2(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                        const float* scales, int count_scales, int* best) {
  nearest_at_scales_lanes<8>(lane_levels, count, xval, waux, scales, count_scales, best);
}

}  // namespace

const SearchKernels* avx2_search_kernels() {
  static const SearchKernels kernels = [] {
    SearchKernels k = portable_search_kernels();
    k.round_trials = round_trials_avx2;
    k.trial_sums = trial_sums_avx2;
    k.nearest_at_scales = nearest_at_scales_avx2;
    return k;
  }();
  return &kernels;
}

#else

const SearchKernels* avx2_search_kernels() { return nullptr; }

#endif

}  // namespace lowbit::ggml::iq2
