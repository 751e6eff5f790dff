// ggml's 2-bit "i-quants" (ggml src/ggml-common.h): each 8-value subgroup is one point of a fixed grid
// of magnitudes (8, 25 or 43 per value; formats/ggml_iq2_grids.h) with a sign per value, scaled by a
// 4-bit scale per 32 (iq2_xxs) or 16 (iq2_xs, iq2_s) values times the block's fp16 `d`:
// value = d * (0.5 + s) * 0.25 * magnitude * sign. Blocks hold 256 values; all fields little-endian.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (ggml-quants.c's quantize_row_iq2_*_impl).
// iq2_xxs and iq2_xs require importance weights (ggml asserts; lowbit throws lowbit::Error); iq2_s
// weighs each value by 0.25 * sigma^2 + x^2 without them. The row length must be a multiple of 256.
#pragma once

#include <cstdint>

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

void quantize_row_iq2_xxs(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_iq2_xs(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_iq2_s(const float* x, void* blocks, int64_t n, const float* quant_weights);

void dequantize_row_iq2_xxs(const void* blocks, float* y, int64_t n);
void dequantize_row_iq2_xs(const void* blocks, float* y, int64_t n);
void dequantize_row_iq2_s(const void* blocks, float* y, int64_t n);

}  // namespace lowbit::ggml
