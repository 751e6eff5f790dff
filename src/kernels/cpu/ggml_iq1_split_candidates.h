// The second stage of iq1_s's vector split searches (ggml_iq1_search_avx2.cpp, _avx512.cpp): ggml's
// sequential choice replayed over the few splits that can matter. Private to src/kernels/cpu.
//
// ggml scans the 1122 splits (i1 ascending, i2 ascending, shift +1/8 before -1/8) and a split replaces
// the best so far when sumq2 > 0 and sumqx^2 > best * sumq2, best becoming (sumqx / sumq2) * sumqx; each
// product is rounded to float. Write t = sumqx^2 / sumq2 (exact, of the float sums) for a split's fit.
// Let L be a level such that no split has t in the band [L (1 - 2^-16), L (1 + 2^-12)], and call the
// splits above it high and the others low. Every float operation here errs by at most 2^-24 relatively,
// so (away from overflow and with the high splits' products normal):
//  - a high split meeting a best set by a low split (or -FLT_MAX) replaces it, since its t exceeds that
//    best by far more than rounding;
//  - once a high split has won, the best is within 2^-23 of a high t, which no low split beats;
//  - the split of the largest t is high, so one does win.
// Hence the low splits change nothing that lasts: ggml's scan over the high splits alone, from -FLT_MAX,
// ends on ggml's split. The vector pass finds the largest fit T approximately (relative error e) and
// lists the splits whose approximate fit reaches T (1 - 2^-7): every split above L = T (1 - 2^-10) is
// among them when e < 2^-10. The band is checked on the listed splits' fits in double precision (exact
// to 2^-52), with L lowered twice more if a fit lies in it; else, or on anything non-finite or tiny, the
// caller runs the full scan.
#pragma once

#include <array>
#include <cfloat>
#include <cmath>
#include <cstdint>

#include "formats/ggml_iq1_search.h"

namespace lowbit::ggml::iq1 {

struct SplitCandidate {
  int i1, i2, shift;  // shift: +1 or -1
};
inline constexpr int kMaxSplitCandidates = 64;
// The listing threshold, as a fraction of the largest approximate fit T.
inline constexpr float kCandidateFraction = 1.f - 0x1p-7f;

// ggml's sums of one split (its scalar loop's floats, in its order).
inline void split_sums_scalar(const float* sumx, const float* sumw, int i1, int i2, int shift, float& sumqx, float& sumq2) {
  const float* v = shift == 1 ? kShiftedUp : kShiftedDown;
  sumqx = (sumx[i1] - sumx[0]) * v[0] + (sumx[i2] - sumx[i1]) * v[1] + (sumx[kSGroup] - sumx[i2]) * v[2];
  sumq2 = (sumw[i1] - sumw[0]) * v[0] * v[0] + (sumw[i2] - sumw[i1]) * v[1] * v[1] + (sumw[kSGroup] - sumw[i2]) * v[2] * v[2];
}

// The first pass's sums, rearranged: with v0 - v1 = v1 - v2 = -1 (both shifts),
//   sumqx = X v2 - sx[i1] - sx[i2],   sumq2 = W v2^2 + a sw[i1] + b sw[i2],   a = v0^2 - v1^2, b = v1^2 - v2^2,
// X = sx[32], W = sw[32]: per split one subtract and one add of per-i2 parts. They equal ggml's sums in
// exact arithmetic, not in rounding; the vector passes use them only for the approximate fit. With
// weights >= 0 (sw ascending, each sumq2 >= W/64), W >= 2^-60 and sums below 2^60, each errs by a few
// 2^-24 of S = max |sx| or of W; the best split has sumqx^2 / sumq2 >= (49/81) S^2 / W (the split of the
// negative values to level 0 and the rest to level 2 has), so a fit near it errs by less than 2^-16 and
// any split's approximate fit exceeds its own by less than 2^-16 of T: with the reciprocal's error
// (2^-14 AVX-512, 1.5 * 2^-12 AVX2) still below the 2^-10 the listing needs.
struct ApproximateSplitTerms {
  float v2, v2_squared, a, b;
};
constexpr ApproximateSplitTerms approximate_split_terms(int shift) {
  const float* v = shift == 1 ? kShiftedUp : kShiftedDown;
  return {v[2], v[2] * v[2], v[0] * v[0] - v[1] * v[1], v[1] * v[1] - v[2] * v[2]};
}
static_assert(kShiftedUp[0] - kShiftedUp[1] == -1 && kShiftedUp[1] - kShiftedUp[2] == -1 &&
              kShiftedDown[0] - kShiftedDown[1] == -1 && kShiftedDown[1] - kShiftedDown[2] == -1);

// Pass 1 scans the splits as vectors of `Lanes` values of i2: for each i1 ascending, i2 from i1 up in
// steps of Lanes (the last vector partly past i2 = 32). Pass 2 maps a vector's mask bits back to splits
// through its (i1, first i2); one table per lane count (AVX2 8, AVX-512 16).
struct VectorSpan {
  uint8_t i1, first;
};
// Vectors in the scan: sum over i1 of ceil((33 - i1) / lanes).
constexpr int split_vector_count(int lanes) {
  int vectors = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1) vectors += (kSGroup - i1) / lanes + 1;
  return vectors;
}
// (vector index) -> (i1, first i2), in the scan's order.
template <int Lanes>
constexpr std::array<VectorSpan, split_vector_count(Lanes)> split_vector_spans() {
  std::array<VectorSpan, split_vector_count(Lanes)> spans{};
  int v = 0;
  for (int i1 = 0; i1 <= kSGroup; ++i1)
    for (int first = i1; first <= kSGroup; first += Lanes) spans[size_t(v++)] = {uint8_t(i1), uint8_t(first)};
  return spans;
}

// ggml's split among `candidates` (listed in ggml's order, with approximate largest fit T), or false when
// the caller must run the full scan.
inline bool choose_among_candidates(const float* sumx, const float* sumw, float T, const SplitCandidate* candidates,
                                    int count, Split& best) {
  // Far from overflow and underflow, so every product below is a normal float.
  if (!(T >= 0x1p-60f && T <= 0x1p60f) || count <= 0 || count > kMaxSplitCandidates) return false;
  float sumqx[kMaxSplitCandidates], sumq2[kMaxSplitCandidates];
  double fit[kMaxSplitCandidates];
  for (int c = 0; c < count; ++c) {
    split_sums_scalar(sumx, sumw, candidates[c].i1, candidates[c].i2, candidates[c].shift, sumqx[c], sumq2[c]);
    if (!(sumq2[c] >= 0x1p-60f && sumq2[c] <= 0x1p60f && std::fabs(sumqx[c]) <= 0x1p60f)) return false;
    fit[c] = double(sumqx[c]) * double(sumqx[c]) / double(sumq2[c]);
  }
  double level = double(T) * (1 - 0x1p-10);
  for (int attempt = 0;; ++attempt) {
    bool band_empty = true;
    for (int c = 0; c < count; ++c)
      band_empty &= !(fit[c] >= level * (1 - 0x1p-16) && fit[c] <= level * (1 + 0x1p-12));
    if (band_empty) break;
    if (attempt == 2) return false;
    level *= 1 - 0x1p-10;  // at most T (1 - 3 * 2^-10), still far above the listing threshold
  }
  float best_score = -FLT_MAX;
  for (int c = 0; c < count; ++c) {
    if (fit[c] <= level) continue;  // a low split
    if (sumq2[c] > 0 && sumqx[c] * sumqx[c] > best_score * sumq2[c]) {
      best.scale = sumqx[c] / sumq2[c];
      best_score = best.scale * sumqx[c];
      best.i1 = candidates[c].i1;
      best.i2 = candidates[c].i2;
      best.shift = candidates[c].shift;
    }
  }
  return best.i1 >= 0;
}

}  // namespace lowbit::ggml::iq1
