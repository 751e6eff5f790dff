// Quantization codecs on the GPU: plain device pointers and a stream, bit for bit the CPU codecs
// (include/lowbit/formats/*.h define the formats; the CUDA kernels in src/kernels/cuda/ must match
// them, and tests/kernels/cuda_codecs_test.cpp checks that they do).
//
// Every pointer is a device pointer. Outputs are written whole (no read-modify-write); every
// function only enqueues work on `stream` and throws lowbit::Error for invalid arguments or a CUDA
// error at launch. Inputs must be finite where the CPU codec would throw on NaN or Inf: the GPU does
// not check them (the codes it then writes are unspecified).
// Pointers need no particular alignment, but the fast paths want 16-byte aligned outputs and inputs
// (cudaMalloc gives 256): other pointers take a slower scalar path with the same bytes.
// Declared only when lowbit was built with LOWBIT_CUDA (LOWBIT_HAVE_CUDA is then defined).
#pragma once

#include <cstdint>

#include "lowbit/core/dtype.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/format.h"

typedef struct CUstream_st* cudaStream_t;

namespace lowbit::cuda {

// ---- bitsandbytes 4-bit (nf4, fp4) ----

// The scales of a double-quantized tensor (bnb::NestedAbsmax on the device): block b's scale is
// code_map[codes[b]] * nested_absmax[b / 256] + *offset, with the nested map
// bnb::dynamic_map_signed() (the only one bitsandbytes writes).
struct NestedScales {
  const uint8_t* codes = nullptr;         // one per 4-bit block
  const float* nested_absmax = nullptr;   // one per bnb::kNestedBlocksize codes
  const float* offset = nullptr;          // one float on the device (bitsandbytes keeps it there too)
};

// out[i] = out_dtype(lut[code_i] * scale_{i / blocksize}) for n elements (f32, f16 or bf16 out):
// the bytes of bnb::dequantize_4bit. packed holds ceil(n / 2) bytes, absmax ceil(n / blocksize)
// floats. The nested form recovers each block's scale inside the same single launch.
void dequantize_4bit(bnb::QuantType type, const uint8_t* packed, const float* absmax, int64_t n, int64_t blocksize,
                     DType out_dtype, void* out, cudaStream_t stream);
void dequantize_4bit(bnb::QuantType type, const uint8_t* packed, const NestedScales& scales, int64_t n,
                     int64_t blocksize, DType out_dtype, void* out, cudaStream_t stream);

// The first level of bnb::quantize_4bit: n f32/f16/bf16 values -> ceil(n / 2) packed bytes and
// ceil(n / blocksize) absmax floats, with the GPU's rcp.approx as bitsandbytes' kernel uses it.
void quantize_4bit(bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                   uint8_t* packed, float* absmax, cudaStream_t stream);

// quantize_4bit, then (double_quant) bnb::quantize_absmax_nested in the same cooperative launch: the
// offset is the float32 nearest the absmaxes' mean from a fixed-order double reduction (264 fixed
// parts, Neumaier sums per thread, then fixed trees), so the same inputs always give the same float
// on any GPU. The CPU's bnb::mean_to_nearest_float sums exactly; both round the mean to float32, so
// they agree unless the exact mean lies within ~1e-15 (relative) of a rounding boundary. `absmax` is
// always written (the first level's scales); with double quant the caller may drop it afterwards,
// as bitsandbytes does.
struct Quantized4bitBuffers {
  uint8_t* packed = nullptr;        // ceil(n / 2)
  float* absmax = nullptr;          // ceil(n / blocksize)
  uint8_t* codes = nullptr;         // double quant: ceil(n / blocksize)
  float* nested_absmax = nullptr;   // double quant: ceil(blocks / 256)
  float* offset = nullptr;          // double quant: 1
};
void quantize_4bit(bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                   bool double_quant, const Quantized4bitBuffers& out, cudaStream_t stream);

// ---- bitsandbytes LLM.int8 row-wise ----

// Threshold 0 only (no outlier columns): cb = round(x * div.approx(127, SCB_r)), SCB_r = max |x|
// over row r, as bnb::quantize_int8_rowwise(input, 0). input: rows x cols f32/f16/bf16.
void quantize_int8_rowwise(DType in_dtype, const void* input, int64_t rows, int64_t cols, int8_t* cb, float* scb,
                           cudaStream_t stream);
// out = out_dtype((float(cb) * scb_r) * bnb::kInt8DequantScale), as bnb::dequantize_int8_rowwise
// followed by a round-to-nearest-even conversion for f16/bf16 outputs.
void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols, DType out_dtype,
                             void* out, cudaStream_t stream);

// ---- ggml block types ----

// Whether dequantize_ggml handles `type`: every block type lowbit writes (q4_0 q4_1 q5_0 q5_1 q8_0,
// q2_K ... q6_K, iq1_s iq1_m iq2_xxs iq2_xs iq2_s iq3_xxs iq3_s iq4_nl iq4_xs, tq1_0 tq2_0 mxfp4 nvfp4
// q1_0 q2_0), and the float types f32 f16 bf16 (converted, rounding to nearest even).
bool has_ggml_dequantize(GgmlType type);

// rows x cols values from rows * ggml_row_bytes(type, cols) bytes of blocks, as
// lowbit::dequantize_rows followed (f16, bf16) by a round-to-nearest-even conversion.
void dequantize_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                     cudaStream_t stream);

}  // namespace lowbit::cuda
