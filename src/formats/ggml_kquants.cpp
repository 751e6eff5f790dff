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

#include "formats/ggml_block_check.h"
#include "formats/ggml_kquants_search.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

using ggml_search::fit_signed_scale;
using ggml_search::fit_signed_scale_refined;
using ggml_search::fit_unsigned_scale;
using ggml_search::kGroupMaxEps;
using ggml_search::round_nearest_even;
using ggml_search::search_scale_and_min;
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

// ---- 6-bit scale/min pairs of q4_K and q5_K (ggml's get_scale_min_k4 and its inverse) ----

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

struct ScaleMin {
  uint8_t scale, min;
};

ScaleMin unpack_scale_min(const uint8_t* packed, int j) {
  if (j < 4) return {uint8_t(packed[j] & 63), uint8_t(packed[j + 4] & 63)};
  return {uint8_t((packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4)),
          uint8_t((packed[j + 4] >> 4) | ((packed[j] >> 6) << 4))};
}

// ---- 6-bit signed scales of q3_K (stored as s + 32) ----

void pack_q3_scale(uint8_t* packed, int j, int biased) {
  if (j < 8) packed[j] = uint8_t(biased & 0xF);
  else packed[j - 8] |= uint8_t((biased & 0xF) << 4);
  packed[8 + j % 4] |= uint8_t((biased >> 4) << (2 * (j / 4)));
}

int unpack_q3_scale(const uint8_t* packed, int j) {
  const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

// ---- step 3 for the asymmetric types (q4_K, q5_K): codes from the fp16 scales ----

void requantize_scale_min(const float* x, uint16_t d16, uint16_t dmin16, const uint8_t* packed, int nmax,
                          uint8_t* codes) {
  for (int j = 0; j < kQK / 32; ++j) {
    const ScaleMin sm = unpack_scale_min(packed, j);
    const float d = f16_to_f32(d16) * float(sm.scale);
    if (!d) continue;
    const float dm = f16_to_f32(dmin16) * float(sm.min);
    for (int i = 0; i < 32; ++i) {
      const int l = round_nearest_even((x[32 * j + i] + dm) / d);
      codes[32 * j + i] = uint8_t(std::max(0, std::min(nmax, l)));
    }
  }
}

// ---- q2_K ----

void requantize_q2(const float* x, BlockQ2K& b, uint8_t* codes) {
  const float d_all = f16_to_f32(b.d), dmin_all = f16_to_f32(b.dmin);
  for (int j = 0; j < kQK / 16; ++j) {
    const float d = d_all * float(b.scales[j] & 0xF);
    if (!d) continue;
    const float m = dmin_all * float(b.scales[j] >> 4);
    for (int i = 0; i < 16; ++i) {
      const int l = round_nearest_even((x[16 * j + i] + m) / d);
      codes[16 * j + i] = uint8_t(std::max(0, std::min(3, l)));
    }
  }
}

void quantize_block_q2(const float* x, BlockQ2K& b) {
  uint8_t codes[kQK];
  float weights[16], mins[16], scales[16];
  float max_scale = 0, max_min = 0;  // scales and mins are never negative here
  for (int j = 0; j < 16; ++j) {
    for (int i = 0; i < 16; ++i) weights[i] = std::fabs(x[16 * j + i]);
    scales[j] = search_scale_and_min(16, 3, x + 16 * j, weights, codes + 16 * j, &mins[j], -0.5f, 0.1f, 15,
                                     true);
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
  requantize_q2(x, b, codes);
  pack_2bit(codes, b.qs);
}

void quantize_block_q2_weighted(const float* x, const float* qw, BlockQ2K& b) {
  uint8_t codes[kQK], scale_codes[16], min_codes[16];
  float weights[16], mins[16], scales[16], sub_weight[16];
  const float sigma2 = sum_of_squares(x, kQK) / float(kQK);
  for (int j = 0; j < 16; ++j) {
    importance_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weights);
    sub_weight[j] = sum_of(weights, 16);
    scales[j] = search_scale_and_min(16, 3, x + 16 * j, weights, codes + 16 * j, &mins[j], -0.9f, 0.05f, 36,
                                     false);
  }
  b.d = f32_to_f16(fit_unsigned_scale(16, 15, scales, scale_codes, sub_weight));
  b.dmin = f32_to_f16(fit_unsigned_scale(16, 15, mins, min_codes, sub_weight));
  for (int j = 0; j < 16; ++j) b.scales[j] = uint8_t(scale_codes[j] | (min_codes[j] << 4));
  requantize_q2(x, b, codes);
  pack_2bit(codes, b.qs);
}

// ---- q3_K ----

// Step 3 and packing of q3_K: codes from the fp16 scale, then low 2 bits into qs and bit 2 into hmask.
void requantize_and_pack_q3(const float* x, BlockQ3K& b, int8_t* codes) {
  const float d_all = f16_to_f32(b.d);
  for (int j = 0; j < kQK / 16; ++j) {
    const float d = d_all * float(unpack_q3_scale(b.scales, j));
    if (!d) continue;
    for (int i = 0; i < 16; ++i) {
      const int l = round_nearest_even(x[16 * j + i] / d);
      codes[16 * j + i] = int8_t(std::max(-4, std::min(3, l)) + 4);
    }
  }
  std::memset(b.hmask, 0, sizeof b.hmask);
  uint8_t low[kQK];
  for (int e = 0; e < kQK; ++e) {
    if (codes[e] > 3) b.hmask[e % 32] |= uint8_t(1 << (e / 32));
    low[e] = uint8_t(codes[e] & 3);
  }
  pack_2bit(low, b.qs);
}

void quantize_block_q3(const float* x, BlockQ3K& b) {
  int8_t codes[kQK];
  float scales[16];
  float max_scale = 0, amax = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_signed_scale_refined(16, 4, x + 16 * j, codes + 16 * j);
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
  requantize_and_pack_q3(x, b, codes);
}

void quantize_block_q3_weighted(const float* x, const float* qw, BlockQ3K& b) {
  int8_t codes[kQK], scale_codes[16];
  float weights[16], scales[16], sub_weight[16];
  const float sigma2 = 2 * sum_of_squares(x, kQK) / float(kQK);
  for (int j = 0; j < 16; ++j) {
    importance_weights(x + 16 * j, qw + 16 * j, sigma2, 16, weights);
    sub_weight[j] = sum_of(weights, 16);
    scales[j] = fit_signed_scale(16, 4, x + 16 * j, codes + 16 * j, weights);
  }
  std::memset(b.scales, 0, sizeof b.scales);
  const float d = fit_signed_scale(16, 32, scales, scale_codes, sub_weight);  // codes already biased by 32
  for (int j = 0; j < 16; ++j) pack_q3_scale(b.scales, j, scale_codes[j]);
  b.d = f32_to_f16(d);
  requantize_and_pack_q3(x, b, codes);
}

// ---- q4_K and q5_K share steps 1-2 ----

// Steps 1-2 without weights: per 32-value sub-block, weights av_x + |x| (av_x the sub-block's RMS).
template <int Nmax>
void fit_scale_min_ref(const float* x, float rmin, float rdelta, int nstep, uint16_t& d, uint16_t& dmin,
                       uint8_t* packed, uint8_t* codes) {
  float weights[32], mins[8], scales[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float av_x = std::sqrt(sum_of_squares(x + 32 * j, 32) / 32);
    for (int i = 0; i < 32; ++i) weights[i] = av_x + std::fabs(x[32 * j + i]);
    scales[j] = search_scale_and_min(32, Nmax, x + 32 * j, weights, codes + 32 * j, &mins[j], rmin, rdelta,
                                     nstep, false);
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

// Steps 1-2 with weights: sigma2 over the super-block, then the 6-bit scales and mins fitted under the
// sub-blocks' total weights. ggml clamps the codes to 63 for q5_K only (they never exceed it anyway).
template <int Nmax>
void fit_scale_min_weighted(const float* x, const float* qw, bool clamp_codes, uint16_t& d, uint16_t& dmin,
                            uint8_t* packed, uint8_t* codes) {
  uint8_t scale_codes[8], min_codes[8];
  float weights[32], sub_weight[8], mins[8], scales[8];
  const float sigma2 = 2 * sum_of_squares(x, kQK) / float(kQK);
  for (int j = 0; j < 8; ++j) {
    importance_weights(x + 32 * j, qw + 32 * j, sigma2, 32, weights);
    sub_weight[j] = sum_of(weights, 32);
    scales[j] = search_scale_and_min(32, Nmax, x + 32 * j, weights, codes + 32 * j, &mins[j], -0.9f, 0.05f,
                                     36, false);
  }
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
void quantize_block_q6(const float* x, const float* qw, BlockQ6K& b) {
  int8_t codes[kQK];
  float scales[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    scales[j] = fit_signed_scale(16, 32, x + 16 * j, codes + 16 * j, qw ? qw + 16 * j : nullptr);
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
  for (int j = 0; j < 16; ++j) {
    const float d = d_all * float(b.scales[j]);
    if (!d) continue;
    for (int i = 0; i < 16; ++i) {
      const int l = round_nearest_even(x[16 * j + i] / d);
      codes[16 * j + i] = int8_t(std::max(-32, std::min(31, l)) + 32);
    }
  }
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

void quantize_row_q2_K(const float* x, void* blocks, int64_t n, const float* quant_weights) {
  require_whole_blocks("q2_K", n, kQK);
  auto* y = static_cast<BlockQ2K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i) {
    if (quant_weights) quantize_block_q2_weighted(x + kQK * i, quant_weights + kQK * i, y[i]);
    else quantize_block_q2(x + kQK * i, y[i]);
  }
}

void quantize_row_q3_K(const float* x, void* blocks, int64_t n, const float* quant_weights) {
  require_whole_blocks("q3_K", n, kQK);
  auto* y = static_cast<BlockQ3K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i) {
    if (quant_weights) quantize_block_q3_weighted(x + kQK * i, quant_weights + kQK * i, y[i]);
    else quantize_block_q3(x + kQK * i, y[i]);
  }
}

void quantize_row_q4_K(const float* x, void* blocks, int64_t n, const float* quant_weights) {
  require_whole_blocks("q4_K", n, kQK);
  auto* y = static_cast<BlockQ4K*>(blocks);
  uint8_t codes[kQK];
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* xb = x + kQK * i;
    BlockQ4K& b = y[i];
    std::memset(b.scales, 0, sizeof b.scales);
    if (quant_weights) fit_scale_min_weighted<15>(xb, quant_weights + kQK * i, false, b.d, b.dmin, b.scales, codes);
    else fit_scale_min_ref<15>(xb, -1.f, 0.1f, 20, b.d, b.dmin, b.scales, codes);
    requantize_scale_min(xb, b.d, b.dmin, b.scales, 15, codes);
    pack_q4(codes, b.qs);
  }
}

void quantize_row_q5_K(const float* x, void* blocks, int64_t n, const float* quant_weights) {
  require_whole_blocks("q5_K", n, kQK);
  auto* y = static_cast<BlockQ5K*>(blocks);
  uint8_t codes[kQK];
  for (int64_t i = 0; i < n / kQK; ++i) {
    const float* xb = x + kQK * i;
    BlockQ5K& b = y[i];
    std::memset(b.scales, 0, sizeof b.scales);
    if (quant_weights) fit_scale_min_weighted<31>(xb, quant_weights + kQK * i, true, b.d, b.dmin, b.scales, codes);
    else fit_scale_min_ref<31>(xb, -0.5f, 0.1f, 15, b.d, b.dmin, b.scales, codes);
    requantize_scale_min(xb, b.d, b.dmin, b.scales, 31, codes);
    pack_q5(codes, b.qs, b.qh);
  }
}

void quantize_row_q6_K(const float* x, void* blocks, int64_t n, const float* quant_weights) {
  require_whole_blocks("q6_K", n, kQK);
  auto* y = static_cast<BlockQ6K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i)
    quantize_block_q6(x + kQK * i, quant_weights ? quant_weights + kQK * i : nullptr, y[i]);
}

// ---- dequantizers: value formulas exactly as ggml evaluates them ----

void dequantize_row_q2_K(const void* blocks, float* y, int64_t n) {
  require_whole_blocks("q2_K", n, kQK);
  const auto* x = static_cast<const BlockQ2K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int e = 0; e < kQK; ++e) {
      const uint8_t sc = x[i].scales[e / 16];
      const int q = (x[i].qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      y[e] = d * float(sc & 0xF) * float(q) - dmin * float(sc >> 4);
    }
  }
}

void dequantize_row_q3_K(const void* blocks, float* y, int64_t n) {
  require_whole_blocks("q3_K", n, kQK);
  const auto* x = static_cast<const BlockQ3K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d_all = f16_to_f32(x[i].d);
    float dl[16];
    for (int j = 0; j < 16; ++j) dl[j] = d_all * float(unpack_q3_scale(x[i].scales, j));
    for (int e = 0; e < kQK; ++e) {
      const int low = (x[i].qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
      const bool high = x[i].hmask[e % 32] & (1 << (e / 32));
      y[e] = dl[e / 16] * float(low - (high ? 0 : 4));
    }
  }
}

void dequantize_row_q4_K(const void* blocks, float* y, int64_t n) {
  require_whole_blocks("q4_K", n, kQK);
  const auto* x = static_cast<const BlockQ4K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int j = 0; j < 8; ++j) {
      const ScaleMin sm = unpack_scale_min(x[i].scales, j);
      const float dj = d * float(sm.scale), mj = dmin * float(sm.min);
      const uint8_t* q = x[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) y[32 * j + l] = dj * float((q[l] >> shift) & 0xF) - mj;
    }
  }
}

void dequantize_row_q5_K(const void* blocks, float* y, int64_t n) {
  require_whole_blocks("q5_K", n, kQK);
  const auto* x = static_cast<const BlockQ5K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d), dmin = f16_to_f32(x[i].dmin);
    for (int j = 0; j < 8; ++j) {
      const ScaleMin sm = unpack_scale_min(x[i].scales, j);
      const float dj = d * float(sm.scale), mj = dmin * float(sm.min);
      const uint8_t* q = x[i].qs + 32 * (j / 2);
      const int shift = 4 * (j % 2);
      for (int l = 0; l < 32; ++l) {
        const int code = ((q[l] >> shift) & 0xF) + ((x[i].qh[l] >> j) & 1 ? 16 : 0);
        y[32 * j + l] = dj * float(code) - mj;
      }
    }
  }
}

void dequantize_row_q6_K(const void* blocks, float* y, int64_t n) {
  require_whole_blocks("q6_K", n, kQK);
  const auto* x = static_cast<const BlockQ6K*>(blocks);
  for (int64_t i = 0; i < n / kQK; ++i, y += kQK) {
    const float d = f16_to_f32(x[i].d);
    for (int e = 0; e < kQK; ++e) {
      const int h = e / 128, k = (e % 128) / 32, l = e % 32;
      const int low = (x[i].ql[64 * h + l + 32 * (k & 1)] >> (4 * (k / 2))) & 0xF;
      const int high = (x[i].qh[32 * h + l] >> (2 * k)) & 3;
      y[e] = d * float(x[i].scales[e / 16]) * float((low | (high << 4)) - 32);
    }
  }
}

}  // namespace lowbit::ggml
