// ggml's 1.5-bit and 1.75-bit lattice types: groups of 8 values take one point of a fixed grid of 2048
// 8-vectors with entries in {-1, 0, 1}, shifted by +-1/8 (IQ1S_DELTA) and scaled per 32 (iq1_s) or 16
// (iq1_m) values (ggml src/ggml-common.h). All fields little-endian.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_iq1_s_impl, quantize_row_iq1_m_impl).
// iq1_s needs importance weights (ggml aborts without; lowbit throws lowbit::Error); iq1_m weighs each
// value by x^2 without them. The row length must be a multiple of 256.
//
// The block structs, the grid (lowbit/formats/ggml_iq1_grid.h) and the per-subgroup decode rules
// (namespace iq1 below) are read by the C++ compiler and by nvcc: the scalar dequantizers and the CUDA
// kernels (ggml_iquants.cu, which copies the grid into device memory) decode through the same functions.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_iq1_grid.h"

namespace lowbit::ggml {

inline constexpr int kIq1BlockValues = 256;

// iq1_s (1.5625 bits per value): grid point l (8 values) of group g (32 values) is
// qs[4g + l] | ((qh[g] >> 3l) & 7) << 8; s = (qh[g] >> 12) & 7; bit 15 of qh[g] selects delta -1/8 (else
// +1/8). Value = d * (2s + 1) * (grid + delta).
// bytes 0-1 d | 2-33 qs | 34-49 qh (u16)
struct BlockIq1S {
  uint16_t d;
  uint8_t qs[32];
  uint16_t qh[8];
};
static_assert(sizeof(BlockIq1S) == 50);

// iq1_m (1.75 bits per value): grid point l (8 values) of group g (32 values) is qs[4g + l] | (bits 0-2
// of the nibble l%2 of qh[2g + l/2]) << 8; bit 3 of that nibble selects delta -1/8 (else +1/8). The
// scales are the u16 words sc[0..3] of `scales`: values 16h..16h+15 of group g have
// s = (sc[g/2] >> (6(g%2) + 3h)) & 7, and the fp16 d is the top nibbles of sc[0..3] (sc[0] lowest).
// Value = d * (2s + 1) * (grid + delta).
// bytes 0-31 qs | 32-47 qh | 48-55 scales
struct BlockIq1M {
  uint8_t qs[32];
  uint8_t qh[16];
  uint8_t scales[8];
};
static_assert(sizeof(BlockIq1M) == 56);

// iq1_m's scales from its four little-endian u16 scale words (u16 or wider integers): the fp16 bits of d,
// and the odd multiplier 2s + 1 of half h (0, 1) of 32-value group g. Read by the CPU's and the GPU's decoders.
template <class Word>
LOWBIT_HOST_DEVICE inline uint16_t iq1m_d_bits(const Word* sc) {
  return uint16_t((sc[0] >> 12) | ((sc[1] >> 8) & 0x00f0) | ((sc[2] >> 4) & 0x0f00) | (sc[3] & 0xf000));
}
template <class Word>
LOWBIT_HOST_DEVICE inline int iq1m_multiplier(const Word* sc, int g, int h) {
  return int(2 * ((sc[g / 2] >> (6 * (g % 2) + 3 * h)) & 7) + 1);
}

// ---- decode rules, shared by every backend ----
namespace iq1 {

inline constexpr float kDelta = 0.125f;  // IQ1S_DELTA = IQ1M_DELTA

// The 8 values of a grid point (kIq1Grid: byte j the int8 value -1, 0 or 1): dl * (value + delta),
// each operation rounded on its own as ggml's dequantize_row_iq1_*.
LOWBIT_HOST_DEVICE inline void point_values(uint64_t point, float dl, float delta, float* y) {
  LOWBIT_UNROLL
  for (int j = 0; j < 8; ++j) y[j] = mul_rn(dl, add_rn(int8_as_float(uint32_t(point >> (32 * (j / 4))), j % 4), delta));
}

// iq1_s: the 8 values of subgroup l (0..3) of a 32-value group, from its byte qs[4g + l] (`low`) and the
// group's word qh[g]. `grid`: kIq1Grid (or the device's copy of it).
LOWBIT_HOST_DEVICE inline void decode_s_subgroup(const uint64_t* grid, float d, uint32_t low, uint32_t qh, int l,
                                                 float* y) {
  const float dl = mul_rn(d, small_int_to_float(int(2 * ((qh >> 12) & 7) + 1)));
  const float delta = qh & 0x8000 ? -kDelta : kDelta;
  point_values(grid[low | ((qh >> (3 * l)) & 7) << 8], dl, delta, y);
}

// iq1_m: the 8 values of subgroup l (0..3) of 32-value group g, from its byte qs[4g + l] (`low`), the
// byte qh[2g + l / 2] and the block's four scale words `sc`; d = the fp16 value of iq1m_d_bits(sc).
template <class Word>
LOWBIT_HOST_DEVICE inline void decode_m_subgroup(const uint64_t* grid, float d, const Word* sc, uint32_t low,
                                                 uint32_t qh, int g, int l, float* y) {
  const float dl = mul_rn(d, small_int_to_float(iq1m_multiplier(sc, g, l / 2)));
  const uint32_t nibble = qh >> (4 * (l % 2));
  point_values(grid[low | (nibble & 7) << 8], dl, nibble & 8 ? -kDelta : kDelta, y);
}

}  // namespace iq1

void quantize_row_iq1_s(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_iq1_m(const float* x, void* blocks, int64_t n, const float* quant_weights,
                        cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_iq1_s(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_iq1_m(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
