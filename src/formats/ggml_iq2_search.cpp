// The portable iq2 search kernels (the reference the other ones must match) and the kernel choice.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "formats/ggml_iq2_search.h"

#include <algorithm>
#include <cfloat>
#include <cstring>

#include "formats/ggml_iq2_trials.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::ggml::iq2 {
namespace {

// 4 values per vector (each lane round_nearest_even's rounding, as round_trials_lanes), the levels and
// keys stored lane by lane.
void round_levels_portable(const float* xval, int n, float id, int8_t* levels, uint32_t* keys) {
  using Floats = TrialLanes<4>::Floats;
  using Ints = TrialLanes<4>::Ints;
  for (int k = 0; k < n / 8; ++k) {
    uint32_t key = 0;
    for (int half = 0; half < 2; ++half) {
      Floats x;
      std::memcpy(&x, xval + 8 * k + 4 * half, sizeof x);
      const Floats shifted = 0.5f * (id * x - 1) + 12582912.f;
      Ints level = ((Ints)shifted & 0x007fffff) - 0x00400000;
      level &= ~(level < 0);
      const Ints above = level > 2;
      level = (above & 2) | (~above & level);
      for (int lane = 0; lane < 4; ++lane) {
        levels[8 * k + 4 * half + lane] = int8_t(level[lane]);
        key |= uint32_t(level[lane]) << (2 * (4 * half + lane));
      }
    }
    keys[k] = key;
  }
}

void nearest_at_scales_portable(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                const float* scales, int count_scales, int* best) {
  nearest_at_scales_lanes<4>(lane_levels, count, xval, waux, scales, count_scales, best);
}

int nearest_key_at_scale_portable(const uint32_t* candidate_keys, int count, const float* xval, const float* waux,
                                  float scale) {
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int c = 0; c < count; ++c) {
    float d2 = 0;
    for (int j = 0; j < 8; ++j) {
      const float diff = scale * float(2 * ((candidate_keys[c] >> (2 * j)) & 3) + 1) - xval[j];
      d2 += waux[j] * diff * diff;
    }
    if (d2 < best_d2) {
      best_d2 = d2;
      best = c;
    }
  }
  return best;
}

int nearest_lanes_at_scale_portable(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                    float scale) {
  int best = -1;
  nearest_at_scales_lanes<4>(lane_levels, count, xval, waux, &scale, 1, &best);
  return best;
}

void round_trials_portable(const float* xval, int n, const float* ids, int count, uint32_t* keys) {
  round_trials_lanes<4>(xval, n, ids, count, keys);
}

void trial_sums_portable(const float* weight, const float* xval, int n, const uint32_t* keys, int count, float* sumqx,
                         float* sumq2) {
  trial_sums_lanes<4>(weight, xval, n, keys, count, sumqx, sumq2);
}

constexpr SearchKernels kPortableKernels = {round_trials_portable, trial_sums_portable, round_levels_portable,
                                            nearest_at_scales_portable, nullptr, nearest_key_at_scale_portable,
                                            nearest_lanes_at_scale_portable, ggml_search::fit_unsigned_scale};

}  // namespace

const SearchKernels& portable_search_kernels() { return kPortableKernels; }

const SearchKernels& search_kernels(cpu::CpuTarget target) {
  const SearchKernels* vector_kernels = cpu::cpu_kernels(target).iq2_search;
  return vector_kernels ? *vector_kernels : kPortableKernels;
}

}  // namespace lowbit::ggml::iq2
