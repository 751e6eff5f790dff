// ggml's 32-value block types on the GPU: dequantize q4_0, q4_1, q5_0, q5_1 and q8_0 as
// lowbit::ggml::dequantize_row_* does (layouts: include/lowbit/formats/ggml_legacy.h).
// A block has 4 groups of 8 values: group g = values [8g, 8g + 8). The value formulas are
// ggml::legacy's rules, the CPU's own; what is here is how a group's eight codes are cut out of its
// bytes (byte-parallel, code_minus).
#include "ggml_dequantize.cuh"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_legacy.h"

namespace lowbit::cuda::detail {
namespace {

namespace legacy = ggml::legacy;

// Nibble-packed types: values j < 16 in the low nibbles of qs[j], j + 16 in the high nibbles, so
// group g reads qs[8 (g % 2) ..] and takes the low (g < 2) or high (g >= 2) nibbles.
__device__ __forceinline__ int nibble_shift(int g) { return g >= 2 ? 4 : 0; }
__device__ __forceinline__ int qs_offset(int g) { return 8 * (g % 2); }
// Four codes of a word, one per byte (byte-parallel: one shift and one mask for four values).
__device__ __forceinline__ uint32_t nibbles(uint32_t word, int g) { return (word >> nibble_shift(g)) & 0x0f0f0f0fu; }
// Bits first .. first + 3 of qh, each moved to bit 4 of its own byte: bit i of the nibble lands at
// bit 8i through the product with 1 + 2^7 + 2^14 + 2^21 (no two partial products meet there).
__device__ __forceinline__ uint32_t fifth_bits(uint32_t qh, int first) {
  return (((qh >> first) & 15u) * 0x00204081u & 0x01010101u) << 4;
}

struct Q4_0 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockQ4_0);
  struct Raw { uint32_t d; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld64_a2(b + 2 + qs_offset(g))}; }
  // value = d · (code − 8)
  static __device__ void codes(const Raw& r, int g, float (&q)[8]) {
    const uint32_t c[2] = {nibbles(r.qs.x, g), nibbles(r.qs.y, g)};
#pragma unroll
    for (int k = 0; k < 8; ++k) q[k] = code_minus(c[k / 4], k % 4, 8.0f);
  }
  static __device__ float factor(const Raw& r, int) { return half_bits_to_float(r.d); }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    codes(r, g, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = legacy::value_type0(y[k], factor(r, g));
  }
};

struct Q4_1 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockQ4_1);
  struct Raw { uint32_t dm; uint2 qs; };  // dm: d in the low half, m in the high half
  static __device__ Raw load(const uint8_t* b, int g) { return {ld32(b), ld64_a4(b + 4 + qs_offset(g))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float d = half_bits_to_float(r.dm), m = half_bits_to_float(r.dm >> 16);
    const uint32_t codes[2] = {nibbles(r.qs.x, g), nibbles(r.qs.y, g)};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = legacy::value_type1(code_minus(codes[k / 4], k % 4, 0.0f), d, m);
  }
};

// 5-bit types: bit 4 of value e is bit e of qh.
struct Q5_0 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockQ5_0);
  struct Raw { uint32_t d, qh; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld32_a2(b + 2), ld64_a2(b + 6 + qs_offset(g))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float d = half_bits_to_float(r.d);
    const uint32_t codes[2] = {nibbles(r.qs.x, g) | fifth_bits(r.qh, 8 * g), nibbles(r.qs.y, g) | fifth_bits(r.qh, 8 * g + 4)};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = legacy::value_type0(code_minus(codes[k / 4], k % 4, 16.0f), d);
  }
};

struct Q5_1 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockQ5_1);
  struct Raw { uint32_t dm, qh; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld32(b), ld32(b + 4), ld64(b + 8 + qs_offset(g))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float d = half_bits_to_float(r.dm), m = half_bits_to_float(r.dm >> 16);
    const uint32_t codes[2] = {nibbles(r.qs.x, g) | fifth_bits(r.qh, 8 * g), nibbles(r.qs.y, g) | fifth_bits(r.qh, 8 * g + 4)};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = legacy::value_type1(code_minus(codes[k / 4], k % 4, 0.0f), d, m);
  }
};

struct Q8_0 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockQ8_0);
  struct Raw { uint32_t d; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld64_a2(b + 2 + 8 * g)}; }
  // value = d · code, the signed byte's value: with its sign bit flipped it is code + 128 (exact, and
  // two full-rate instructions where an integer conversion runs at a quarter of the rate).
  static __device__ void codes(const Raw& r, int, float (&q)[8]) {
    const uint32_t c[2] = {r.qs.x ^ 0x80808080u, r.qs.y ^ 0x80808080u};
#pragma unroll
    for (int k = 0; k < 8; ++k) q[k] = code_minus(c[k / 4], k % 4, 128.0f);
  }
  static __device__ float factor(const Raw& r, int) { return half_bits_to_float(r.d); }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    codes(r, g, y);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = legacy::value_type0(y[k], factor(r, g));
  }
};

constexpr CudaFormatKernels kLegacyKernels[] = {
    block_format_kernels<Q4_0>(FormatId::q4_0), block_format_kernels<Q4_1>(FormatId::q4_1),
    block_format_kernels<Q5_0>(FormatId::q5_0), block_format_kernels<Q5_1>(FormatId::q5_1),
    block_format_kernels<Q8_0>(FormatId::q8_0),
};

}  // namespace

std::span<const CudaFormatKernels> legacy_kernels() { return kLegacyKernels; }

}  // namespace lowbit::cuda::detail
