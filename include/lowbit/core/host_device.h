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

#include <cstdint>

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

// Byte k (0..3) of `word` as a float, unsigned (byte_as_float) or as an int8 (int8_as_float), exactly. The
// GPU's integer-to-float conversion issues at a quarter of the float rate, which bound the i-quant decoders;
// there the byte goes into the mantissa of 2^23 by one byte permute (an int8 biased by 128 first) and 2^23
// is subtracted.
LOWBIT_HOST_DEVICE inline float byte_as_float(uint32_t word, int k) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__uint_as_float(__byte_perm(word, 0x4B000000u, 0x7540u + uint32_t(k))), 8388608.0f);
#else
  return float((word >> (8 * k)) & 0xff);
#endif
}
LOWBIT_HOST_DEVICE inline float int8_as_float(uint32_t word, int k) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__uint_as_float(__byte_perm(word ^ 0x80808080u, 0x4B000000u, 0x7540u + uint32_t(k))), 8388608.0f + 128.0f);
#else
  return float(int8_t(uint8_t(word >> (8 * k))));
#endif
}
// An integer of magnitude below 2^22 as a float, exactly, for the same reason: on the GPU v is added to the
// bit pattern of 2^23 + 2^22, whose unit in the last place is 1, and 2^23 + 2^22 is subtracted.
LOWBIT_HOST_DEVICE inline float small_int_to_float(int v) {
#ifdef __CUDA_ARCH__
  return __fsub_rn(__int_as_float(0x4B400000 + v), 12582912.0f);
#else
  return float(v);
#endif
}

}  // namespace lowbit
