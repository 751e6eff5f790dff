// ggml's k-quants: 256-value super-blocks of 16- or 32-value sub-blocks, each sub-block with its own
// quantized scale (and min), the super-block with fp16 scales for those (ggml src/ggml-common.h).
// All fields little-endian; `d` and `dmin` are IEEE binary16 bit patterns.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte: without weights `quantize_row_qX_K_ref`,
// with `quant_weights` (one per value of the row) `quantize_row_qX_K_impl`. n must be a multiple of 256
// (throws lowbit::Error otherwise).
//
// The block structs and the per-block decode rules (namespace kquants below) are read by the C++
// compiler and by nvcc: the scalar dequantizers, the AVX-512 ones and the CUDA kernels all take a
// sub-block's scale and min, and round a value, through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

inline constexpr int kSuperBlockValues = 256;  // ggml's QK_K
inline constexpr int kPackedScaleBytes = 12;   // ggml's K_SCALE_SIZE

// q2_K: 16 sub-blocks of 16; value e = d * (scales[e/16] & 15) * q - dmin * (scales[e/16] >> 4), q 2 bits.
// bytes 0-15 scales | 16-79 qs | 80-81 d | 82-83 dmin
// q of value e (h = e/128, r = e%128): bits 2*(r/32) of qs[32h + r%32].
struct BlockQ2K {
  uint8_t scales[16];
  uint8_t qs[64];
  uint16_t d;
  uint16_t dmin;
};
static_assert(sizeof(BlockQ2K) == 84);

// q3_K: 16 sub-blocks of 16; value = d * (s - 32) * (q - 4), s 6 bits, q 3 bits.
// bytes 0-31 hmask | 32-95 qs | 96-107 scales | 108-109 d
// Low 2 bits of q as q2_K; bit 2 of value e in hmask[e%32] bit e/32. s of sub-block j: low 4 bits in
// scales[j] (j < 8, low nibble) or scales[j-8] (high nibble); high 2 bits at bit 2*(j/4) of scales[8+j%4].
struct BlockQ3K {
  uint8_t hmask[32];
  uint8_t qs[64];
  uint8_t scales[12];
  uint16_t d;
};
static_assert(sizeof(BlockQ3K) == 110);

// q4_K: 8 sub-blocks of 32; value = d * s * q - dmin * m, s and m 6 bits, q 4 bits.
// bytes 0-1 d | 2-3 dmin | 4-15 scales (packed s and m) | 16-143 qs
// q of value e (c = e/64): qs[32c + e%32], low nibble if e%64 < 32, else high.
// s, m of sub-block j < 4: scales[j], scales[j+4] (low 6 bits); j >= 4: low 4 bits in scales[j+4]
// (s low nibble, m high nibble), high 2 bits in bits 6-7 of scales[j-4] (s) and scales[j] (m).
struct BlockQ4K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ4K) == 144);

// q5_K: as q4_K with 5-bit q: bit 4 of value e in qh[e%32] at bit 2*(e/64) + (e%64 >= 32).
// bytes 0-1 d | 2-3 dmin | 4-15 scales | 16-47 qh | 48-175 qs
struct BlockQ5K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[12];
  uint8_t qh[32];
  uint8_t qs[128];
};
static_assert(sizeof(BlockQ5K) == 176);

// q6_K: 16 sub-blocks of 16; value = d * scales[e/16] * (q - 32), scales int8, q 6 bits.
// bytes 0-127 ql | 128-191 qh | 192-207 scales | 208-209 d
// Value e (h = e/128, r = e%128, k = r/32, l = r%32): low 4 bits in ql[64h + l + 32*(k&1)] (low nibble
// if k < 2, else high), high 2 bits at bit 2k of qh[32h + l].
struct BlockQ6K {
  uint8_t ql[128];
  uint8_t qh[64];
  int8_t scales[16];
  uint16_t d;
};
static_assert(sizeof(BlockQ6K) == 210);

// ---- decode rules, shared by every backend ----
namespace kquants {

struct ScaleMin {
  int scale, min;
};

// q4_K and q5_K's 6-bit scale and min of 32-value sub-block j (ggml's get_scale_min_k4), from the
// three bytes of `scales` it touches: a = scales[j % 4], b = scales[4 + j % 4], c = scales[8 + j % 4]
// (c only for j >= 4). Bytes by value, so a kernel can pass them out of the words it loaded.
LOWBIT_HOST_DEVICE constexpr ScaleMin scale_min_k4(uint32_t a, uint32_t b, uint32_t c, int j) {
  if (j < 4) return {int(a & 63), int(b & 63)};
  return {int((c & 0xF) | ((a >> 6) << 4)), int((c >> 4) | ((b >> 6) << 4))};
}
LOWBIT_HOST_DEVICE constexpr ScaleMin scale_min_k4(const uint8_t* scales, int j) {
  return scale_min_k4(scales[j % 4], scales[4 + j % 4], scales[8 + j % 4], j);
}

// q2_K's 4-bit scale (low nibble) and min (high nibble) of 16-value sub-block j: one byte, scales[j].
LOWBIT_HOST_DEVICE constexpr ScaleMin scale_min_q2(uint32_t byte) { return {int(byte & 0xF), int(byte >> 4)}; }

// q3_K's signed 6-bit scale of 16-value sub-block j, from its two bytes: low = scales[j % 8] (low
// nibble for j < 8, high nibble after), high = scales[8 + j % 4] (bits 2 (j / 4) and up).
LOWBIT_HOST_DEVICE constexpr int scale_q3(uint32_t low, uint32_t high, int j) {
  const int low_bits = int(j < 8 ? low & 0xF : low >> 4);
  return (low_bits | int((high >> (2 * (j / 4))) & 3) << 4) - 32;
}
LOWBIT_HOST_DEVICE constexpr int scale_q3(const uint8_t* scales, int j) {
  return scale_q3(scales[j % 8], scales[8 + j % 4], j);
}

// 2-bit codes of q2_K and q3_K (and q3_K's low bits): the 16 codes of sub-block j are the fields at
// bit two_bit_shift(j) of qs[two_bit_offset(j) + l], l < 16.
LOWBIT_HOST_DEVICE constexpr int two_bit_offset(int j) { return 32 * (j / 8) + 16 * (j % 2); }
LOWBIT_HOST_DEVICE constexpr int two_bit_shift(int j) { return 2 * ((j % 8) / 2); }

// A sub-block's factor: the super-block's fp16 scale (or min) times the sub-block's code, one rounding.
LOWBIT_HOST_DEVICE inline float sub_block_factor(float d, int code) { return mul_rn(d, small_int_to_float(code)); }

// The value of code q: dl * q - ml (q2_K, q4_K, q5_K), or dl * q with q already less its offset
// (q3_K: q - 4, q6_K: q - 32), each operation rounded on its own as ggml's dequantize_row_* does.
LOWBIT_HOST_DEVICE inline float value_scale_min(float dl, float q, float ml) { return sub_rn(mul_rn(dl, q), ml); }
LOWBIT_HOST_DEVICE inline float value_scale(float dl, float q) { return mul_rn(dl, q); }

}  // namespace kquants

void quantize_row_q2_K(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q3_K(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q4_K(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q5_K(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_q6_K(const float* x, void* blocks, int64_t n, const float* quant_weights,
                       cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_q2_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q3_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q4_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q5_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_q6_K(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
