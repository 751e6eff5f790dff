// ggml's 2-bit "i-quants" (ggml src/ggml-common.h): each 8-value subgroup is one point of a fixed grid
// of magnitudes (8, 25 or 43 per value; formats/ggml_iq2_grids.h) with a sign per value, scaled by a
// 4-bit scale per 32 (iq2_xxs) or 16 (iq2_xs, iq2_s) values times the block's fp16 `d`:
// value = d * (0.5 + s) * 0.25 * magnitude * sign. Blocks hold 256 values; all fields little-endian.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (ggml-quants.c's quantize_row_iq2_*_impl).
// iq2_xxs and iq2_xs require importance weights (ggml asserts; lowbit throws lowbit::Error); iq2_s
// weighs each value by 0.25 * sigma^2 + x^2 without them. The row length must be a multiple of 256.
//
// The block structs, the grids (lowbit/formats/ggml_iq2_grids.h) and the per-subgroup decode rules
// (namespace iq2 below) are read by the C++ compiler and by nvcc: the scalar dequantizers and the CUDA
// kernels (ggml_iquants.cu, which copies the grids into device memory) decode through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_iq2_grids.h"
#include "lowbit/formats/ggml_iq_signs.h"

namespace lowbit::ggml {

// iq2_xxs (2.06 bits per value): 8 groups of 32 values, 8 bytes each, read as two u32 a, b:
// byte l of a = grid index of subgroup l; bits 7l..7l+6 of b = its 7 sign bits (the 8th is their
// parity); b >> 28 = the group's scale s.
// bytes 0-1 d | 2-65 qs
struct BlockIq2Xxs {
  uint16_t d;
  uint16_t qs[32];
};
static_assert(sizeof(BlockIq2Xxs) == 66);

// iq2_xs (2.31 bits per value): qs[4g + l], subgroup l of group g: bits 0-8 grid index, bits 9-15 the
// 7 sign bits; scales[g]: low nibble for subgroups 0-1, high nibble for 2-3.
// bytes 0-1 d | 2-65 qs | 66-73 scales
struct BlockIq2Xs {
  uint16_t d;
  uint16_t qs[32];
  uint8_t scales[8];
};
static_assert(sizeof(BlockIq2Xs) == 74);

// iq2_s (2.56 bits per value): subgroup l of group g: grid index = qs[4g+l] | ((qh[g] >> 2l) & 3) << 8,
// its 8 sign bits in qs[32 + 4g + l]; scales as iq2_xs.
// bytes 0-1 d | 2-33 index low bytes | 34-65 sign bytes | 66-73 qh | 74-81 scales
struct BlockIq2S {
  uint16_t d;
  uint8_t qs[64];
  uint8_t qh[8];
  uint8_t scales[8];
};
static_assert(sizeof(BlockIq2S) == 82);

// ---- decode rules, shared by every backend ----
namespace iq2 {

// A 4-bit group scale s as a factor: d * (0.5 + s) * 0.25, rounded step by step as ggml.
LOWBIT_HOST_DEVICE inline float group_scale(float d, uint32_t s) { return mul_rn(mul_rn(d, 0.5f + small_int_to_float(int(s))), 0.25f); }

// The 8 values of subgroup l (0..3) of a 32-value group; `grid` is the type's kIq2*Grid (or the
// device's copy of it).
// iq2_xxs: `index` = byte l of the group's first word, `aux` = its second word (signs, scale on top).
LOWBIT_HOST_DEVICE inline void decode_xxs_subgroup(const uint64_t* grid, float d, uint32_t index, uint32_t aux, int l,
                                                   float* y) {
  signed_point(group_scale(d, aux >> 28), grid[index], even_parity_signs((aux >> (7 * l)) & 127), y);
}
// iq2_xs: `q` = qs[4g + l] (index and 7 signs), `scales` = scales[g].
LOWBIT_HOST_DEVICE inline void decode_xs_subgroup(const uint64_t* grid, float d, uint32_t q, uint32_t scales, int l,
                                                  float* y) {
  signed_point(group_scale(d, (scales >> (4 * (l / 2))) & 15), grid[q & 511], even_parity_signs(q >> 9), y);
}
// iq2_s: `low` = qs[4g + l], `signs` = its sign byte qs[32 + 4g + l], `qh` = qh[g], `scales` = scales[g].
LOWBIT_HOST_DEVICE inline void decode_s_subgroup(const uint64_t* grid, float d, uint32_t low, uint32_t signs, uint32_t qh,
                                                 uint32_t scales, int l, float* y) {
  signed_point(group_scale(d, (scales >> (4 * (l / 2))) & 15), grid[low | ((qh >> (2 * l)) & 3) << 8], signs, y);
}

}  // namespace iq2

void quantize_row_iq2_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                          cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_iq2_xs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                         cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_iq2_s(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_iq2_xxs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_iq2_xs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_iq2_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
