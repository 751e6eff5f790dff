// The split search of iq1_s (private to src/formats): ggml tries every split of a 32-value group's
// ascending order into runs at levels -1, 0, +1 (i1 <= i2), with both shifts (+1/8, then -1/8), and keeps
// the first split with the best weighted least-squares fit. A scalar loop defines it; the CPU backend's
// AVX-512 one (kernels/cpu) runs 16 splits per vector (its AVX2 one, for CPUs without AVX-512, 8), each
// split's fit approximately, then ggml's sequential choice over the splits near the largest
// (kernels/cpu/ggml_iq1_split_candidates.h), so all give the same split.
#pragma once

#include <cstdint>

#include "lowbit/formats/ggml_iq1.h"  // iq1::kDelta

namespace lowbit::ggml::iq1 {

inline constexpr int kSGroup = 32;
// The three levels of a value, shifted up (delta +1/8) or down (-1/8).
inline constexpr float kShiftedUp[3] = {-1 + kDelta, kDelta, 1 + kDelta};
inline constexpr float kShiftedDown[3] = {-1 - kDelta, -kDelta, 1 - kDelta};

struct Split {
  int i1 = -1, i2 = -1;  // runs [0, i1), [i1, i2), [i2, 32) of the ascending order; -1: none fitted
  int shift = 1;         // +1: delta +1/8, -1: delta -1/8
  float scale = 0;
};

// sumx, sumw: the 33 prefix sums of w*x and w over the ascending order (sumx[0] = sumw[0] = 0).
using SplitSearchFn = Split (*)(const float* sumx, const float* sumw);

Split best_split_scalar(const float* sumx, const float* sumw);

// The neighbour search (ggml's iq1_find_best_neighbour2): among candidate grid points, the first with
// the smallest sum of w[i] * (scale * shifted[level_i] - x_i)^2. The AVX-512 and AVX2 versions (kernels/cpu)
// take 16 or 8 candidates per vector, one per lane, each lane adding the scalar loop's terms in its order.
inline constexpr int kLaneChunk = 16;
// codes: the candidates' levels (0..2) as 2-bit fields (level i at bits 2i, kIq1GridCodes' form), readable
// kLaneChunk entries past count. scaled[l] = scale * shifted[l]. Returns the position in the list of the
// nearest candidate, or -1 if no distance is below FLT_MAX.
using NearestCandidateFn = int (*)(const uint16_t* codes, int count, const float* x, const float* w, const float* scaled);

// The positions of a group's 32 values in ascending order, equal values (-0 and +0 among them) in
// index order: the order of the stable sort ggml's qsort (glibc's merge sort) gives. Value i goes to
// #{j : x_j < x_i} + #{j < i : x_j == x_i}, counted with vector compares. Returns false, writing
// nothing, if a value is NaN (the counts would not be a permutation).
using AscendingOrderFn = bool (*)(const float* x, int* order);

}  // namespace lowbit::ggml::iq1
