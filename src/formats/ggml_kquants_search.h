// Scale searches shared by ggml's quantizers (legacy imatrix paths, k-quants, iq4): given the values of
// one sub-block (and optional per-value weights), find the scale (and min) whose rounded codes
// reconstruct the values best. Every function reproduces ggml-quants.c bit for bit: same operation
// order, same float rounding, same tie rules. Private to src/formats.
#pragma once

#include <bit>
#include <cstdint>

namespace lowbit::ggml_search {

// Below this magnitude a group counts as all zero (ggml's GROUP_MAX_EPS).
inline constexpr float kGroupMaxEps = 1e-15f;

// Round to nearest, ties to even, by adding 1.5*2^23: the float's mantissa then holds the integer
// (ggml's nearest_int). Valid for |f| <= 4194303, which every caller guarantees.
inline int round_nearest_even(float f) {
  const float shifted = f + 12582912.f;
  return int(std::bit_cast<uint32_t>(shifted) & 0x007fffff) - 0x00400000;
}

// Index of the codebook entry nearest to x in a sorted int8 codebook (binary search). Ties go to the
// upper entry (ggml's best_index_int8).
inline int nearest_codebook_index(int n, const int8_t* codebook, float x) {
  if (x <= codebook[0]) return 0;
  if (x >= codebook[n - 1]) return n - 1;
  int lo = 0, hi = n - 1;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (x < codebook[mid]) hi = mid; else lo = mid;
  }
  return x - codebook[hi - 1] < codebook[hi] - x ? hi - 1 : hi;
}

// Symmetric codes l in [-nmax, nmax-1] with value ~ scale*l (ggml's make_qx_quants with rmse_type 1,
// the only variant its quantizers use). Starts from the scale that maps the signed extreme to -nmax,
// then tries 18 nearby scales, keeping the weighted least-squares best. Weights are `weights` (n values)
// or, when null, x^2. Writes codes as l + nmax into `codes`; returns the scale.
float fit_signed_scale(int n, int nmax, const float* x, int8_t* codes, const float* weights);

// Like fit_signed_scale without weights, but refines the codes one at a time by coordinate descent on
// the x^2-weighted error, up to 5 passes (ggml's make_q3_quants with do_rmse). Codes as l + nmax.
float fit_signed_scale_refined(int n, int nmax, const float* x, int8_t* codes);

// Asymmetric codes l in [0, nmax] with value ~ scale*l - min (ggml's make_qkx2_quants / make_qkx3_quants,
// which agree whenever weights are given). Tries nstep+1 scales (rmin + rdelta*i + nmax)/(max - min)
// and solves the weighted 2x2 least squares for (scale, min) at each, keeping the smallest error
// (absolute when use_abs_error, else squared). Returns the scale; *min_out gets the min (>= 0).
// `scratch` holds n bytes.
float search_scale_and_min(int n, int nmax, const float* x, const float* weights, uint8_t* codes,
                           float* min_out, uint8_t* scratch, float rmin, float rdelta, int nstep,
                           bool use_abs_error);

// Non-negative codes l in [0, nmax] for non-negative values x (sub-block scales or mins), value ~
// scale*l, fitted under `weights` (ggml's make_qp_quants): a 9-point scale search, then 5 coordinate-
// descent passes. Returns the scale.
float fit_unsigned_scale(int n, int nmax, const float* x, uint8_t* codes, const float* weights);

}  // namespace lowbit::ggml_search
