// ggml's 3-bit lattice types: groups of four values take one point of a fixed grid of 4-vectors with
// levels 2l+1 (iq3_s) or about 8l+4 (iq3_xxs), plus per-value signs and a 4-bit scale per 32 values
// (ggml src/ggml-common.h). All fields little-endian; `d` is an IEEE binary16 bit pattern.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (quantize_row_iq3_xxs_impl with 256 grid
// points, quantize_row_iq3_s_impl with 512), with or without `quant_weights` (without, each value is
// weighed by x^2). The row length must be a multiple of 256.
#pragma once

#include <cstdint>

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

void quantize_row_iq3_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_iq3_s(const float* x, void* blocks, int64_t n, const float* quant_weights);

void dequantize_row_iq3_xxs(const void* blocks, float* y, int64_t n);
void dequantize_row_iq3_s(const void* blocks, float* y, int64_t n);

}  // namespace lowbit::ggml
