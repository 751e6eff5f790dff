// ggml's 4-bit floating-point types: each 4-bit code is an E2M1 float (sign, 2 exponent bits, 1 mantissa
// bit) scaled per block by a power of two (mxfp4, OCP Microscaling) or by an unsigned E4M3 float per 16
// values (nvfp4, NVIDIA). ggml's table holds the E2M1 values doubled, so the scale helpers return half
// the scale (ggml src/ggml-common.h, src/ggml-impl.h).
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_{mx,nv}fp4_ref); ggml ignores
// importance weights for both. The row length must be a multiple of 32 (mxfp4) or 64 (nvfp4).
//
// The table, the scale decoders and the value formula are read by the C++ compiler and by nvcc: the
// scalar dequantizers and the CUDA kernels (ggml_ternary_fp4.cu) decode through the same functions.
#pragma once

#include <math.h>

#include <array>
#include <bit>
#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

// ggml's kvalues_fp4 (= kvalues_mxfp4): 2 x E2M1 for codes 0..15; code 8 is -0, stored as 0.
inline constexpr std::array<int8_t, 16> kFp4Doubled = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

// kFp4Doubled[code & 15] as a float. The table is copied into the function because device code
// cannot index a host array; the copy is a compile-time constant either way.
LOWBIT_HOST_DEVICE inline float fp4_doubled(uint32_t code) {
  constexpr std::array<int8_t, 16> values = kFp4Doubled;
  return float(values[code & 15]);
}

// mxfp4: 32 values; value j = kFp4Doubled[code] * 2^(e - 128) (e8m0_to_f32_half(e)).
// bytes 0 e (E8M0 exponent) | 1-16 qs (value j low nibble of qs[j], value j+16 high nibble)
struct BlockMxfp4 {
  uint8_t e;
  uint8_t qs[16];
};
static_assert(sizeof(BlockMxfp4) == 17);

// nvfp4: 64 values in four sub-blocks of 16; value 16s + j = kFp4Doubled[code] * ue4m3_to_f32_half(d[s]).
// Sub-block s: value 16s + j low nibble of qs[8s + j], value 16s + j + 8 high nibble.
// bytes 0-3 d (UE4M3) | 4-35 qs
struct BlockNvfp4 {
  uint8_t d[4];
  uint8_t qs[32];
};
static_assert(sizeof(BlockNvfp4) == 36);

// ggml_e8m0_to_fp32_half: 2^(e - 128), as a float (subnormal for e < 2). e >= 2 is the normal float
// with exponent field e - 1; e = 0, 1 are the subnormals 2^-128 (0x00200000) and 2^-127 (0x00400000).
LOWBIT_HOST_DEVICE inline float e8m0_to_f32_half(uint32_t e) {
  return std::bit_cast<float>(e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23);
}
// ggml_ue4m3_to_fp32: half the value of an unsigned E4M3 byte (bias 7, subnormals m * 2^-9); 0x00 and
// 0x7F (NaN in E4M3) read as 0. Every step is exact in float.
LOWBIT_HOST_DEVICE inline float ue4m3_to_f32_half(uint32_t bits) {
  if (bits == 0 || bits == 0x7F) return 0.f;
  const int exponent = int(bits >> 3) & 0xF, mantissa = int(bits & 0x7);
  const float raw = exponent == 0 ? ldexpf(float(mantissa), -9) : ldexpf(1.f + float(mantissa) / 8.f, exponent - 7);
  return raw * 0.5f;
}

// A value: the doubled E2M1 value of its code times the halved block (sub-block) scale.
LOWBIT_HOST_DEVICE inline float fp4_value(uint32_t code, float half_scale) {
  return mul_rn(fp4_doubled(code), half_scale);
}
// ggml_fp32_to_ue4m3: rounds a positive float to UE4M3 (round half up on the dropped mantissa bits),
// saturating at 0x7E = 448; 0 for x <= 0, NaN and values below the smallest subnormal.
uint8_t f32_to_ue4m3(float x);

void quantize_row_mxfp4(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_nvfp4(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_mxfp4(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_nvfp4(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
