// ggml's plain 1-bit and 2-bit linear types (ggml src/ggml-common.h): one fp16 scale `d` per block and
// one sign bit (q1_0) or one 2-bit code (q2_0) per value. All fields little-endian.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_q{1,2}_0_ref); ggml ignores
// importance weights for both. The row length must be a multiple of 128 (q1_0) or 64 (q2_0).
//
// The value rules below are read by the C++ compiler and by nvcc: the scalar dequantizers and the CUDA
// kernels (ggml_ternary_fp4.cu) decode through the same functions.
#pragma once

#include <bit>
#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

// q1_0: 128 values; value j = +d if bit j%8 of qs[j/8] is set, else -d. d = mean |x| of the block,
// the bit is set where x >= 0.
// bytes 0-1 d | 2-17 qs
struct BlockQ1_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ1_0) == 18);

// q2_0: 64 values; value j = (q - 1) * d with q = bits 2(j%4)..2(j%4)+1 of qs[j/4]. d = max |x|, so
// ggml's quantizer never writes q = 3 (+2d), though the decoder reads it.
// bytes 0-1 d | 2-17 qs
struct BlockQ2_0 {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockQ2_0) == 18);

// q1_0's value from d's float32 bits and the value's bit (bit 0 of `bit`): +d where it is set, else
// d with its sign bit flipped (ggml's -d, so d = 0 gives -0.0 there too).
LOWBIT_HOST_DEVICE constexpr float q1_0_value(uint32_t d_bits, uint32_t bit) {
  return std::bit_cast<float>(d_bits ^ ((~bit & 1u) << 31));
}
// q2_0's value: (q - 1) * d, q the low 2 bits of `code`.
LOWBIT_HOST_DEVICE inline float q2_0_value(uint32_t code, float d) { return mul_rn(small_int_to_float(int(code & 3) - 1), d); }

void quantize_row_q1_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q2_0(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_q1_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q2_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
