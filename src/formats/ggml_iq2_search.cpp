// The scalar iq2 search kernels (the reference the vector ones must match) and the kernel choice.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "formats/ggml_iq2_search.h"

#include <algorithm>
#include <cfloat>

#include "formats/ggml_kquants_search.h"

namespace lowbit::ggml::iq2 {
namespace {

void round_levels_scalar(const float* xval, int n, float id, int8_t* levels, uint32_t* keys) {
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

int nearest_candidate_scalar(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                             const float* scaled) {
  constexpr int kChunk = SearchTables::kLaneChunk;
  float best_d2 = FLT_MAX;
  int best = -1;
  for (int c = 0; c < count; ++c) {
    const uint8_t* chunk = lane_levels + (c / kChunk) * 8 * kChunk + c % kChunk;
    float d2 = 0;
    for (int j = 0; j < 8; ++j) {
      const float diff = scaled[chunk[j * kChunk]] - xval[j];
      d2 += waux[j] * diff * diff;
    }
    if (d2 < best_d2) {
      best_d2 = d2;
      best = c;
    }
  }
  return best;
}

constexpr SearchKernels kScalarKernels = {round_levels_scalar, nearest_candidate_scalar};

}  // namespace

const SearchKernels& search_kernels() {
  static const SearchKernels* const vector_kernels = avx512_search_kernels();
  if (vector_kernels && ggml_search::vector_kernels_enabled()) return *vector_kernels;
  return kScalarKernels;
}

}  // namespace lowbit::ggml::iq2
