// ggml's block types seen as fixed grids: once a block's scales (and mins) are stored, value j of the
// block can only be step_j * (q - zero_j) + offset_j for an integer code q in [min_code, max_code], or,
// for a type with a codebook per value, step_j * levels[q]. GPTQ fits a block's scales with the type's
// own quantizer, then picks each code itself: this is what it needs to read a block's grid and write one
// code, without touching the scales.
//
// Covered: the affine types, q1_0 q4_0 q4_1 q5_0 q5_1 q8_0, q2_K q3_K q4_K q5_K q6_K and the ternary
// tq1_0 tq2_0, and the per-value codebooks of iq4_nl, iq4_xs, mxfp4 and nvfp4. q2_0 is left to rounding
// (.cpp).
//
// Codebooks over groups of values (iq3_xxs, iq3_s: a grid point per 4 values, signs per 8; iq2_xxs,
// iq2_xs, iq2_s: a grid point per 8; iq1_s, iq1_m: a signed grid point per 8 with a ±1/8 shift) have no
// per-value grid: such a codec has group_values > 1 and set_group instead, which chooses a whole group's
// code at once under the block's stored scales (ggml_block_grid_iq.cpp, ggml_block_grid_iq1.cpp).
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/formats/ggml_types.h"

namespace lowbit::ggml {

// A codebook of `size` entries: code q stands for value_of_code[q]; `ascending` lists the values in
// order and code_of_ascending[i] the code of ascending[i] (iq4's codes are already in order; fp4's
// put the sign on top).
struct Codebook {
  int size;
  const int8_t* value_of_code;
  const int8_t* ascending;
  const uint8_t* code_of_ascending;
};

struct ValueGrid {
  float step;    // 0 where the stored scale is 0: every code gives the same value
  float offset;
  int zero;
  int min_code, max_code;
  const Codebook* codebook = nullptr;  // when set: value step * codebook value of q (offset, zero unused)

  float value(int q) const { return codebook ? step * float(codebook->value_of_code[q]) : step * float(q - zero) + offset; }
  // The nearest code to x; ties to even, as ggml's k-quants re-derive their codes from stored scales
  // (a codebook: the lower entry, as ggml's best_index_int8).
  int nearest(float x) const;
};

struct BlockGridCodec {
  GgmlType type;
  int block_values;  // 32 or 256
  // The grid of every value of a block (block_values entries).
  void (*grids)(const void* block, ValueGrid* out);
  int (*code)(const void* block, int j);
  void (*set_code)(void* block, int j, int q);
  // A group codebook (the per-value hooks above are then null): values first .. first + group_values - 1
  // of the block share one code. set_group writes the code nearest x (group_values values) in the
  // weight-weighted squared error, under the block's stored scales, and writes to `chosen` the values
  // the dequantizer reads back for it.
  int group_values = 1;
  void (*set_group)(void* block, int first, const float* x, const float* weight, float* chosen) = nullptr;
};

// The group codebook codecs (ggml_block_grid_iq.cpp, ggml_block_grid_iq1.cpp).
extern const BlockGridCodec kIq3XxsGroups, kIq3SGroups, kIq2XxsGroups, kIq2XsGroups, kIq2SGroups, kIq1SGroups, kIq1MGroups;

// The codec of `type`, or null for types GPTQ has no path for.
const BlockGridCodec* block_grid_codec(GgmlType type);

}  // namespace lowbit::ggml
