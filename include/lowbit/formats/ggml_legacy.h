// ggml's original 32-value block types: q4_0, q4_1, q5_0, q5_1, q8_0 (ggml src/ggml-common.h).
// All fields little-endian; `d` and `m` are IEEE binary16 bit patterns. Within a block, nibble-packed
// types put value j (j < 16) in the low nibble of qs[j] and value j+16 in its high nibble.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte: without weights the `quantize_row_*_ref`
// algorithm (a scale from the block's extreme, truncating rounding); with `quant_weights` (one per
// value of the row, e.g. from an importance matrix) ggml's weighted scale search. q8_0 ignores weights.
// n must be a multiple of 32 (throws lowbit::Error otherwise).
//
// The block structs and the decode rules (namespace legacy below) are read by the C++ compiler and by
// nvcc: the scalar dequantizers and the CUDA kernels compute a value through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

inline constexpr int kLegacyBlockValues = 32;

// q4_0: value = d * (q - 8), q in 0..15.
// bytes 0-1 d | 2-17 qs (value j low nibble of qs[j], value j+16 high nibble)
struct BlockQ4_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_0) == 18);

// q4_1: value = d * q + m, q in 0..15.
// bytes 0-1 d | 2-3 m | 4-19 qs
struct BlockQ4_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ4_1) == 20);

// q5_0: value = d * (q - 16), q in 0..31: low 4 bits in qs as q4_0, bit 4 of value j in bit j of
// the little-endian u32 qh.
// bytes 0-1 d | 2-5 qh | 6-21 qs
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_0) == 22);

// q5_1: value = d * q + m, q in 0..31, packed as q5_0.
// bytes 0-1 d | 2-3 m | 4-7 qh | 8-23 qs
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ5_1) == 24);

// q8_0: value = d * q, q int8.
// bytes 0-1 d | 2-33 qs
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[32];
};
static_assert(sizeof(BlockQ8_0) == 34);

// ---- decode rules, shared by every backend ----
namespace legacy {

// q5_0 and q5_1's qh as the little-endian 32-bit word whose bit e is bit 4 of value e's code.
LOWBIT_HOST_DEVICE constexpr uint32_t fifth_bits_word(const uint8_t* qh) {
  return uint32_t(qh[0]) | uint32_t(qh[1]) << 8 | uint32_t(qh[2]) << 16 | uint32_t(qh[3]) << 24;
}

// The 5-bit codes of values j and j + 16 (j < 16): the low and high nibble of qs[j], bit 4 from qh.
LOWBIT_HOST_DEVICE constexpr int code_5bit_low(uint32_t qs_byte, uint32_t qh, int j) {
  return int((qs_byte & 0xF) | ((qh >> j) & 1) << 4);
}
LOWBIT_HOST_DEVICE constexpr int code_5bit_high(uint32_t qs_byte, uint32_t qh, int j) {
  return int((qs_byte >> 4) | ((qh >> (j + 16)) & 1) << 4);
}

// ggml's "type-0" value (q4_0, q5_0, q8_0): the code less its offset (8, 16, 0) times d; and its
// "type-1" value (q4_1, q5_1): code * d + m, the product and the sum each rounded on its own.
LOWBIT_HOST_DEVICE inline float value_type0(float centred_code, float d) { return mul_rn(centred_code, d); }
LOWBIT_HOST_DEVICE inline float value_type1(float code, float d, float m) { return add_rn(mul_rn(code, d), m); }

}  // namespace legacy

void quantize_row_q4_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q4_1(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q5_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q5_1(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q8_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_q4_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q4_1(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q5_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q5_1(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q8_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
