// The searches of iq3_xxs / iq3_s (private to src/formats) that kernels/cpu runs in vector registers:
// every trial scale of a group, and the final re-fit's neighbour searches at one scale. Each computes
// exactly the floats of ggml's scalar code, so the bytes do not depend on the kernel.
#pragma once

#include <cstdint>

namespace lowbit::ggml::iq3 {

// Every trial scale of one group at once (the loop of ggml's quantize_row_iq3_*_impl over `is`, all but
// its sequential choice): 16 trials per vector, one per lane, each lane computing exactly ggml's floats
// for its trial.
inline constexpr int kUnits = 8;         // 4-value units (grid points) per 32-value group
inline constexpr int kTrialLanes = 32;   // trials are padded to a whole number of 16-lane vectors

// The grid as the kernel reads it. Bit code % 32 of on_grid[code / 32] is set for the level codes (4
// levels of 3 bits) that are grid points. Code c's candidate list (ggml's neighbours, in ggml's order) is entries list_begin[c] ..
// list_begin[c + 1] - 1 of list_codes (the candidate's level code) and list_slots (byte i: 8 * i + its
// level i, the candidate's term in the kernel's table of 4 x 8 terms), padded to a multiple of 4 entries
// by repeating its last candidate (a repeat never beats the first minimum, so the result is ggml's);
// list_codes holds 8 more entries after the last list, so a kernel may read 8 codes from any entry.
// slot_mask[c]: bit 8 * i + l set where some candidate of code c has level l at coordinate i (the
// terms its search reads). list_term_offsets: the same slots as 4 byte offsets per entry, 32 * slot (a
// table of 8-float vectors), so the AVX2 kernel addresses its terms without unpacking and scaling them.
struct TrialGrid {
  const uint32_t* on_grid;  // 128 words
  const uint32_t* list_begin;
  const uint16_t* list_codes;
  const uint32_t* list_slots;
  const uint32_t* slot_mask;
  const uint16_t* list_term_offsets;  // 4 per list entry
};

// ids, scales: kTrialLanes inverse and plain trial scales (count used, the rest repeating a used one).
// Writes, for unit k and trial t, the level code of the unit's grid point codes[kTrialLanes * k + t]
// (the rounded code where on the grid, else ggml's iq3_find_best_neighbour at scales[t]), bit t of
// off_grid[k] where the rounded code was not on the grid, and every trial's weighted sums in ggml's
// order (sumqx += (w*x)*q, sumq2 += (w*q)*q, value by value).
using AllTrialsFn = void (*)(const TrialGrid& grid, const float* xval, const float* waux, const float* weight,
                             const float* ids, const float* scales, int count, uint16_t* codes, uint32_t* off_grid,
                             float* sumqx, float* sumq2);

// The final re-fit's re-rounding at one scale, all units of a group at once: for each unit k whose bit is
// set in `units`, ggml_iq3.cpp's snap_unit (the rounded code at inverse scale id where it is on the grid,
// else ggml's iq3_find_best_neighbour at `scale`); writes the levels of its grid point to L[4k..4k+3].
using SnapUnitsFn = void (*)(const TrialGrid& grid, const float* xval, const float* waux, float id, float scale,
                             unsigned units, int8_t* L);

}  // namespace lowbit::ggml::iq3
