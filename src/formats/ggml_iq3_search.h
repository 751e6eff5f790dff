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

// Every trial scale of one group at once (the loop of ggml's quantize_row_iq3_*_impl over `is`, all but
// its sequential choice): 16 trials per vector, one per lane, each lane computing exactly ggml's floats
// for its trial.
inline constexpr int kUnits = 8;         // 4-value units (grid points) per 32-value group
inline constexpr int kTrialLanes = 32;   // trials are padded to a whole number of 16-lane vectors

// The grid as the kernel reads it. Bit code % 32 of on_grid[code / 32] is set for the level codes (4
// levels of 3 bits) that are grid points. Code c's candidate list (ggml's neighbours, in ggml's order) is entries list_begin[c] ..
// list_begin[c + 1] - 1 of list_codes (the candidate's level code) and list_slots (byte i: 8 * i + its
// level i, the candidate's term in the kernel's table of 4 x 8 terms), padded to a multiple of 4 entries
// by repeating its last candidate (a repeat never beats the first minimum, so the result is ggml's).
// slot_mask[c]: bit 8 * i + l set where some candidate of code c has level l at coordinate i (the
// terms its search reads).
struct TrialGrid {
  const uint32_t* on_grid;  // 128 words
  const uint32_t* list_begin;
  const uint16_t* list_codes;
  const uint32_t* list_slots;
  const uint32_t* slot_mask;
};

// ids, scales: kTrialLanes inverse and plain trial scales (count used, the rest repeating a used one).
// Writes, for unit k and trial t, the level code of the unit's grid point codes[kTrialLanes * k + t]
// (the rounded code where on the grid, else ggml's iq3_find_best_neighbour at scales[t]), bit t of
// off_grid[k] where the rounded code was not on the grid, and every trial's weighted sums in ggml's
// order (sumqx += (w*x)*q, sumq2 += (w*q)*q, value by value).
using AllTrialsFn = void (*)(const TrialGrid& grid, const float* xval, const float* waux, const float* weight,
                             const float* ids, const float* scales, int count, uint16_t* codes, uint32_t* off_grid,
                             float* sumqx, float* sumq2);

}  // namespace lowbit::ggml::iq3
