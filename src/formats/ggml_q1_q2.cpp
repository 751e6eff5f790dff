// q1_0 and q2_0: ggml-quants.c's quantize_row_q{1,2}_0_ref and the dequantizers, byte for byte.
#include "lowbit/formats/ggml_q1_q2.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "formats/ggml_block_check.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

constexpr int kQ1Values = 128;
constexpr int kQ2Values = 64;

// ggml's roundf (halves away from zero) for |v| < 2^31, without a libm call so that loops vectorise:
// truncate, then step away from zero when the dropped part (exact: v - trunc(v)) is >= 1/2.
inline int round_half_away(float v) {
  const int t = int(v);
  const float rest = v - float(t);
  return t + int(rest >= 0.5f) - int(rest <= -0.5f);
}

}  // namespace

void quantize_row_q1_0(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("q1_0", n, kQ1Values);
  auto* y = static_cast<BlockQ1_0*>(blocks);
  for (int64_t i = 0; i < n / kQ1Values; ++i, x += kQ1Values) {
    // The mean is a float sum in value order, then one division, as ggml's.
    float sum_abs = 0;
    for (int j = 0; j < kQ1Values; ++j) sum_abs += std::fabs(x[j]);
    y[i].d = f32_to_f16(sum_abs / float(kQ1Values));
    for (int k = 0; k < 16; ++k) {
      unsigned bits = 0;
      for (int b = 0; b < 8; ++b) bits |= unsigned(x[8 * k + b] >= 0.f) << b;  // -0.0 counts as >= 0
      y[i].qs[k] = uint8_t(bits);
    }
  }
}

void quantize_row_q2_0(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("q2_0", n, kQ2Values);
  auto* y = static_cast<BlockQ2_0*>(blocks);
  for (int64_t i = 0; i < n / kQ2Values; ++i, x += kQ2Values) {
    float amax = 0;
    for (int j = 0; j < kQ2Values; ++j) amax = std::max(amax, std::fabs(x[j]));
    // Codes from 1/d of the unrounded float d; roundf rounds halves away from zero.
    const float id = amax > 0 ? 1.f / amax : 0.f;
    y[i].d = f32_to_f16(amax);
    for (int k = 0; k < 16; ++k) {
      unsigned packed = 0;
      for (int b = 0; b < 4; ++b) {
        const int q = std::clamp(round_half_away(x[4 * k + b] * id) + 1, 0, 3);
        packed |= unsigned(q) << (2 * b);
      }
      y[i].qs[k] = uint8_t(packed);
    }
  }
}

void dequantize_row_q1_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q1_0", n, kQ1Values);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->q1_0(blocks, y, n / kQ1Values, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ1_0*>(blocks);
  for (int64_t i = 0; i < n / kQ1Values; ++i, y += kQ1Values) {
    const uint32_t d_bits = std::bit_cast<uint32_t>(f16_to_f32(b[i].d));
    for (int j = 0; j < kQ1Values; ++j) y[j] = q1_0_value(d_bits, uint32_t(b[i].qs[j / 8]) >> (j % 8));
  }
}

void dequantize_row_q2_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("q2_0", n, kQ2Values);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->q2_0(blocks, y, n / kQ2Values, stores);
    return;
  }
  const auto* b = static_cast<const BlockQ2_0*>(blocks);
  for (int64_t i = 0; i < n / kQ2Values; ++i, y += kQ2Values) {
    const float d = f16_to_f32(b[i].d);
    for (int j = 0; j < kQ2Values; ++j) y[j] = q2_0_value(uint32_t(b[i].qs[j / 4]) >> (2 * (j % 4)), d);
  }
}

}  // namespace lowbit::ggml
