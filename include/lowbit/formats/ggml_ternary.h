// ggml's ternary types for BitNet b1.58 / TriLM weights: every value is -d, 0 or +d with one fp16 `d`
// per 256 values (ggml src/ggml-common.h). All fields little-endian; `d` is an IEEE binary16 bit pattern.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_tq1_0_ref / _tq2_0_ref):
// d = max|x| over the block, trit t = lroundf(x * (1/d)) + 1 in {0, 1, 2}. ggml ignores importance
// weights for both. The row length must be a multiple of 256.
//
// The decode rules (namespace ternary below) are read by the C++ compiler and by nvcc: the scalar
// dequantizers and the CUDA kernels (ggml_ternary_fp4.cu) decode through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

inline constexpr int kTernaryBlockValues = 256;

// tq1_0 (1.6875 bits per value): five trits per byte as a base-3 fraction of 256 (a byte q holds the
// trits of ceil(sum t_n 3^(4-n) * 256/243); trit n = ((uint8)(q * 3^n) * 3) >> 8), four in each qh byte.
// qs[m], m < 32: values m + 32n, n = 0..4 | qs[32 + m], m < 16: values 160 + m + 16n |
// qh[j]: values 240 + j + 4n, n = 0..3 (the four trits sit in the top four places).
// bytes 0-47 qs | 48-51 qh | 52-53 d
struct BlockTq1_0 {
  uint8_t qs[48];
  uint8_t qh[4];
  uint16_t d;
};
static_assert(sizeof(BlockTq1_0) == 54);

// tq2_0 (2.0625 bits per value): value 128h + 32l + m is bits 2l..2l+1 of qs[32h + m], minus 1, times d.
// bytes 0-63 qs | 64-65 d
struct BlockTq2_0 {
  uint8_t qs[64];
  uint16_t d;
};
static_assert(sizeof(BlockTq2_0) == 66);

// ---- decode rules, shared by every backend ----
namespace ternary {

// tq1_0: trit n (0..4) of a packed byte q as -1, 0, +1. Multiplying by 3^n (mod 256) brings trit n
// to the top, where (q * 3) >> 8 reads it.
LOWBIT_HOST_DEVICE constexpr uint32_t pow3(int n) { return n == 0 ? 1 : n == 1 ? 3 : n == 2 ? 9 : n == 3 ? 27 : 81; }
LOWBIT_HOST_DEVICE constexpr int unpack_trit(uint32_t q, int n) { return int((((q * pow3(n)) & 255) * 3) >> 8) - 1; }

// tq2_0: the 2-bit field at bit `shift` of a byte, less 1.
LOWBIT_HOST_DEVICE constexpr int two_bit_trit(uint32_t byte, int shift) { return int((byte >> shift) & 3) - 1; }

// A value: trit * d.
LOWBIT_HOST_DEVICE inline float value(int trit, float d) { return mul_rn(small_int_to_float(trit), d); }

// Where value v (0..255) of a tq1_0 block sits: trit `trit` of byte `byte` of the block (qs, then qh).
struct TritPlace {
  int byte, trit;
};
LOWBIT_HOST_DEVICE constexpr TritPlace tq1_0_place(int v) {
  if (v < 160) return {v % 32, v / 32};
  if (v < 240) return {32 + (v - 160) % 16, (v - 160) / 16};
  return {48 + (v - 240) % 4, (v - 240) / 4};
}

// Where value v (0..255) of a tq2_0 block sits: the 2-bit field at bit `shift` of qs[byte].
struct TwoBitPlace {
  int byte, shift;
};
LOWBIT_HOST_DEVICE constexpr TwoBitPlace tq2_0_place(int v) { return {32 * (v / 128) + v % 32, 2 * ((v % 128) / 32)}; }

}  // namespace ternary

void quantize_row_tq1_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_tq2_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_tq1_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_tq2_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
