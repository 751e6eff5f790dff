// What lets one function serve the CPU and the GPU: LOWBIT_HOST_DEVICE marks a function nvcc compiles
// for both (the plain C++ compiler sees an ordinary inline function), and the float operations every
// shared decoder is written in, each rounded on its own.
//
// Why the rounded forms: the reference codecs (ggml, bitsandbytes) round every product and every sum
// separately. The C++ compilers here do too (ISO mode, no FMA target in scalar code), but nvcc
// contracts a * b + c into one fma by default, which changes the last bit. So a rule shared by both
// sides writes mul_rn(a, b) instead of a * b, and the device build gets the explicitly rounded
// intrinsic while the host keeps the plain operator.
#pragma once

#ifdef __CUDACC__
#define LOWBIT_HOST_DEVICE __host__ __device__
#else
#define LOWBIT_HOST_DEVICE
#endif

// A loop of a fixed, small count in a shared rule: nvcc unrolls it, as the kernels' own loops are
// (the host compiler decides for itself).
#ifdef __CUDACC__
#define LOWBIT_UNROLL _Pragma("unroll")
#else
#define LOWBIT_UNROLL
#endif

namespace lowbit {

LOWBIT_HOST_DEVICE inline float mul_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

LOWBIT_HOST_DEVICE inline float add_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

LOWBIT_HOST_DEVICE inline float sub_rn(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

}  // namespace lowbit
