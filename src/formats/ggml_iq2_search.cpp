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

namespace lowbit::ggml::iq2 {
namespace {

void round_levels_portable(const float* xval, int n, float id, int8_t* levels, uint32_t* keys) {
  for (int k = 0; k < n / 8; ++k) {
    uint32_t key = 0;
    for (int j = 0; j < 8; ++j) {
      const int l = std::clamp(ggml_search::round_nearest_even(0.5f * (id * xval[8 * k + j] - 1)), 0, 2);
      levels[8 * k + j] = int8_t(l);
      key |= uint32_t(l) << (2 * j);
    }
    keys[k] = key;
  }
}

// Four scales side by side, one per lane of an SSE vector (GCC/clang vector extensions; SSE is x86-64's
// baseline): every candidate's levels are the same in all lanes, so its terms are picked per value, not
// gathered per lane. Each lane rounds every operation as ggml's loop for its scale.
using Floats4 = float __attribute__((vector_size(16)));
using Ints4 = int32_t __attribute__((vector_size(16)));
constexpr int kLanes = 4;

void nearest_at_scales_portable(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                const float* scales, int count_scales, int* best) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  float padded[kMaxScales + kLanes];
  std::copy(scales, scales + count_scales, padded);
  std::fill(padded + count_scales, padded + count_scales + kLanes, 1.f);  // lanes past the scales: ignored
  for (int first = 0; first < count_scales; first += kLanes) {
    Floats4 scale;
    std::memcpy(&scale, padded + first, sizeof scale);
    const Floats4 scaled[3] = {scale * 1.f, scale * 3.f, scale * 5.f};  // scale * q, q = 2l+1
    Floats4 term[8][3];
    for (int j = 0; j < 8; ++j)
      for (int l = 0; l < 3; ++l) {
        const Floats4 diff = scaled[l] - xval[j];
        term[j][l] = waux[j] * diff * diff;  // (w*diff)*diff
      }
    Floats4 best_d2 = {FLT_MAX, FLT_MAX, FLT_MAX, FLT_MAX};
    Ints4 best_c = {-1, -1, -1, -1};
    for (int c = 0; c < count; ++c) {
      const uint8_t* levels = lane_levels + (c / kChunk) * 8 * kChunk + c % kChunk;
      Floats4 d2 = {0, 0, 0, 0};
      for (int j = 0; j < 8; ++j) d2 += term[j][levels[j * kChunk]];
      const Ints4 better = d2 < best_d2;  // all ones where strictly smaller (false for NaN, as ggml's)
      best_d2 = Floats4((better & Ints4(d2)) | (~better & Ints4(best_d2)));
      best_c = (better & c) | (~better & best_c);
    }
    const int lanes = std::min(kLanes, count_scales - first);
    for (int lane = 0; lane < lanes; ++lane) best[first + lane] = best_c[lane];
  }
}

void round_trials_portable(const float* xval, int n, const float* ids, int count, float* q, uint32_t* keys) {
  round_trials_lanes<4>(xval, n, ids, count, q, keys);
}

void trial_sums_portable(const float* weight, const float* xval, int n, const float* q, int count, float* sumqx,
                         float* sumq2) {
  trial_sums_lanes<4>(weight, xval, n, q, count, sumqx, sumq2);
}

constexpr SearchKernels kPortableKernels = {round_trials_portable, trial_sums_portable, round_levels_portable,
                                            nearest_at_scales_portable};

}  // namespace

const SearchKernels& portable_search_kernels() { return kPortableKernels; }

const SearchKernels& search_kernels() {
  static const SearchKernels* const vector_kernels = avx512_search_kernels() ? avx512_search_kernels() : avx2_search_kernels();
  if (vector_kernels && ggml_search::vector_kernels_enabled()) return *vector_kernels;
  return kPortableKernels;
}

}  // namespace lowbit::ggml::iq2
