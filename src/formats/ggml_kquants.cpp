// q2_K ... q6_K: the reference quantizers of ggml-quants.c (quantize_row_qX_K_ref without weights,
// quantize_row_qX_K_impl with them) and the dequantizers, byte for byte.
//
// Every k-quant follows the same three steps per 256-value super-block:
//   1. fit each sub-block on its own (a float scale, and a float min for the asymmetric types);
//   2. quantize those sub-block scales (and mins) to 4/6/8-bit codes against one fp16 super-scale;
//   3. re-derive every value's code from the *fp16-rounded* scales, so the stored codes match what a
//      dequantizer will reconstruct (a sub-block whose rounded scale is 0 keeps its step-1 codes).
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "formats/ggml_block_check.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

using ggml_search::fit_signed_scale_groups;
using ggml_search::fit_signed_scale_refined_groups;
using ggml_search::fit_unsigned_scale;
using ggml_search::kGroupMaxEps;
using ggml_search::round_nearest_even;
using ggml_search::search_scale_and_min_groups;
using kquants::sub_block_factor;
constexpr int kQK = kSuperBlockValues;

float sum_of_squares(const float* x, int n) {
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += x[i] * x[i];
  return sum;
}

// Importance weights of the k-quants: qw * sqrt(sigma2 + x^2).
void importance_weights(const float* x, const float* qw, float sigma2, int n, float* weights) {
  for (int i = 0; i < n; ++i) weights[i] = qw[i] * std::sqrt(sigma2 + x[i] * x[i]);
}

float sum_of(const float* w, int n) {
  float sum = 0;
  for (int i = 0; i < n; ++i) sum += w[i];
  return sum;
}

// 2-bit codes of 256 values into qs[64]: value e in qs[32*(e/128) + e%32] at bits 2*((e%128)/32).
void pack_2bit(const uint8_t* codes, uint8_t* qs) {
  for (int half = 0; half < kQK; half += 128)
    for (int l = 0; l < 32; ++l)
      qs[half / 4 + l] = uint8_t(codes[half + l] | (codes[half + l + 32] << 2) | (codes[half + l + 64] << 4) |
                                 (codes[half + l + 96] << 6));
}

// ---- 6-bit scale/min pairs of q4_K and q5_K (the inverse of kquants::scale_min_k4) ----

void pack_scale_min(uint8_t* packed, int j, uint8_t ls, uint8_t lm) {
  if (j < 4) {
    packed[j] = ls;
    packed[j + 4] = lm;
  } else {
    packed[j + 4] = uint8_t((ls & 0xF) | ((lm & 0xF) << 4));
    packed[j - 4] |= uint8_t((ls >> 4) << 6);
    packed[j] |= uint8_t((lm >> 4) << 6);
  }
}

// ---- 6-bit signed scales of q3_K (stored as s + 32; the inverse of kquants::scale_q3) ----

void pack_q3_scale(uint8_t* packed, int j, int biased) {
  if (j < 8) packed[j] = uint8_t(biased & 0xF);
  else packed[j - 8] |= uint8_t((biased & 0xF) << 4);
  packed[8 + j % 4] |= uint8_t((biased >> 4) << (2 * (j / 4)));
}

// ---- step 3 for the asymmetric types (q4_K, q5_K): codes from the fp16 scales ----

void requantize_scale_min(const cpu::CpuKernels& kernels, const float* x, uint16_t d16, uint16_t dmin16,
                          const uint8_t* packed, int nmax, uint8_t* codes) {
  float d[8], dm[8];
  for (int j = 0; j < 8; ++j) {
    const kquants::ScaleMin sm = kquants::scale_min_k4(packed, j);
    d[j] = sub_block_factor(f16_to_f32(d16), sm.scale);
    dm[j] = sub_block_factor(f16_to_f32(dmin16), sm.min);
  }
  ggml_search::requantize_groups(kernels, 8, 32, x, dm, d, 0, nmax, 0, codes);  // code = round((x + dm) / d)
}

// ---- q2_K ----

void requantize_q2(const cpu::CpuKernels& kernels, const float* x, BlockQ2K& b, uint8_t* codes) {
  const float d_all = f16_to_f32(b.d), dmin_all = f16_to_f32(b.dmin);
  float d[16], m[16];
  for (int j = 0; j < 16; ++j) {
    const kquants::ScaleMin sm = kquants::scale_min_q2(b.scales[j]);
    d[j] = sub_block_factor(d_all, sm.scale);
    m[j] = sub_block_factor(dmin_all, sm.min);
  }
  ggml_search::requantize_groups(kernels, 16, 16, x, m, d, 0, 3, 0, codes);  // code = round((x + m) / d)
}

void quantize_block_q2(const cpu::CpuKernels& kernels, const float* x, BlockQ2K& b) {
  uint8_t codes[kQK];
  float weights[kQK], mins[16], scales[16];
  for (int i = 0; i < kQK; ++i) weights[i] = std::fabs(x[i]);
  search_scale_and_min_groups(kernels, 16, 16, 3, x, weights, codes, scales, mins, -0.5f, 0.1f, 15, true);
  float max_scale = 0, max_min = 0;  // scales and mins are never negative here
  for (int j = 0; j < 16; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  if (max_scale > 0) {
    const float iscale = 15.f / max_scale;
    for (int j = 0; j < 16; ++j) b.scales[j] = uint8_t(round_nearest_even(iscale * scales[j]));
    b.d = f32_to_f16(max_scale / 15.f);
  } else {
    std::memset(b.scales, 0, sizeof b.scales);
    b.d = f32_to_f16(0.f);
  }
  if (max_min > 0) {
    const float iscale = 15.f / max_min;
    for (int j = 0; j < 16; ++j) b.scales[j] |= uint8_t(round_nearest_even(iscale * mins[j]) << 4);
    b.dmin = f32_to_f16(max_min / 15.f);
  } else {
    b.dmin = f32_to_f16(0.f);
  }
  requantize_q2(kernels, x, b, codes);
  pack_2bit(codes, b.qs);
}

void quantize_block_q2_weighted(const cpu::CpuKernels& kernels, const float* x, const float* qw, BlockQ2K& b) {
  uint8_t codes[kQK], scale_codes[16], min_codes[16];
  float weights[kQK], mins[16], scales[16], sub_weight[16];
  const float sigma2 = sum_of_squares(x, kQK) / float(kQK);
  importance_weights(x, qw, sigma2, kQK, weights);
  for (int j = 0; j < 16; ++j) sub_weight[j] = sum_of(weights + 16 * j, 16);
  search_scale_and_min_groups(kernels, 16, 16, 3, x, weights, codes, scales, mins, -0.9f, 0.05f, 36, false);
  b.d = f32_to_f16(fit_unsigned_scale(16, 15, scales, scale_codes, sub_weight));
  b.dmin = f32_to_f16(fit_unsigned_scale(16, 15, mins, min_codes, sub_weight));
  for (int j = 0; j < 16; ++j) b.scales[j] = uint8_t(scale_codes[j] | (min_codes[j] << 4));
  requantize_q2(kernels, x, b, codes);
  pack_2bit(codes, b.qs);
}

// ---- q3_K ----

// Step 3 and packing of q3_K: codes from the fp16 scale, then low 2 bits into qs and bit 2 into hmask.
void requantize_and_pack_q3(const cpu::CpuKernels& kernels, const float* x, BlockQ3K& b, int8_t* codes) {
  const float d_all = f16_to_f32(b.d);
  float d[16];
  for (int j = 0; j < 16; ++j) d[j] = sub_block_factor(d_all, kquants::scale_q3(b.scales, j));
  // code = 4 + round(x / d), in [0, 7]
  ggml_search::requantize_groups(kernels, 16, 16, x, nullptr, d, -4, 3, 4, reinterpret_cast<uint8_t*>(codes));
  uint8_t low[kQK];
  for (int e = 0; e < kQK; ++e) low[e] = uint8_t(codes[e] & 3);
  for (int l = 0; l < 32; ++l) {
    uint8_t bits = 0;
    for (int k = 0; k < 8; ++k) bits |= uint8_t((codes[32 * k + l] > 3) << k);
    b.hmask[l] = bits;
  }
  pack_2bit(low, b.qs);
}

// Steps 2-3 of one super-block, given step 1's sub-block scales and codes.
void finish_block_q3(const cpu::CpuKernels& kernels, const float* x, const float* scales, int8_t* codes, BlockQ3K& b) {
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(scales[j]) > amax) {
      amax = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  std::memset(b.scales, 0, sizeof b.scales);
  if (max_scale) {
    // The largest-magnitude scale maps to -32; d carries its sign.
    const float iscale = -32.f / max_scale;
    for (int j = 0; j < 16; ++j) {
      const int l = int8_t(round_nearest_even(iscale * scales[j]));
      pack_q3_scale(b.scales, j, std::max(-32, std::min(31, l)) + 32);
    }
    b.d = f32_to_f16(1 / iscale);
  } else {
    b.d = f32_to_f16(0.f);
  }
  requantize_and_pack_q3(kernels, x, b, codes);
}

void quantize_block_q3_weighted(const cpu::CpuKernels& kernels, const float* x, const float* qw, BlockQ3K& b) {
  int8_t codes[kQK], scale_codes[16];
  float weights[kQK], scales[16], sub_weight[16];
  const float sigma2 = 2 * sum_of_squares(x, kQK) / float(kQK);
  importance_weights(x, qw, sigma2, kQK, weights);
  for (int j = 0; j < 16; ++j) sub_weight[j] = sum_of(weights + 16 * j, 16);
  fit_signed_scale_groups(kernels, 16, 16, 4, x, codes, weights, scales);
  std::memset(b.scales, 0, sizeof b.scales);
  // scale_codes come out biased by 32 (l + nmax), as pack_q3_scale stores them
  const float d = ggml_search::fit_signed_scale(kernels, 16, 32, scales, scale_codes, sub_weight);
  for (int j = 0; j < 16; ++j) pack_q3_scale(b.scales, j, scale_codes[j]);
  b.d = f32_to_f16(d);
  requantize_and_pack_q3(kernels, x, b, codes);
}

// ---- q4_K and q5_K share steps 1-3 ----

// Step 1 over `count` consecutive super-blocks (1 or 2; two fill the 16 lanes of the group searches):
// each 32-value sub-block's scale, min and codes. Weights: without importance, av_x + |x| (av_x the
// sub-block's RMS); with it, qw * sqrt(sigma2 + x^2), sigma2 over the super-block.
struct SubBlockFits {
  float scales[16], mins[16], sub_weight[16];
  uint8_t codes[2 * kQK];
};

template <int Nmax>
void fit_sub_blocks(const cpu::CpuKernels& kernels, const float* x, const float* qw, int count, float rmin,
                    float rdelta, int nstep, SubBlockFits& fits) {
  float weights[2 * kQK];
  for (int k = 0; k < count; ++k) {
    const float* xb = x + kQK * k;
    float* wb = weights + kQK * k;
    if (qw) {
      const float sigma2 = 2 * sum_of_squares(xb, kQK) / float(kQK);
      importance_weights(xb, qw + kQK * k, sigma2, kQK, wb);
      for (int j = 0; j < 8; ++j) fits.sub_weight[8 * k + j] = sum_of(wb + 32 * j, 32);
      continue;
    }
    for (int j = 0; j < 8; ++j) {
      const float av_x = std::sqrt(sum_of_squares(xb + 32 * j, 32) / 32);
      for (int i = 0; i < 32; ++i) wb[32 * j + i] = av_x + std::fabs(xb[32 * j + i]);
    }
  }
  search_scale_and_min_groups(kernels, 8 * count, 32, Nmax, x, weights, fits.codes, fits.scales, fits.mins, rmin,
                              rdelta, nstep, false);
}

// Step 2 without weights: the largest scale (min) maps to 63.
void quantize_scale_min_ref(const float* scales, const float* mins, uint16_t& d, uint16_t& dmin, uint8_t* packed) {
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < 8; ++j) {
    const uint8_t ls = std::min<uint8_t>(63, uint8_t(round_nearest_even(inv_scale * scales[j])));
    const uint8_t lm = std::min<uint8_t>(63, uint8_t(round_nearest_even(inv_min * mins[j])));
    pack_scale_min(packed, j, ls, lm);
  }
  d = f32_to_f16(max_scale / 63.f);
  dmin = f32_to_f16(max_min / 63.f);
}

// Step 2 with weights: the 6-bit scales and mins fitted under the sub-blocks' total weights. ggml clamps
// the codes to 63 for q5_K only (they never exceed it anyway).
void quantize_scale_min_weighted(const float* scales, const float* mins, const float* sub_weight, bool clamp_codes,
                                 uint16_t& d, uint16_t& dmin, uint8_t* packed) {
  uint8_t scale_codes[8], min_codes[8];
  const float d_block = fit_unsigned_scale(8, 63, scales, scale_codes, sub_weight);
  const float m_block = fit_unsigned_scale(8, 63, mins, min_codes, sub_weight);
  for (int j = 0; j < 8; ++j) {
    uint8_t ls = scale_codes[j], lm = min_codes[j];
    if (clamp_codes) {
      ls = std::min<uint8_t>(63, ls);
      lm = std::min<uint8_t>(63, lm);
    }
    pack_scale_min(packed, j, ls, lm);
  }
  d = f32_to_f16(d_block);
  dmin = f32_to_f16(m_block);
}

// A q4_K or q5_K row: super-blocks in pairs through step 1, then one by one through steps 2-3 and `pack`.
// rmin, rdelta, nstep: the search without weights (with weights ggml uses -0.9, 0.05, 36 for both).
template <int Nmax, class Block, class Pack>
void quantize_row_scale_min(const cpu::CpuKernels& kernels, const float* x, const float* qw, Block* y, int64_t blocks,
                            float rmin, float rdelta, int nstep, bool clamp_codes, Pack pack) {
  SubBlockFits fits;
  for (int64_t i = 0; i < blocks; i += 2) {
    const int count = int(std::min<int64_t>(2, blocks - i));
    const float* xs = x + kQK * i;
    if (qw) fit_sub_blocks<Nmax>(kernels, xs, qw + kQK * i, count, -0.9f, 0.05f, 36, fits);
    else fit_sub_blocks<Nmax>(kernels, xs, nullptr, count, rmin, rdelta, nstep, fits);
    for (int k = 0; k < count; ++k) {
      Block& b = y[i + k];
      std::memset(b.scales, 0, sizeof b.scales);
      if (qw) quantize_scale_min_weighted(fits.scales + 8 * k, fits.mins + 8 * k, fits.sub_weight + 8 * k, clamp_codes,
                                          b.d, b.dmin, b.scales);
      else quantize_scale_min_ref(fits.scales + 8 * k, fits.mins + 8 * k, b.d, b.dmin, b.scales);
      requantize_scale_min(kernels, xs + kQK * k, b.d, b.dmin, b.scales, Nmax, fits.codes + kQK * k);
      pack(fits.codes + kQK * k, b);
    }
  }
}

void pack_q4(const uint8_t* codes, uint8_t* qs) {
  for (int c = 0; c < 4; ++c)
    for (int l = 0; l < 32; ++l) qs[32 * c + l] = uint8_t(codes[64 * c + l] | (codes[64 * c + l + 32] << 4));
}

void pack_q5(const uint8_t* codes, uint8_t* qs, uint8_t* qh) {
  std::memset(qh, 0, 32);
  for (int c = 0; c < 4; ++c) {
    for (int l = 0; l < 32; ++l) {
      const uint8_t lo = codes[64 * c + l], hi = codes[64 * c + l + 32];
      qs[32 * c + l] = uint8_t((lo & 0xF) | ((hi & 0xF) << 4));
      qh[l] |= uint8_t(((lo >> 4) << (2 * c)) | ((hi >> 4) << (2 * c + 1)));
    }
  }
}

// ---- q6_K ----

// ggml uses the same algorithm with and without weights; without, each value weighs x^2.
void quantize_block_q6(const cpu::CpuKernels& kernels, const float* x, const float* qw, BlockQ6K& b) {
  int8_t codes[kQK];
  float scales[16];
  fit_signed_scale_groups(kernels, 16, 16, 32, x, codes, qw, scales);
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    if (std::fabs(scales[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(scales[j]);
      max_scale = scales[j];
    }
  }
  if (max_abs_scale < kGroupMaxEps) {
    std::memset(&b, 0, sizeof b);
    return;
  }
  const float iscale = -128.f / max_scale;
  b.d = f32_to_f16(1 / iscale);
  for (int j = 0; j < 16; ++j) b.scales[j] = int8_t(std::min(127, round_nearest_even(iscale * scales[j])));
  const float d_all = f16_to_f32(b.d);
  float d[16];
  for (int j = 0; j < 16; ++j) d[j] = sub_block_factor(d_all, b.scales[j]);
  // code = 32 + round(x / d), in [0, 63]
  ggml_search::requantize_groups(kernels, 16, 16, x, nullptr, d, -32, 31, 32, reinterpret_cast<uint8_t*>(codes));
  for (int h = 0; h < 2; ++h) {
    const int8_t* c = codes + 128 * h;
    uint8_t* ql = b.ql + 64 * h;
    uint8_t* qh = b.qh + 32 * h;
    for (int l = 0; l < 32; ++l) {
      ql[l] = uint8_t((c[l] & 0xF) | ((c[l + 64] & 0xF) << 4));
      ql[l + 32] = uint8_t((c[l + 32] & 0xF) | ((c[l + 96] & 0xF) << 4));
      qh[l] = uint8_t((c[l] >> 4) | ((c[l + 32] >> 4) << 2) | ((c[l + 64] >> 4) << 4) | ((c[l + 96] >> 4) << 6));
    }
  }
}

}  // namespace

// ---- row entry points ----

void quantize_row_q2_K(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q2_K", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ2K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i) {
    if (quant_weights) quantize_block_q2_weighted(kernels, x + kQK * i, quant_weights + kQK * i, y[i]);
    else quantize_block_q2(kernels, x + kQK * i, y[i]);
  }
}

void quantize_row_q3_K(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q3_K", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ3K*>(blocks);
  const int64_t super_blocks = n / kQK;
  if (quant_weights) {
    for (int64_t i = 0; i < super_blocks; ++i)
      quantize_block_q3_weighted(kernels, x + kQK * i, quant_weights + kQK * i, y[i]);
    return;
  }
  // Step 1 for several super-blocks at a time: their sub-block searches run side by side.
  constexpr int kRun = ggml_search::kRefinedGroupsPerCall / 16;
  int8_t codes[kRun * kQK];
  float scales[kRun * 16];
  for (int64_t i = 0; i < super_blocks; i += kRun) {
    const int count = int(std::min<int64_t>(kRun, super_blocks - i));
    fit_signed_scale_refined_groups(kernels, 16 * count, 16, 4, x + kQK * i, codes, scales);
    for (int k = 0; k < count; ++k)
      finish_block_q3(kernels, x + kQK * (i + k), scales + 16 * k, codes + kQK * k, y[i + k]);
  }
}

void quantize_row_q4_K(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q4_K", n, kQK);
  quantize_row_scale_min<15>(cpu::cpu_kernels(target), x, quant_weights, static_cast<BlockQ4K*>(blocks), n / kQK, -1.f,
                             0.1f, 20, false, [](const uint8_t* codes, BlockQ4K& b) { pack_q4(codes, b.qs); });
}

void quantize_row_q5_K(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q5_K", n, kQK);
  quantize_row_scale_min<31>(cpu::cpu_kernels(target), x, quant_weights, static_cast<BlockQ5K*>(blocks), n / kQK, -0.5f,
                             0.1f, 15, true, [](const uint8_t* codes, BlockQ5K& b) { pack_q5(codes, b.qs, b.qh); });
}

void quantize_row_q6_K(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q6_K", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ6K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i)
    quantize_block_q6(kernels, x + kQK * i, quant_weights ? quant_weights + kQK * i : nullptr, y[i]);
}

// ---- dequantizers: value formulas exactly as ggml evaluates them ----

void dequantize_row_q2_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q2_K", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q2_K(blocks, y, n / kQK, stores);
    return;
  }
  const auto* x = static_cast<const BlockQ2K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    // Sub-block j's 16 codes are contiguous bytes of qs, one 2-bit field each: a loop the compiler vectorises.
    for (int j = 0; j < 16; ++j) {
      const kquants::ScaleMin sm = kquants::scale_min_q2(x[i].scales[j]);
      const float dl = sub_block_factor(d, sm.scale), ml = sub_block_factor(dmin, sm.min);
      const uint8_t* q = x[i].qs + kquants::two_bit_offset(j);
      const int shift = kquants::two_bit_shift(j);
      for (int l = 0; l < 16; ++l) y[16 * j + l] = kquants::value_scale_min(dl, float((q[l] >> shift) & 3), ml);
    }
  }
}

void dequantize_row_q3_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q3_K", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q3_K(blocks, y, n / kQK, stores);
    return;
  }
  const auto* x = static_cast<const BlockQ3K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d_all = f16_to_f32(x[i].d);
    float dl[16];
    for (int j = 0; j < 16; ++j) dl[j] = sub_block_factor(d_all, kquants::scale_q3(x[i].scales, j));
    // Per 16-value sub-block, contiguous bytes of qs and hmask: a loop the compiler vectorises.
    for (int j = 0; j < 16; ++j) {
      const uint8_t* q = x[i].qs + kquants::two_bit_offset(j);
      const uint8_t* hm = x[i].hmask + 16 * (j % 2);
      const int shift = kquants::two_bit_shift(j), high_bit = j / 2;
      for (int l = 0; l < 16; ++l) {
        const int low = (q[l] >> shift) & 3;
        const int missing_high = ((hm[l] >> high_bit) & 1) ? 0 : 4;
        y[16 * j + l] = kquants::value_scale(dl[j], float(low - missing_high));
      }
    }
  }
}

namespace {

// q4_K and q5_K: value = dj * code - mj over 32-value sub-block j, whose codes are the low (j even)
// or high (j odd) nibbles of qs[32 (j / 2) ..]; q5_K's fifth bit (bit j of qh[l]) adds 16.
template <class Block>
void dequantize_scale_min_blocks(const Block* x, float* y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int j = 0; j < 8; ++j) {
      const kquants::ScaleMin sm = kquants::scale_min_k4(x[i].scales, j);
      const float dj = sub_block_factor(d, sm.scale), mj = sub_block_factor(dmin, sm.min);
      const uint8_t* q = x[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        int code = (q[l] >> shift) & 0xF;
        if constexpr (std::is_same_v<Block, BlockQ5K>) code += (x[i].qh[l] >> j) & 1 ? 16 : 0;
        y[32 * j + l] = kquants::value_scale_min(dj, float(code), mj);
      }
    }
  }
}

}  // namespace

void dequantize_row_q4_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q4_K", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) fast->q4_K(blocks, y, n / kQK, stores);
  else dequantize_scale_min_blocks(static_cast<const BlockQ4K*>(blocks), y, n / kQK);
}

void dequantize_row_q5_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q5_K", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) fast->q5_K(blocks, y, n / kQK, stores);
  else dequantize_scale_min_blocks(static_cast<const BlockQ5K*>(blocks), y, n / kQK);
}

void dequantize_row_q6_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q6_K", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q6_K(blocks, y, n / kQK, stores);
    return;
  }
  const auto* x = static_cast<const BlockQ6K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    // Per 16-value sub-block, contiguous bytes of ql and qh: a loop the compiler vectorises.
    for (int j = 0; j < 16; ++j) {
      const int h = j / 8, k = (j % 8) / 2, first = 16 * (j % 2);
      const float dl = sub_block_factor(d, x[i].scales[j]);
      const uint8_t* ql = x[i].ql + 64 * h + 32 * (k & 1) + first;
      const uint8_t* qh = x[i].qh + 32 * h + first;
      for (int l = 0; l < 16; ++l) {
        const int low = (ql[l] >> (4 * (k / 2))) & 0xF;
        const int high = (qh[l] >> (2 * k)) & 3;
        y[16 * j + l] = kquants::value_scale(dl, float((low | (high << 4)) - 32));
      }
    }
  }
}

}  // namespace lowbit::ggml
