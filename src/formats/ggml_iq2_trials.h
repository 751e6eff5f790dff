// Every trial scale of an iq2 group side by side (private to src/formats): the levels and keys of every
// trial, every trial's weighted sums, and the neighbour search of a run of trials, W trials per vector
// (GCC/clang vector extensions), each lane computing exactly the floats ggml computes for its trial. Written once for any W and instantiated by
// the portable kernels (W = 4, SSE: x86-64's baseline) and, inside functions compiled for those
// instruction sets, the AVX2 (W = 8) and AVX-512 (W = 16) ones: always inlined, so each instantiation
// is compiled for its caller's target.
#pragma once

#include <algorithm>
#include <cfloat>
#include <cstdint>
#include <cstring>

#include "formats/ggml_iq2_search.h"

namespace lowbit::ggml::iq2 {

// The vector types of W lanes (spelled per W: GCC ignores a vector_size that depends on a template argument).
template <int W>
struct TrialLanes;
template <>
struct TrialLanes<4> {
  using Floats = float __attribute__((vector_size(16)));
  using Ints = int32_t __attribute__((vector_size(16)));
};
template <>
struct TrialLanes<8> {
  using Floats = float __attribute__((vector_size(32)));
  using Ints = int32_t __attribute__((vector_size(32)));
};
template <>
struct TrialLanes<16> {
  using Floats = float __attribute__((vector_size(64)));
  using Ints = int32_t __attribute__((vector_size(64)));
};

// Levels l = clamp(nearest_int(0.5 * (id * x - 1)), 0, 2) (ggml's nearest_int: add 1.5 * 2^23, read the
// mantissa) of n values at `count` inverse scales, as each 8-value subgroup's key (value j's level at
// bits 2j): the keys are what the search looks up, and the sums read the levels back from the resolved keys.
template <int W>
[[gnu::always_inline]] inline void round_trials_lanes(const float* xval, int n, const float* ids, int count,
                                                      uint32_t* keys) {
  using L = TrialLanes<W>;
  for (int first = 0; first < count; first += W) {
    typename L::Floats id;
    std::memcpy(&id, ids + first, sizeof id);
    for (int k = 0; k < n / 8; ++k) {
      typename L::Ints key = {};
      for (int j = 0; j < 8; ++j) {
        const typename L::Floats shifted = 0.5f * (id * xval[8 * k + j] - 1) + 12582912.f;
        typename L::Ints level = ((typename L::Ints)shifted & 0x007fffff) - 0x00400000;
        level &= ~(level < 0);
        const typename L::Ints above = level > 2;
        level = (above & 2) | (~above & level);
        key |= level << (2 * j);
      }
      std::memcpy(keys + k * kTrialStride + first, &key, sizeof key);
    }
  }
}

// Every trial's weighted sums of its resolved levels (keys[k * kTrialStride + t]: subgroup k's, value j's
// level l at bits 2j), value by value in ggml's order: sumqx += (w*x)*q, sumq2 += (w*q)*q, q = 2l+1.
template <int W>
[[gnu::always_inline]] inline void trial_sums_lanes(const float* weight, const float* xval, int n, const uint32_t* keys,
                                                    int count, float* sumqx, float* sumq2) {
  using L = TrialLanes<W>;
  for (int first = 0; first < count; first += W) {
    typename L::Floats qx = {}, q2 = {};
    for (int k = 0; k < n / 8; ++k) {
      typename L::Ints key;
      std::memcpy(&key, keys + k * kTrialStride + first, sizeof key);
      for (int j = 0; j < 8; ++j) {
        const int i = 8 * k + j;
        const typename L::Floats value = __builtin_convertvector(2 * ((key >> (2 * j)) & 3) + 1, typename L::Floats);
        const float wx = weight[i] * xval[i];
        qx += wx * value;
        q2 += weight[i] * value * value;
      }
    }
    std::memcpy(sumqx + first, &qx, sizeof qx);
    std::memcpy(sumq2 + first, &q2, sizeof q2);
  }
}

// SearchKernels::nearest_at_scales with W scales side by side: every candidate's levels are the same in
// all lanes, so its terms are picked per value, not gathered per lane. A scale's 8 x 3 terms
// waux[j] * diff * diff, diff = scale * (2l+1) - xval[j], are computed once, each rounded as ggml rounds
// it, and a candidate's distance adds its 8 terms in order of the values.
template <int W>
[[gnu::always_inline]] inline void nearest_at_scales_lanes(const uint8_t* lane_levels, int count, const float* xval,
                                                           const float* waux, const float* scales, int count_scales,
                                                           int* best) {
  using L = TrialLanes<W>;
  constexpr int kChunk = SearchTables::kLaneChunk;
  float padded[kMaxScales + W];
  std::copy(scales, scales + count_scales, padded);
  std::fill(padded + count_scales, padded + count_scales + W, 1.f);  // lanes past the scales: ignored
  for (int first = 0; first < count_scales; first += W) {
    typename L::Floats scale;
    std::memcpy(&scale, padded + first, sizeof scale);
    const typename L::Floats scaled[3] = {scale * 1.f, scale * 3.f, scale * 5.f};  // scale * q, q = 2l+1
    typename L::Floats term[8][3];
    for (int j = 0; j < 8; ++j)
      for (int l = 0; l < 3; ++l) {
        const typename L::Floats diff = scaled[l] - xval[j];
        term[j][l] = waux[j] * diff * diff;  // (w*diff)*diff
      }
    typename L::Floats best_d2 = FLT_MAX + typename L::Floats{};
    typename L::Ints best_c = -1 + typename L::Ints{};
    for (int c = 0; c < count; ++c) {
      const uint8_t* levels = lane_levels + (c / kChunk) * 8 * kChunk + c % kChunk;
      typename L::Floats d2 = {};
      for (int j = 0; j < 8; ++j) d2 += term[j][SearchTables::level_of_lane_byte(levels[j * kChunk])];
      const typename L::Ints better = d2 < best_d2;  // all ones where strictly smaller (false for NaN, as ggml's)
      best_d2 = (typename L::Floats)((better & (typename L::Ints)d2) | (~better & (typename L::Ints)best_d2));
      best_c = (better & c) | (~better & best_c);
    }
    const int lanes = std::min(W, count_scales - first);
    for (int lane = 0; lane < lanes; ++lane) best[first + lane] = best_c[lane];
  }
}

}  // namespace lowbit::ggml::iq2
