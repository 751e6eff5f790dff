// ggml's original 32-value block types: q4_0, q4_1, q5_0, q5_1, q8_0 (ggml src/ggml-common.h).
// All fields little-endian; `d` and `m` are IEEE binary16 bit patterns. Within a block, nibble-packed
// types put value j (j < 16) in the low nibble of qs[j] and value j+16 in its high nibble.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte: without weights the `quantize_row_*_ref`
// algorithm (a scale from the block's extreme, truncating rounding); with `quant_weights` (one per
// value of the row, e.g. from an importance matrix) ggml's weighted scale search. q8_0 ignores weights.
// n must be a multiple of 32 (throws lowbit::Error otherwise).
#pragma once

#include <cstdint>

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

void quantize_row_q4_0(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_q4_1(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_q5_0(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_q5_1(const float* x, void* blocks, int64_t n, const float* quant_weights);
void quantize_row_q8_0(const float* x, void* blocks, int64_t n, const float* quant_weights);

void dequantize_row_q4_0(const void* blocks, float* y, int64_t n);
void dequantize_row_q4_1(const void* blocks, float* y, int64_t n);
void dequantize_row_q5_0(const void* blocks, float* y, int64_t n);
void dequantize_row_q5_1(const void* blocks, float* y, int64_t n);
void dequantize_row_q8_0(const void* blocks, float* y, int64_t n);

}  // namespace lowbit::ggml
