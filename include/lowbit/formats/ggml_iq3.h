// ggml's 3-bit lattice types: groups of four values take one point of a fixed grid of 4-vectors with
// levels 2l+1 (iq3_s) or about 8l+4 (iq3_xxs), plus per-value signs and a 4-bit scale per 32 values
// (ggml src/ggml-common.h). All fields little-endian; `d` is an IEEE binary16 bit pattern.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_iq3_xxs_impl with 256 grid
// points, quantize_row_iq3_s_impl with 512), with or without `quant_weights` (without, each value is
// weighed by x^2). The row length must be a multiple of 256.
//
// The block structs, the grids (lowbit/formats/ggml_iq3_grids.h) and the per-subgroup decode rules
// (namespace iq3 below) are read by the C++ compiler and by nvcc: the scalar dequantizers and the CUDA
// kernels (ggml_iquants.cu, which copies the grids into device memory) decode through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_iq3_grids.h"
#include "lowbit/formats/ggml_iq_signs.h"

namespace lowbit::ggml {

inline constexpr int kIq3BlockValues = 256;

// iq3_xxs (3.0625 bits per value): group g (32 values) = 8 grid points qs[8g + k] (4 values each, of
// the 256-point grid) and the u32 word w at qs[64 + 4g]: bits 7l..7l+6 are the 7 stored signs of values
// 8l..8l+7 (the 8th is their parity), bits 28-31 the scale s. Value = d * (0.5 + s) * 0.5 * grid * sign.
// bytes 0-1 d | 2-65 grid indices | 66-97 scale-and-sign words
struct BlockIq3Xxs {
  uint16_t d;
  uint8_t qs[96];
};
static_assert(sizeof(BlockIq3Xxs) == 98);

// iq3_s (3.4375 bits per value): grid point k of group g = qs[8g + k] | ((qh[g] >> k) & 1) << 8 (of the
// 512-point grid); signs[4g + l] negates values 8l + j of the group (bit j); s = nibble g%2 of
// scales[g/2]. Value = d * (1 + 2s) * grid * sign.
// bytes 0-1 d | 2-65 qs | 66-73 qh | 74-105 signs | 106-109 scales
struct BlockIq3S {
  uint16_t d;
  uint8_t qs[64];
  uint8_t qh[8];
  uint8_t signs[32];
  uint8_t scales[4];
};
static_assert(sizeof(BlockIq3S) == 110);

// ---- decode rules, shared by every backend ----
namespace iq3 {

// The 8 values of subgroup l (0..3) of 32-value group g: two 4-value grid points; `grid` is the
// type's kIq3*Grid (or the device's copy of it).
// iq3_xxs: `index0`, `index1` = qs[8g + 2l], qs[8g + 2l + 1]; `aux` = the group's scale-and-sign word.
LOWBIT_HOST_DEVICE inline void decode_xxs_subgroup(const uint32_t* grid, float d, uint32_t index0, uint32_t index1,
                                                   uint32_t aux, int l, float* y) {
  const float db = mul_rn(mul_rn(d, 0.5f + small_int_to_float(int(aux >> 28))), 0.5f);
  const uint32_t signs = even_parity_signs((aux >> (7 * l)) & 127);
  signed_point(db, grid[index0], signs, y);
  signed_point(db, grid[index1], signs >> 4, y + 4);
}
// iq3_s: `low0`, `low1` = qs[8g + 2l], qs[8g + 2l + 1]; `qh` = qh[g]; `signs` = signs[4g + l];
// `scales` = scales[g / 2].
LOWBIT_HOST_DEVICE inline void decode_s_subgroup(const uint32_t* grid, float d, uint32_t low0, uint32_t low1, uint32_t qh,
                                                 uint32_t signs, uint32_t scales, int g, int l, float* y) {
  const float db = mul_rn(d, small_int_to_float(1 + 2 * int((scales >> (4 * (g % 2))) & 15)));
  const int k = 2 * l;  // grid points k, k + 1 of the group
  signed_point(db, grid[low0 | ((qh >> k) & 1) << 8], signs, y);
  signed_point(db, grid[low1 | ((qh >> (k + 1)) & 1) << 8], signs >> 4, y + 4);
}

}  // namespace iq3

void quantize_row_iq3_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                          cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_iq3_s(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_iq3_xxs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_iq3_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
