// mxfp4 and nvfp4: ggml-quants.c's quantize_row_{mx,nv}fp4_ref, the scale helpers of ggml-impl.h and
// the dequantizers, byte for byte.
#include "lowbit/formats/ggml_fp4.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "formats/ggml_block_check.h"
#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::ggml {
namespace {

// The code whose scaled value is nearest to x: the first of the minimal |kFp4Doubled[i] * scale - x|
// (each product and difference rounded to float, as ggml computes them). Code 0 wins ties with code 8
// (both zero), so -0 is never written.
inline uint8_t nearest_fp4_code(float x, float scale) {
  uint8_t best = 0;
  float best_err = std::fabs(float(kFp4Doubled[0]) * scale - x);
  for (uint8_t i = 1; i < 16; ++i) {
    const float err = std::fabs(float(kFp4Doubled[i]) * scale - x);
    if (err < best_err) {
      best = i;
      best_err = err;
    }
  }
  return best;
}

// The same for n values: for each, the code whose scaled value is nearest, i.e. the first of the minimal
// |kFp4Doubled[i] * scale - x|. The loop runs over codes outside
// and values inside, so the compiler vectorises it; each value still sees the codes in ggml's order.
template <int N>
void nearest_fp4_codes(const float* x, float scale, uint8_t* codes) {
  float best_err[N];
  for (int j = 0; j < N; ++j) {
    best_err[j] = std::fabs(float(kFp4Doubled[0]) * scale - x[j]);
    codes[j] = 0;
  }
  for (uint8_t i = 1; i < 16; ++i) {
    const float value = float(kFp4Doubled[i]) * scale;
    for (int j = 0; j < N; ++j) {
      const float err = std::fabs(value - x[j]);
      const bool better = err < best_err[j];
      best_err[j] = better ? err : best_err[j];
      codes[j] = better ? i : codes[j];
    }
  }
}

float abs_max(const float* x, int n) {
  float amax = 0;
  for (int j = 0; j < n; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// The shared exponent: 2^(e - 127) is 1/4 of amax's power of two, so amax / 2^(e-127) lands in [4, 8)
// and the top E2M1 values (4, 6) cover it. ggml converts the float expression to uint8_t; C leaves a
// negative value undefined, and x86 (cvttss2si, then the low byte) wraps it, which we copy.
uint8_t shared_exponent(float amax) {
  if (!(amax > 0)) return 0;
  const float e = std::floor(std::log2(amax)) - 2 + 127;
  return uint8_t(int32_t(e));
}

}  // namespace

uint8_t f32_to_ue4m3(float x) {
  if (!(x > 0.f)) return 0;
  x = std::min(x, 448.f);
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  int exponent = int((bits >> 23) & 0xFF) - 127 + 7;
  if (exponent <= 0) {
    // Subnormal: mantissa m of m * 2^-9, rounded half up (in float, as ggml: x * 512 + 0.5).
    const int mantissa = std::min(int(x * 512.f + 0.5f), 7);
    return mantissa < 1 ? 0 : uint8_t(mantissa);
  }
  if (exponent >= 15) return 0x7E;
  // Keep 3 mantissa bits, adding the first dropped bit (half up, not to even).
  int mantissa = int((bits >> 20) & 0x7) + int((bits >> 19) & 1);
  if (mantissa > 7) {
    mantissa = 0;
    if (++exponent >= 15) return 0x7E;
  }
  return uint8_t((exponent << 3) | mantissa);
}

void quantize_row_mxfp4(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("mxfp4", n, 32);
  auto* y = static_cast<BlockMxfp4*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, x += 32) {
    const uint8_t e = shared_exponent(abs_max(x, 32));
    const float scale = e8m0_to_f32_half(e);
    y[i].e = e;
    for (int j = 0; j < 16; ++j)
      y[i].qs[j] = uint8_t(nearest_fp4_code(x[j], scale) | (nearest_fp4_code(x[j + 16], scale) << 4));
  }
}

void quantize_row_nvfp4(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("nvfp4", n, 64);
  auto* y = static_cast<BlockNvfp4*>(blocks);
  for (int64_t i = 0; i < n / 64; ++i) {
    for (int s = 0; s < 4; ++s, x += 16) {
      // amax / 6 maps the largest E2M1 magnitude (6) onto amax.
      const uint8_t ue = f32_to_ue4m3(abs_max(x, 16) / 6.f);
      const float scale = ue4m3_to_f32_half(ue);
      y[i].d[s] = ue;
      uint8_t codes[16];
      nearest_fp4_codes<16>(x, scale, codes);
      for (int j = 0; j < 8; ++j) y[i].qs[8 * s + j] = uint8_t(codes[j] | (codes[j + 8] << 4));
    }
  }
}

void dequantize_row_mxfp4(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("mxfp4", n, 32);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->mxfp4(blocks, y, n / 32, stores);
    return;
  }
  const auto* b = static_cast<const BlockMxfp4*>(blocks);
  for (int64_t i = 0; i < n / 32; ++i, y += 32) {
    const float scale = e8m0_to_f32_half(b[i].e);
    for (int j = 0; j < 16; ++j) {
      y[j] = fp4_value(b[i].qs[j] & 0xF, scale);
      y[j + 16] = fp4_value(b[i].qs[j] >> 4, scale);
    }
  }
}

void dequantize_row_nvfp4(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("nvfp4", n, 64);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->nvfp4(blocks, y, n / 64, stores);
    return;
  }
  const auto* b = static_cast<const BlockNvfp4*>(blocks);
  for (int64_t i = 0; i < n / 64; ++i) {
    for (int s = 0; s < 4; ++s, y += 16) {
      const float scale = ue4m3_to_f32_half(b[i].d[s]);
      for (int j = 0; j < 8; ++j) {
        y[j] = fp4_value(b[i].qs[8 * s + j] & 0xF, scale);
        y[j + 8] = fp4_value(b[i].qs[8 * s + j] >> 4, scale);
      }
    }
  }
}

}  // namespace lowbit::ggml
