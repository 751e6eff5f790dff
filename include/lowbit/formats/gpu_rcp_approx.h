// NVIDIA's approximate float32 reciprocal, reproduced bit for bit on the CPU.
//
// bitsandbytes' CUDA library is built with --use_fast_math, so every `1.0f / absmax` in its quantize
// kernels compiles to rcp.approx.ftz.f32 (MUFU.RCP), which is not the IEEE reciprocal: for a normal
// x > 0 whose reciprocal is normal, its bit pattern is the correctly rounded 1/x plus a delta in
// {-1, 0, +1} that depends only on x's 23 mantissa bits. The delta table was measured on an H100
// for all 2^23 mantissas (golden/bnb/rcp_approx_delta.safetensors). No closed form reproducing it
// was found (a per-segment quadratic leaves ~0.15 ulp of unexplained fixed-point noise), so the
// library embeds it, compressed (see scripts/gen_gpu_rcp_delta_table.py), and decodes it once.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"

namespace lowbit::gpu {

// rcp.approx.ftz.f32(x): subnormal inputs count as zero (ftz); ±0 gives ±Inf, ±Inf gives ±0,
// NaN stays NaN, and a reciprocal below the smallest normal is flushed to a zero of x's sign.
float rcp_approx_ftz(float x);

// The delta for mantissa bits m (0 .. 2^23 - 1), in {-1, 0, +1}.
int rcp_approx_delta(uint32_t mantissa);

// div.approx.ftz.f32(a, b) as the GPU computes it: RN(a * rcp.approx(b)), subnormal results
// flushed. Measured equal to the hardware for a = 127 and all mantissas of b (bnb's int8 scale).
float div_approx_ftz(float a, float b);

// IEEE multiplication with the GPU's .ftz behaviour: subnormal inputs and results become zeros
// of the same sign. One function for both sides, so a rule shared by the CPU and the kernels (the
// bitsandbytes decoders) calls it: on the device the instruction itself, on the host its model.
float mul_ftz_on_host(float a, float b);
LOWBIT_HOST_DEVICE inline float mul_ftz(float a, float b) {
#ifdef __CUDA_ARCH__
  float r;
  asm("mul.rn.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
#else
  return mul_ftz_on_host(a, b);
#endif
}
float flush_subnormal(float x);

}  // namespace lowbit::gpu
