// The ggml codecs: for each GgmlType lowbit can write or read, a row quantizer and a row dequantizer.
// Adding a type = its row in the format registry (format.h), one codec file, and one line in
// src/formats/ggml_codecs.cpp.
//
// A "row" is n consecutive values laid out as n / block_elements blocks (the registry gives the
// sizes). Quantizers reproduce ggml's ggml_quantize_chunk byte for byte; dequantizers its to_float.
#pragma once

#include <cstddef>
#include <cstdint>

#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/format.h"

namespace lowbit {

// x: n floats; blocks: the row's bytes; quant_weights: n per-column importance weights, or null;
// target: the CPU kernels to run; stores: whether the output streams past the caches (both cpu_target.h).
using GgmlQuantizeRowFn = void (*)(const float* x, void* blocks, int64_t n, const float* quant_weights,
                                   cpu::CpuTarget target);
using GgmlDequantizeRowFn = void (*)(const void* blocks, float* y, int64_t n, cpu::CpuTarget target,
                                     cpu::OutputStores stores);

struct GgmlCodec {
  GgmlType type;
  GgmlQuantizeRowFn quantize_row;      // plain types (f32, f16, bf16) convert, ignoring weights
  GgmlDequantizeRowFn dequantize_row;
  bool uses_weights;                   // false where ggml ignores quant_weights (q8_0, plain types)
};

// Whether ggml refuses to quantize `type` without importance weights (the registry's needs_imatrix,
// ggml_quantize_requires_imatrix: iq2_xxs, iq2_xs, iq1_s). Their quantizers throw lowbit::Error when called without them.
bool ggml_requires_imatrix(GgmlType type);

// The codec of `type`, or null where lowbit has none.
const GgmlCodec* ggml_codec(GgmlType type);

// Bytes of one row of `cols` values; throws lowbit::Error unless cols is a whole number of blocks.
size_t ggml_row_bytes(GgmlType type, int64_t cols);

// Quantizes a rows x cols row-major matrix into dst (rows * ggml_row_bytes(type, cols) bytes), as
// ggml_quantize_chunk(type, x, dst, 0, rows, cols, weights). `weights` holds cols values (the same for
// every row) or is null. Rows are spread over lowbit::parallel_for; the bytes do not depend on it.
// Throws lowbit::Error for a type without codec or a cols that is not a whole number of blocks.
void quantize_rows(GgmlType type, const float* x, int64_t rows, int64_t cols, const float* weights, void* dst,
                   cpu::CpuTarget target = cpu::best_cpu_target());

// Dequantizes rows x cols values from src (rows * ggml_row_bytes(type, cols) bytes) into dst, with
// non-temporal stores where dst is too large to stay in cache (cpu::OutputStores).
void dequantize_rows(GgmlType type, const void* src, int64_t rows, int64_t cols, float* dst,
                     cpu::CpuTarget target = cpu::best_cpu_target());

}  // namespace lowbit
