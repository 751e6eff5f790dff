// q4_0, q4_1, q5_0, q5_1, q8_0: the reference quantizers of ggml-quants.c (quantize_row_*_ref without
// weights, quantize_row_*_impl with them) and the dequantizers, byte for byte.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_legacy.h"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "formats/ggml_block_check.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

using ggml_search::fit_signed_scale_groups;
using ggml_search::kLanes;
using ggml_search::search_scale_and_min_groups;
constexpr int kQK = kLegacyBlockValues;

// With weights, blocks are fitted kLanes at a time (one per vector lane of the group searches).
constexpr int kRun = kLanes;

// The block's value with the largest magnitude, sign kept (first one on ties).
float signed_extreme(const float* x) {
  float amax = 0, max = 0;
  for (int j = 0; j < kQK; ++j) {
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  }
  return max;
}

struct MinMax {
  float min = FLT_MAX;
  float max = -FLT_MAX;
};

MinMax min_max(const float* x) {
  MinMax r;
  for (int j = 0; j < kQK; ++j) {
    if (x[j] < r.min) r.min = x[j];
    if (x[j] > r.max) r.max = x[j];
  }
  return r;
}

// Importance weighting of the legacy types: qw * sqrt(sigma2 + x^2), sigma2 = mean of x^2 over the row.
float row_mean_square(const float* x, int64_t n) {
  float sum_x2 = 0;
  for (int64_t j = 0; j < n; ++j) sum_x2 += x[j] * x[j];
  return sum_x2 / float(n);
}

void importance_weights(const float* x, const float* qw, float sigma2, int64_t n, float* weights) {
  for (int64_t j = 0; j < n; ++j) weights[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
}

// 4-bit codes: value j in the low nibble of qs[j], value j+16 in its high nibble.
void pack_4bit(const uint8_t* codes, uint8_t* qs) {
  for (int j = 0; j < kQK / 2; ++j) qs[j] = uint8_t(codes[j] | (codes[j + kQK / 2] << 4));
}

// 5-bit codes: low nibbles into qs as for 4-bit types, bit 4 of value j into bit j of qh (little-endian).
void pack_5bit(const uint8_t* codes, uint8_t* qs, uint8_t* qh) {
  uint32_t high = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    const uint8_t lo = codes[j], hi = codes[j + kQK / 2];
    qs[j] = uint8_t((lo & 0x0F) | ((hi & 0x0F) << 4));
    high |= uint32_t((lo & 0x10u) >> 4) << j;
    high |= uint32_t((hi & 0x10u) >> 4) << (j + kQK / 2);
  }
  for (int b = 0; b < 4; ++b) qh[b] = uint8_t(high >> (8 * b));
}

}  // namespace

// ---- q4_0 ----

void quantize_row_q4_0(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q4_0", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ4_0*>(blocks);
  const int64_t nb = n / kQK;
  if (quant_weights) {
    const float sigma2 = row_mean_square(x, n);
    float weights[kRun * kQK], d[kRun];
    int8_t codes[kRun * kQK];
    for (int64_t ib = 0; ib < nb; ib += kRun) {
      const int count = int(std::min<int64_t>(kRun, nb - ib));
      importance_weights(x + kQK * ib, quant_weights + kQK * ib, sigma2, kQK * count, weights);
      fit_signed_scale_groups(kernels, count, kQK, 8, x + kQK * ib, codes, weights, d);
      for (int k = 0; k < count; ++k) {
        y[ib + k].d = f32_to_f16(d[k]);
        pack_4bit(reinterpret_cast<const uint8_t*>(codes + kQK * k), y[ib + k].qs);
      }
    }
    return;
  }
  if (const LegacyVectorKernels* fast = kernels.legacy_quantize) {
    fast->q4_0(x, blocks, nb);
    return;
  }
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    // The extreme value maps to code 0 (value -8*d), so d carries the extreme's sign.
    const float d = signed_extreme(xb) / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[ib].d = f32_to_f16(d);
    // ggml truncates x/d + 8.5 toward zero: round half up, on the unrounded float scale.
    uint8_t codes[kQK];
    for (int j = 0; j < kQK; ++j) codes[j] = uint8_t(std::min(15, int(xb[j] * id + 8.5f)));
    pack_4bit(codes, y[ib].qs);
  }
}

void dequantize_row_q4_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q4_0", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q4_0(blocks, y, n / kQK, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ4_0*>(blocks);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(b[ib].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = legacy::value_type0(float((b[ib].qs[j] & 0x0F) - 8), d);
      y[j + 16] = legacy::value_type0(float((b[ib].qs[j] >> 4) - 8), d);
    }
  }
}

// ---- q4_1 ----

void quantize_row_q4_1(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q4_1", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ4_1*>(blocks);
  const int64_t nb = n / kQK;
  if (quant_weights) {
    const float sigma2 = row_mean_square(x, n);
    float weights[kRun * kQK], d[kRun], neg_min[kRun];
    uint8_t codes[kRun * kQK];
    for (int64_t ib = 0; ib < nb; ib += kRun) {
      const int count = int(std::min<int64_t>(kRun, nb - ib));
      importance_weights(x + kQK * ib, quant_weights + kQK * ib, sigma2, kQK * count, weights);
      search_scale_and_min_groups(kernels, count, kQK, 15, x + kQK * ib, weights, codes, d, neg_min, -0.9f, 0.05f, 36,
                                  false);
      for (int k = 0; k < count; ++k) {
        y[ib + k].d = f32_to_f16(d[k]);
        y[ib + k].m = f32_to_f16(-neg_min[k]);
        pack_4bit(codes + kQK * k, y[ib + k].qs);
      }
    }
    return;
  }
  if (const LegacyVectorKernels* fast = kernels.legacy_quantize) {
    fast->q4_1(x, blocks, nb);
    return;
  }
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const MinMax r = min_max(xb);
    const float d = (r.max - r.min) / 15;
    const float id = d ? 1.0f / d : 0.0f;
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(r.min);
    uint8_t codes[kQK];
    for (int j = 0; j < kQK; ++j) codes[j] = uint8_t(std::min(15, int((xb[j] - r.min) * id + 0.5f)));
    pack_4bit(codes, y[ib].qs);
  }
}

void dequantize_row_q4_1(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q4_1", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q4_1(blocks, y, n / kQK, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ4_1*>(blocks);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(b[ib].d), m = f16_to_f32(b[ib].m);
    for (int j = 0; j < 16; ++j) {
      y[j] = legacy::value_type1(float(b[ib].qs[j] & 0x0F), d, m);
      y[j + 16] = legacy::value_type1(float(b[ib].qs[j] >> 4), d, m);
    }
  }
}

// ---- q5_0 ----

void quantize_row_q5_0(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q5_0", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ5_0*>(blocks);
  const int64_t nb = n / kQK;
  uint8_t codes[kQK];
  if (quant_weights) {
    const float sigma2 = row_mean_square(x, n);
    float weights[kRun * kQK], d[kRun];
    int8_t signed_codes[kRun * kQK];
    for (int64_t ib = 0; ib < nb; ib += kRun) {
      const int count = int(std::min<int64_t>(kRun, nb - ib));
      importance_weights(x + kQK * ib, quant_weights + kQK * ib, sigma2, kQK * count, weights);
      fit_signed_scale_groups(kernels, count, kQK, 16, x + kQK * ib, signed_codes, weights, d);
      for (int k = 0; k < count; ++k) {
        y[ib + k].d = f32_to_f16(d[k]);
        pack_5bit(reinterpret_cast<const uint8_t*>(signed_codes + kQK * k), y[ib + k].qs, y[ib + k].qh);
      }
    }
    return;
  }
  if (const LegacyVectorKernels* fast = kernels.legacy_quantize) {
    fast->q5_0(x, blocks, nb);
    return;
  }
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const float d = signed_extreme(xb) / -16;
    const float id = d ? 1.0f / d : 0.0f;
    y[ib].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) codes[j] = uint8_t(std::min(31, int(xb[j] * id + 16.5f)));
    pack_5bit(codes, y[ib].qs, y[ib].qh);
  }
}

void dequantize_row_q5_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q5_0", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q5_0(blocks, y, n / kQK, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ5_0*>(blocks);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(b[ib].d);
    const uint32_t qh = legacy::fifth_bits_word(b[ib].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = legacy::code_5bit_low(b[ib].qs[j], qh, j), hi = legacy::code_5bit_high(b[ib].qs[j], qh, j);
      y[j] = legacy::value_type0(float(lo - 16), d);
      y[j + 16] = legacy::value_type0(float(hi - 16), d);
    }
  }
}

// ---- q5_1 ----

void quantize_row_q5_1(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("q5_1", n, kQK);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  auto* y = static_cast<BlockQ5_1*>(blocks);
  const int64_t nb = n / kQK;
  uint8_t codes[kQK];
  if (quant_weights) {
    const float sigma2 = row_mean_square(x, n);
    float weights[kRun * kQK], d[kRun], neg_min[kRun];
    uint8_t run_codes[kRun * kQK];
    for (int64_t ib = 0; ib < nb; ib += kRun) {
      const int count = int(std::min<int64_t>(kRun, nb - ib));
      importance_weights(x + kQK * ib, quant_weights + kQK * ib, sigma2, kQK * count, weights);
      search_scale_and_min_groups(kernels, count, kQK, 31, x + kQK * ib, weights, run_codes, d, neg_min, -0.9f, 0.05f,
                                  36, false);
      for (int k = 0; k < count; ++k) {
        y[ib + k].d = f32_to_f16(d[k]);
        y[ib + k].m = f32_to_f16(-neg_min[k]);
        pack_5bit(run_codes + kQK * k, y[ib + k].qs, y[ib + k].qh);
      }
    }
    return;
  }
  if (const LegacyVectorKernels* fast = kernels.legacy_quantize) {
    fast->q5_1(x, blocks, nb);
    return;
  }
  for (int64_t ib = 0; ib < nb; ++ib) {
    const float* xb = x + kQK * ib;
    const MinMax r = min_max(xb);
    const float d = (r.max - r.min) / 31;
    const float id = d ? 1.0f / d : 0.0f;
    y[ib].d = f32_to_f16(d);
    y[ib].m = f32_to_f16(r.min);
    // No clamp here in ggml: (max - min) * id + 0.5 stays below 32.
    for (int j = 0; j < kQK; ++j) codes[j] = uint8_t(int((xb[j] - r.min) * id + 0.5f));
    pack_5bit(codes, y[ib].qs, y[ib].qh);
  }
}

void dequantize_row_q5_1(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q5_1", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q5_1(blocks, y, n / kQK, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ5_1*>(blocks);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(b[ib].d), m = f16_to_f32(b[ib].m);
    const uint32_t qh = legacy::fifth_bits_word(b[ib].qh);
    for (int j = 0; j < 16; ++j) {
      const int lo = legacy::code_5bit_low(b[ib].qs[j], qh, j), hi = legacy::code_5bit_high(b[ib].qs[j], qh, j);
      y[j] = legacy::value_type1(float(lo), d, m);
      y[j + 16] = legacy::value_type1(float(hi), d, m);
    }
  }
}

// ---- q8_0 ----

void quantize_row_q8_0(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget target) {
  require_whole_blocks("q8_0", n, kQK);
  auto* y = static_cast<BlockQ8_0*>(blocks);
  if (const LegacyVectorKernels* fast = cpu::cpu_kernels(target).legacy_quantize) {
    fast->q8_0(x, blocks, n / kQK);
    return;
  }
  for (int64_t ib = 0; ib < n / kQK; ++ib) {
    const float* xb = x + kQK * ib;
    float amax = 0;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float d = amax / 127;
    const float id = d ? 1.0f / d : 0.0f;
    y[ib].d = f32_to_f16(d);
    // roundf: halves away from zero, unlike the k-quants' round-to-even.
    for (int j = 0; j < kQK; ++j) y[ib].qs[j] = int8_t(std::round(xb[j] * id));
  }
}

void dequantize_row_q8_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q8_0", n, kQK);
  if (const DequantVectorKernels* fast = cpu::cpu_kernels(target).dequantize) {
    fast->q8_0(blocks, y, n / kQK, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ8_0*>(blocks);
  for (int64_t ib = 0; ib < n / kQK; ++ib, y += kQK) {
    const float d = f16_to_f32(b[ib].d);
    for (int j = 0; j < kQK; ++j) y[j] = legacy::value_type0(float(b[ib].qs[j]), d);
  }
}

}  // namespace lowbit::ggml
