// Scale searches shared by ggml's quantizers (legacy imatrix paths, k-quants, iq4): given the values of
// one sub-block (and optional per-value weights), find the scale (and min) whose rounded codes
// reconstruct the values best. Every function reproduces ggml-quants.c bit for bit: same operation
// order, same float rounding, same tie rules. Private to src/formats.
#pragma once

#include <algorithm>
#include <bit>
#include <cstdint>

namespace lowbit::cpu {
struct CpuKernels;  // kernels/cpu/cpu_kernels.h, which includes this header
}

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
// or, when null, x^2. Writes codes as l + nmax into `codes`; returns the scale. n <= 32.
float fit_signed_scale(const cpu::CpuKernels& kernels, int n, int nmax, const float* x, int8_t* codes,
                       const float* weights);

// Like fit_signed_scale without weights, but refines the codes one at a time by coordinate descent on
// the x^2-weighted error, up to 5 passes (ggml's make_q3_quants with do_rmse). Codes as l + nmax.
float fit_signed_scale_refined(int n, int nmax, const float* x, int8_t* codes);

// Asymmetric codes l in [0, nmax] with value ~ scale*l - min (ggml's make_qkx2_quants / make_qkx3_quants,
// which agree whenever weights are given). Tries nstep+1 scales (rmin + rdelta*i + nmax)/(max - min)
// and solves the weighted 2x2 least squares for (scale, min) at each, keeping the smallest error
// (absolute when use_abs_error, else squared). Returns the scale; *min_out gets the min (>= 0).
// n <= 32.
float search_scale_and_min(int n, int nmax, const float* x, const float* weights, uint8_t* codes,
                           float* min_out, float rmin, float rdelta, int nstep,
                           bool use_abs_error);

// Non-negative codes l in [0, nmax] for non-negative values x (sub-block scales or mins), value ~
// scale*l, fitted under `weights` (ggml's make_qp_quants): a 9-point scale search, then 5 coordinate-
// descent passes. Returns the scale.
float fit_unsigned_scale(int n, int nmax, const float* x, uint8_t* codes, const float* weights);
// fit_unsigned_scale's coordinate-descent passes, from the codes of the chosen scale and their sums
// sumlx = sum (w*x)*l, suml2 = sum (w*l)*l (in order of the values); returns the refitted scale.
// kFirstProposal(i, ...) is the first value at or after i whose step proposes a new code (slx > 0,
// sl2 > 0 and a rounding other than its code), or n. Always inlined, so that vector variants
// (kernels/cpu/ggml_iq2_search_avx2.cpp) compile it for their target.
using FirstProposal = int (*)(int i, int n, int nmax, const float* x, const uint8_t* codes, const float* weights,
                              float sumlx, float suml2);
template <FirstProposal kFirstProposal>
[[gnu::always_inline]] inline float refine_unsigned_codes(int n, int nmax, const float* x, uint8_t* codes,
                                                          const float* weights, float sumlx, float suml2) {
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      // Values that leave the sums as they are (no new level proposed) are skipped a vector at a time:
      // each lane computes the step's floats, and the scan resumes at the first lane that proposes one.
      i = kFirstProposal(i, n, nmax, x, codes, weights, sumlx, suml2);
      if (i == n) break;
      const float w = weights[i];
      float slx = sumlx - w * x[i] * float(codes[i]);
      float sl2 = suml2 - w * float(codes[i]) * float(codes[i]);
      if (slx > 0 && sl2 > 0) {
        const int new_l = std::min(nmax, round_nearest_even(x[i] * sl2 / slx));
        if (new_l != codes[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (slx * slx * suml2 > sumlx * sumlx * sl2) {
            codes[i] = uint8_t(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// ---- candidate batches ----
// fit_signed_scale and the iq4 search try many scales whose sums do not depend on one another; for a
// single group they are evaluated up to kBatch at a time, by the scalar loops in ggml_kquants_search.cpp
// or, on the avx512 CPU target, one candidate per vector lane (kernels/cpu/ggml_kquants_search_avx512.cpp). Each
// lane keeps ggml's sequential order over the values, so both give the same bits; the choice among
// candidates stays scalar and in order. (Quantizers call the *_groups functions below, which run many
// groups side by side instead; the batches serve single-group calls.)
inline constexpr int kBatch = 16;

// For candidates c < count: l = clamp(round(iscales[c]*x[i]), -nmax, nmax-1); sumlx[c] = sum (w*x)*l,
// suml2[c] = sum (w*l)*l in order of i. `wx` holds w[i]*x[i].
struct SignedSums {
  float sumlx[kBatch], suml2[kBatch];
};
// For candidates c < count (n = 32): q = kIq4 codebook entry nearest ids[c]*x[i];
// sumqx[c] = sum (w*q)*x, sumq2[c] = sum (w*q)*q.
struct CodebookSums {
  float sumqx[kBatch], sumq2[kBatch];
};

struct BatchKernels {
  void (*signed_sums)(int n, int nmax, const float* x, const float* w, const float* wx, const float* iscales,
                      int count, SignedSums& out);
  void (*codebook_sums)(const float* x, const float* w, const int8_t* codebook, const float* ids, int count,
                        CodebookSums& out);
};

// The batch kernels of a CPU target's table (kernels/cpu/cpu_kernels.h), else the scalar ones.
const BatchKernels& batch_kernels(const cpu::CpuKernels& kernels);

// ---- many groups at once ----
// The searches above over `count` consecutive groups of n values each: group g is x + n*g, its weights
// weights + n*g (null: x^2 where the one-group function allows it), its codes codes + n*g; its results
// scales[g] (and mins[g]). A quantizer calls these for all sub-blocks of a super-block (or of a run of
// legacy blocks). On the avx512 CPU target, up to 16 groups run side by side, one group per vector lane: each lane
// follows ggml's sequential search step by step, so no candidate is ever evaluated twice and the bytes
// are those of the one-group functions, which run in turn otherwise. `kernels`: the CPU target's table.
inline constexpr int kLanes = 16;
inline constexpr int kRefinedGroupsPerCall = 16 * kLanes;  // q3_K: 16 super-blocks' sub-blocks at once

void search_scale_and_min_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x,
                                 const float* weights, uint8_t* codes, float* scales, float* mins, float rmin,
                                 float rdelta, int nstep, bool use_abs_error);
void fit_signed_scale_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x, int8_t* codes,
                             const float* weights, float* scales);
void fit_signed_scale_refined_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x,
                                     int8_t* codes, float* scales);

// Step 3 of the k-quants: codes from the stored (fp16-rounded) scales. For each group g < count with
// divisors[g] != 0: codes[n*g + i] = bias + clamp(round((x[n*g + i] + offsets[g]) / divisors[g]), lo, hi)
// (x / divisors[g] when offsets is null); groups with a zero divisor keep their codes. n is 16 or 32.
void requantize_groups(const cpu::CpuKernels& kernels, int count, int n, const float* x, const float* offsets,
                       const float* divisors, int lo, int hi, int bias, uint8_t* codes);

// At most kLanes groups per call (fit_signed_scale_refined: kRefinedGroupsPerCall groups of n = 16), n <= 32
// (kernels/cpu/ggml_kquants_search_lanes_avx512.cpp); requantize: any count.
struct LaneKernels {
  void (*search_scale_and_min)(int count, int n, int nmax, const float* x, const float* weights, uint8_t* codes,
                               float* scales, float* mins, float rmin, float rdelta, int nstep, bool use_abs_error);
  void (*fit_signed_scale)(int count, int n, int nmax, const float* x, int8_t* codes, const float* weights,
                           float* scales);
  void (*fit_signed_scale_refined)(int count, int n, int nmax, const float* x, int8_t* codes, float* scales);
  void (*requantize)(int count, int n, const float* x, const float* offsets, const float* divisors, int lo, int hi,
                     int bias, uint8_t* codes);
};

}  // namespace lowbit::ggml_search
