// The row kernels of bitsandbytes' LLM.int8 row-wise codec (private to src/formats). The scalar
// definition lives in bnb_int8.cpp; the CPU backend's kernels (kernels/cpu/cpu_kernels.h) must give
// the same bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/core/dtype.h"

namespace lowbit::bnb::detail {

// Quantizes rows [first_row, last_row) of a row-major [rows, cols] f32/f16/bf16 matrix with
// threshold 0 (no outliers): writes each row's SCB and its codes. Returns the flat index of the
// first NaN or Inf met, or -1 (the row holding it is left undefined).
using QuantizeInt8RowsFn = int64_t (*)(DType dtype, const std::byte* input, int64_t cols, int64_t first_row,
                                       int64_t last_row, int8_t* cb, float* scb);

// Dequantizes rows [first_row, last_row) to out_dtype (f32, f16 or bf16) at `out`, the matrix's
// first element: (float(CB) * SCB) * kInt8DequantScale, rounded to nearest even.
// `stream`: write with non-temporal stores (out 64-byte aligned, rows a multiple of 64 bytes).
using DequantizeInt8RowsFn = void (*)(const int8_t* cb, const float* scb, int64_t cols, int64_t first_row,
                                      int64_t last_row, DType out_dtype, std::byte* out, bool stream);

}  // namespace lowbit::bnb::detail
