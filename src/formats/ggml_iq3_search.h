// The neighbour search of iq3_xxs / iq3_s (private to src/formats): among a list of candidate grid
// points, the first with the smallest sum of waux[i] * (scale * q_i - x_i)^2 (ggml's
// iq3_find_best_neighbour). The AVX-512 version (kernels/cpu) takes 16 candidates per vector, one per
// lane, each lane computing exactly the scalar loop's floats; the first lane at the minimum is the one a
// sequential scan keeps.
#pragma once

#include <cstdint>

namespace lowbit::ggml::iq3 {

inline constexpr int kLaneChunk = 16;

// lane_levels: the candidates' levels (0..7) in chunks of 16 candidates, chunk-major, then coordinate,
// then lane: byte [16*4*c + 16*i + lane] is level i of candidate 16c + lane. scaled[l] = scale * (2l + 1).
// Returns the position in the list of the nearest candidate, or -1 if no distance is below FLT_MAX.
using NearestCandidateFn = int (*)(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                                   const float* scaled);

}  // namespace lowbit::ggml::iq3
