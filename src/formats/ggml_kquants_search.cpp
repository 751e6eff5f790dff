// Scale searches of ggml-quants.c, rewritten. Byte-exactness rules followed throughout: every sum runs in
// index order in float; every product is evaluated left to right as ggml writes it ((w*x)*l, not
// w*(x*l)); integer codes are converted to float at the point ggml converts them; the project builds
// without FMA contraction, as ggml's ggml-base does.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "formats/ggml_kquants_search.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::ggml_search {
namespace {

// The value with the largest magnitude, keeping its sign; the first one wins ties.
struct SignedExtreme {
  float value = 0;
  float magnitude = 0;
};

SignedExtreme signed_extreme(int n, const float* x) {
  SignedExtreme e;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > e.magnitude) {
      e.magnitude = ax;
      e.value = x[i];
    }
  }
  return e;
}

inline int clamp_signed(int l, int nmax) { return std::max(-nmax, std::min(nmax - 1, l)); }

// ---- the scalar batch kernels: the reference loops of ggml, one candidate after another ----

void signed_sums_scalar(int n, int nmax, const float* x, const float* w, const float* wx, const float* iscales,
                        int count, SignedSums& out) {
  for (int c = 0; c < count; ++c) {
    float sumlx = 0, suml2 = 0;
    for (int i = 0; i < n; ++i) {
      const float l = float(clamp_signed(round_nearest_even(iscales[c] * x[i]), nmax));
      sumlx += wx[i] * l;
      suml2 += w[i] * l * l;
    }
    out.sumlx[c] = sumlx;
    out.suml2[c] = suml2;
  }
}

void codebook_sums_scalar(const float* x, const float* w, const int8_t* codebook, const float* ids, int count,
                          CodebookSums& out) {
  for (int c = 0; c < count; ++c) {
    float sumqx = 0, sumq2 = 0;
    for (int j = 0; j < 32; ++j) {
      const float q = codebook[nearest_codebook_index(16, codebook, ids[c] * x[j])];
      sumqx += w[j] * q * x[j];
      sumq2 += w[j] * q * q;
    }
    out.sumqx[c] = sumqx;
    out.sumq2[c] = sumq2;
  }
}

constexpr BatchKernels kScalarKernels = {signed_sums_scalar, codebook_sums_scalar};

}  // namespace

const BatchKernels& batch_kernels(const cpu::CpuKernels& kernels) {
  return kernels.search_batches ? *kernels.search_batches : kScalarKernels;
}

// In the *_groups functions, null lane kernels mean the one-group functions run in turn.

void search_scale_and_min_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x,
                                 const float* weights, uint8_t* codes, float* scales, float* mins, float rmin,
                                 float rdelta, int nstep, bool use_abs_error) {
  const LaneKernels* lanes = kernels.search_lanes;
  for (int g = 0; g < count; g += lanes ? kLanes : 1) {
    const size_t at = size_t(n) * size_t(g);
    if (lanes)
      lanes->search_scale_and_min(std::min(kLanes, count - g), n, nmax, x + at, weights + at, codes + at, scales + g,
                                  mins + g, rmin, rdelta, nstep, use_abs_error);
    else
      scales[g] = search_scale_and_min(n, nmax, x + at, weights + at, codes + at, mins + g, rmin, rdelta, nstep,
                                       use_abs_error);
  }
}

void fit_signed_scale_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x, int8_t* codes,
                             const float* weights, float* scales) {
  const LaneKernels* lanes = kernels.search_lanes;
  for (int g = 0; g < count; g += lanes ? kLanes : 1) {
    const size_t at = size_t(n) * size_t(g);
    const float* w = weights ? weights + at : nullptr;
    if (lanes) lanes->fit_signed_scale(std::min(kLanes, count - g), n, nmax, x + at, codes + at, w, scales + g);
    else scales[g] = fit_signed_scale(kernels, n, nmax, x + at, codes + at, w);
  }
}

void requantize_groups(const cpu::CpuKernels& kernels, int count, int n, const float* x, const float* offsets,
                       const float* divisors, int lo, int hi, int bias, uint8_t* codes) {
  if (const LaneKernels* lanes = kernels.search_lanes) {
    lanes->requantize(count, n, x, offsets, divisors, lo, hi, bias, codes);
    return;
  }
  for (int g = 0; g < count; ++g) {
    const float d = divisors[g];
    if (!d) continue;
    for (int i = n * g; i < n * (g + 1); ++i) {
      const int l = round_nearest_even(offsets ? (x[i] + offsets[g]) / d : x[i] / d);
      codes[i] = uint8_t(bias + std::max(lo, std::min(hi, l)));
    }
  }
}

void fit_signed_scale_refined_groups(const cpu::CpuKernels& kernels, int count, int n, int nmax, const float* x,
                                     int8_t* codes, float* scales) {
  const LaneKernels* lanes = n == 16 ? kernels.search_lanes : nullptr;  // the lane kernel takes 16-value groups
  for (int g = 0; g < count; g += lanes ? kRefinedGroupsPerCall : 1) {
    const size_t at = size_t(n) * size_t(g);
    if (lanes)
      lanes->fit_signed_scale_refined(std::min(kRefinedGroupsPerCall, count - g), n, nmax, x + at, codes + at,
                                      scales + g);
    else scales[g] = fit_signed_scale_refined(n, nmax, x + at, codes + at);
  }
}

float fit_signed_scale(const cpu::CpuKernels& kernels, int n, int nmax, const float* x, int8_t* codes,
                       const float* weights) {
  const SignedExtreme extreme = signed_extreme(n, x);
  if (extreme.magnitude < kGroupMaxEps) {
    std::memset(codes, 0, size_t(n));
    return 0.f;
  }
  constexpr int kMaxValues = 32;
  float w[kMaxValues], wx[kMaxValues];
  for (int i = 0; i < n; ++i) {
    w[i] = weights ? weights[i] : x[i] * x[i];
    wx[i] = w[i] * x[i];
  }
  // Candidate 0 maps the extreme value to code -nmax; then 18 nearby scales (nmax + 0.1*step)/extreme.
  constexpr int kCandidates = 19;
  float iscales[kCandidates];
  iscales[0] = float(-nmax) / extreme.value;
  for (int c = 1, step = -9; step <= 9; ++step)
    if (step != 0) iscales[c++] = -(float(nmax) + 0.1f * float(step)) / extreme.value;

  const BatchKernels& batches = batch_kernels(kernels);
  SignedSums sums[2];
  batches.signed_sums(n, nmax, x, w, wx, iscales, kBatch, sums[0]);
  batches.signed_sums(n, nmax, x, w, wx, iscales + kBatch, kCandidates - kBatch, sums[1]);
  auto sumlx = [&](int c) { return sums[c / kBatch].sumlx[c % kBatch]; };
  auto suml2 = [&](int c) { return sums[c / kBatch].suml2[c % kBatch]; };

  float scale = suml2(0) ? sumlx(0) / suml2(0) : 0.0f;
  // Least-squares error is sum(w x^2) - sumlx^2/suml2, so a larger sumlx^2/suml2 is better.
  float best = scale * sumlx(0);
  int chosen = 0;
  for (int c = 1; c < kCandidates; ++c) {
    if (suml2(c) > 0 && sumlx(c) * sumlx(c) > best * suml2(c)) {
      scale = sumlx(c) / suml2(c);
      best = scale * sumlx(c);
      chosen = c;
    }
  }
  for (int i = 0; i < n; ++i) codes[i] = int8_t(nmax + clamp_signed(round_nearest_even(iscales[chosen] * x[i]), nmax));
  return scale;
}

float fit_signed_scale_refined(int n, int nmax, const float* x, int8_t* codes) {
  const SignedExtreme extreme = signed_extreme(n, x);
  if (extreme.magnitude < kGroupMaxEps) {
    std::memset(codes, 0, size_t(n));
    return 0.f;
  }
  const float iscale = float(-nmax) / extreme.value;
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = clamp_signed(round_nearest_even(iscale * x[i]), nmax);
    codes[i] = int8_t(l);  // signed while refining; offset by nmax at the end
    const float w = x[i] * x[i];
    sumlx += w * x[i] * float(l);
    suml2 += w * float(l) * float(l);
  }
  // Coordinate descent: move one code to its best value given the others, keep it if the fit improves.
  for (int pass = 0; pass < 5; ++pass) {
    int changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * float(codes[i]);
      if (slx > 0) {
        float sl2 = suml2 - w * float(codes[i]) * float(codes[i]);
        const int new_l = clamp_signed(round_nearest_even(x[i] * sl2 / slx), nmax);
        if (new_l != codes[i]) {
          slx += w * x[i] * float(new_l);
          sl2 += w * float(new_l) * float(new_l);
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            codes[i] = int8_t(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++changed;
          }
        }
      }
    }
    if (!changed) break;
  }
  for (int i = 0; i < n; ++i) codes[i] = int8_t(codes[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

float search_scale_and_min(int n, int nmax, const float* x, const float* weights, uint8_t* codes,
                           float* min_out, float rmin, float rdelta, int nstep,
                           bool use_abs_error) {
  float min = x[0], max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  // The min is subtracted, so it must not be positive: a group of positive values starts at zero.
  if (min > 0) min = 0;
  if (max == min) {
    std::memset(codes, 0, size_t(n));
    *min_out = -min;
    return 0.f;
  }
  auto error_of = [use_abs_error](float diff) { return use_abs_error ? std::fabs(diff) : diff * diff; };

  float iscale = float(nmax) / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = round_nearest_even(iscale * (x[i] - min));
    codes[i] = uint8_t(std::max(0, std::min(nmax, l)));
    const float diff = scale * float(codes[i]) + min - x[i];
    best_error += weights[i] * error_of(diff);
  }
  if (nstep < 1) {
    *min_out = -min;
    return scale;
  }
  // ggml's steps in order; a winning step's min is the one the next steps subtract.
  constexpr int kMaxValues = 32;
  uint8_t step_codes[kMaxValues];
  for (int step = 0; step <= nstep; ++step) {
    const float step_iscale = (rmin + rdelta * float(step) + float(nmax)) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      const int l = std::max(0, std::min(nmax, round_nearest_even(step_iscale * (x[i] - min))));
      step_codes[i] = uint8_t(l);
      const float w = weights[i];
      sum_l += w * float(l);
      sum_l2 += w * float(l) * float(l);
      sum_xl += w * float(l) * x[i];
    }
    // Weighted least squares for x ~ scale*l + min over these codes.
    const float det = sum_w * sum_l2 - sum_l * sum_l;
    if (!(det > 0)) continue;
    float this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
    float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
    if (this_min > 0) {
      this_min = 0;
      this_scale = sum_xl / sum_l2;
    }
    float error = 0;
    for (int i = 0; i < n; ++i) {
      const float diff = this_scale * float(step_codes[i]) + this_min - x[i];
      error += weights[i] * error_of(diff);
    }
    if (error < best_error) {
      std::memcpy(codes, step_codes, size_t(n));
      best_error = error;
      scale = this_scale;
      min = this_min;
    }
  }
  *min_out = -min;
  return scale;
}

namespace {

// The first i' >= i at which fit_unsigned_scale's pass proposes a level (slx > 0, sl2 > 0 and a
// rounding other than codes[i']) at the sums sumlx, suml2, or n: the lanes run the pass's floats.
int first_proposal(int i, int n, int nmax, const float* x, const uint8_t* codes, const float* weights, float sumlx,
                   float suml2) {
  using Floats = float __attribute__((vector_size(16)));
  using Ints = int32_t __attribute__((vector_size(16)));
  for (; i + 4 <= n; i += 4) {
    Floats xv, w;
    std::memcpy(&xv, x + i, sizeof xv);
    std::memcpy(&w, weights + i, sizeof w);
    const Ints code_int = {codes[i], codes[i + 1], codes[i + 2], codes[i + 3]};
    const Floats code = __builtin_convertvector(code_int, Floats);
    const Floats slx = sumlx - w * xv * code;
    const Floats sl2 = suml2 - w * code * code;
    const Floats shifted = xv * sl2 / slx + 12582912.f;
    Ints l = ((Ints)shifted & 0x007fffff) - 0x00400000;
    l = l > nmax ? nmax : l;
    const Ints proposes = (slx > 0.f) & (sl2 > 0.f) & (l != code_int);
    for (int lane = 0; lane < 4; ++lane)
      if (proposes[lane]) return i + lane;
  }
  for (; i < n; ++i) {
    const float w = weights[i];
    const float slx = sumlx - w * x[i] * float(codes[i]);
    const float sl2 = suml2 - w * float(codes[i]) * float(codes[i]);
    if (slx > 0 && sl2 > 0 && std::min(nmax, round_nearest_even(x[i] * sl2 / slx)) != codes[i]) return i;
  }
  return n;
}

}  // namespace

float fit_unsigned_scale(int n, int nmax, const float* x, uint8_t* codes, const float* weights) {
  float max = 0;
  for (int i = 0; i < n; ++i) max = std::max(max, x[i]);
  if (max < kGroupMaxEps) {
    std::memset(codes, 0, size_t(n));
    return 0.f;
  }
  float iscale = float(nmax) / max;
  for (int i = 0; i < n; ++i) codes[i] = uint8_t(round_nearest_even(iscale * x[i]));
  float scale = 1 / iscale;
  float best_mse = 0;
  for (int i = 0; i < n; ++i) {
    const float diff = x[i] - scale * float(codes[i]);
    best_mse += weights[i] * diff * diff;
  }
  // The 8 steps -4..-1, 1..4 side by side, 4 per vector (each lane the scalar loop's floats: the
  // rounding is round_nearest_even's, the sum runs in order of the values): 8 chains of dependent adds
  // overlap instead of running one after another. The choice among them stays in step order.
  using Floats = float __attribute__((vector_size(16)));
  using Ints = int32_t __attribute__((vector_size(16)));
  const Floats steps[2] = {Floats{-4.f, -3.f, -2.f, -1.f}, Floats{1.f, 2.f, 3.f, 4.f}};
  Floats iscale_step[2], scale_step[2], mse[2];
  for (int v = 0; v < 2; ++v) {
    iscale_step[v] = (0.1f * steps[v] + float(nmax)) / max;
    scale_step[v] = 1 / iscale_step[v];
    mse[v] = Floats{};
  }
  for (int i = 0; i < n; ++i) {
    const float xi = x[i], w = weights[i];
    for (int v = 0; v < 2; ++v) {
      const Floats shifted = iscale_step[v] * xi + 12582912.f;
      Ints l = ((Ints)shifted & 0x007fffff) - 0x00400000;
      l = l > nmax ? nmax : l;
      const Floats diff = xi - scale_step[v] * __builtin_convertvector(l, Floats);
      mse[v] += w * diff * diff;
    }
  }
  for (int s = 0; s < 8; ++s) {
    if (mse[s / 4][s % 4] < best_mse) {
      best_mse = mse[s / 4][s % 4];
      iscale = iscale_step[s / 4][s % 4];
    }
  }
  float sumlx = 0, suml2 = 0;
  for (int i = 0; i < n; ++i) {
    const int l = std::min(nmax, round_nearest_even(iscale * x[i]));
    codes[i] = uint8_t(l);
    sumlx += weights[i] * x[i] * float(l);
    suml2 += weights[i] * float(l) * float(l);
  }
  return refine_unsigned_codes<first_proposal>(n, nmax, x, codes, weights, sumlx, suml2);
}

}  // namespace lowbit::ggml_search
