// Pieces shared by the codec kernels: float arithmetic that matches the CPU reference bit for bit,
// 8-value output stores in any float dtype, and the launch shape.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "check.h"
#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/host_device.h"
#include "lowbit/formats/gpu_rcp_approx.h"

namespace lowbit::cuda::detail {

// nvcc contracts a * b + c into one fma by default; the CPU reference rounds each step, so every
// multiply-then-add in the kernels goes through these explicitly rounded forms (lowbit/core/host_device.h,
// the same functions the shared block decoders use).
using lowbit::add_rn;
using lowbit::mul_rn;
using lowbit::sub_rn;

// bitsandbytes' kernels are built with --use_fast_math: multiplies flush subnormals (.ftz), and
// 1 / x is rcp.approx.ftz (lowbit::gpu::mul_ftz and rcp_approx_ftz model them on the CPU).
using gpu::mul_ftz;  // lowbit/formats/gpu_rcp_approx.h: mul.rn.ftz.f32 on the device
__device__ __forceinline__ float rcp_approx_ftz(float x) {
  float r;
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}
__device__ __forceinline__ float div_approx_ftz(float a, float b) {
  float r;
  asm("div.approx.ftz.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
  return r;
}
// A subnormal becomes a zero of the same sign (what .ftz does to an input).
__device__ __forceinline__ float flush_subnormal(float x) {
  return (__float_as_uint(x) & 0x7f800000u) == 0 ? __uint_as_float(__float_as_uint(x) & 0x80000000u) : x;
}

// Output element types by storage: the conversions round to nearest even as half.h does (the
// hardware cvt.rn; the values here are finite, where NaN payloads could differ).
template <DType T> struct OutTraits;
template <> struct OutTraits<DType::f32> { using Element = float; };
template <> struct OutTraits<DType::f16> { using Element = uint16_t; };
template <> struct OutTraits<DType::bf16> { using Element = uint16_t; };

__device__ __forceinline__ uint32_t pack2(float lo, float hi, DType t) {
  if (t == DType::bf16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x = lo: the lower address
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  const __half2 v = __floats2half2_rn(lo, hi);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// Stores y[0..7] as elements [8 * group, 8 * group + 8) of out: one 16-byte store for 16-bit
// dtypes, two for f32 (out 16-byte aligned).
template <DType T>
__device__ __forceinline__ void store8(void* out, int64_t group, const float (&y)[8]) {
  if constexpr (T == DType::f32) {
    float4* dst = static_cast<float4*>(out) + 2 * group;
    dst[0] = make_float4(y[0], y[1], y[2], y[3]);
    dst[1] = make_float4(y[4], y[5], y[6], y[7]);
  } else {
    uint4 v;
    v.x = pack2(y[0], y[1], T);
    v.y = pack2(y[2], y[3], T);
    v.z = pack2(y[4], y[5], T);
    v.w = pack2(y[6], y[7], T);
    static_cast<uint4*>(out)[group] = v;
  }
}

// One element, for tails and unaligned outputs.
template <DType T>
__device__ __forceinline__ void store1(void* out, int64_t i, float y) {
  if constexpr (T == DType::f32) {
    static_cast<float*>(out)[i] = y;
  } else if constexpr (T == DType::bf16) {
    const __nv_bfloat16 v = __float2bfloat16_rn(y);
    static_cast<uint16_t*>(out)[i] = *reinterpret_cast<const uint16_t*>(&v);
  } else {
    const __half v = __float2half_rn(y);
    static_cast<uint16_t*>(out)[i] = *reinterpret_cast<const uint16_t*>(&v);
  }
}

// Input element i of a f32/f16/bf16 array as float32.
template <DType T>
__device__ __forceinline__ float load1(const void* in, int64_t i) {
  if constexpr (T == DType::f32) return static_cast<const float*>(in)[i];
  else if constexpr (T == DType::bf16) return __uint_as_float(uint32_t(static_cast<const uint16_t*>(in)[i]) << 16);
  else return __half2float(*reinterpret_cast<const __half*>(static_cast<const uint16_t*>(in) + i));
}

// Eight consecutive inputs [8 * group, 8 * group + 8) from a 16-byte aligned array.
template <DType T>
__device__ __forceinline__ void load8(const void* in, int64_t group, float (&x)[8]) {
  if constexpr (T == DType::f32) {
    const float4* src = static_cast<const float4*>(in) + 2 * group;
    const float4 a = src[0], b = src[1];
    x[0] = a.x, x[1] = a.y, x[2] = a.z, x[3] = a.w, x[4] = b.x, x[5] = b.y, x[6] = b.z, x[7] = b.w;
  } else {
    const uint4 v = static_cast<const uint4*>(in)[group];
    const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      if constexpr (T == DType::bf16) {
        x[2 * k] = __uint_as_float(w[k] << 16);
        x[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);
      } else {
        const __half2 h = *reinterpret_cast<const __half2*>(&w[k]);
        const float2 f = __half22float2(h);
        x[2 * k] = f.x, x[2 * k + 1] = f.y;
      }
    }
  }
}

inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// A grid for grid-stride loops over `work` items: as many `threads`-thread blocks as can be resident
// at once on the current device (the kernel's occupancy, measured once per kernel), never more
// blocks than the work needs; one wave, so no block starts late and leaves a tail.
template <auto Kernel>
unsigned grid_for(int64_t work, int threads) {
  static thread_local int cached_device = -1, cached_blocks = 0;
  int device = 0;
  check(cudaGetDevice(&device));
  if (device != cached_device) {
    int sms = 0, per_sm = 0;
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, Kernel, threads, 0));
    cached_blocks = sms * (per_sm > 0 ? per_sm : 1);
    cached_device = device;
  }
  const int64_t wanted = (work + threads - 1) / threads;
  return unsigned(wanted < 1 ? 1 : (wanted < cached_blocks ? wanted : cached_blocks));
}

inline void require_float_dtype(DType t, const char* what) {
  if (t != DType::f32 && t != DType::f16 && t != DType::bf16)
    throw Error(std::string(what) + ": unsupported dtype " + std::string(dtype_name(t)) + " (f32, f16 or bf16)");
}

// Calls f.template operator()<T>() with T the DType as a template argument.
template <class F>
void dispatch_float_dtype(DType t, F&& f) {
  switch (t) {
    case DType::f32: f.template operator()<DType::f32>(); break;
    case DType::f16: f.template operator()<DType::f16>(); break;
    case DType::bf16: f.template operator()<DType::bf16>(); break;
    default: throw Error("unsupported dtype " + std::string(dtype_name(t)) + " (f32, f16 or bf16)");
  }
}

}  // namespace lowbit::cuda::detail
