// The GPU's ggml dequantize entry point: checks the shape, then hands the type to its family's file.
#include <string>

#include "ggml_dequantize.cuh"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {

bool has_ggml_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
    case GgmlType::IQ1_S: case GgmlType::IQ1_M: case GgmlType::IQ2_XXS: case GgmlType::IQ2_XS: case GgmlType::IQ2_S:
    case GgmlType::IQ3_XXS: case GgmlType::IQ3_S: case GgmlType::IQ4_NL: case GgmlType::IQ4_XS:
    case GgmlType::TQ1_0: case GgmlType::TQ2_0: case GgmlType::MXFP4: case GgmlType::NVFP4: case GgmlType::Q1_0: case GgmlType::Q2_0:
    case GgmlType::F32: case GgmlType::F16: case GgmlType::BF16:
      return true;
    default: return false;
  }
}

void dequantize_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                     cudaStream_t stream) {
  if (!has_ggml_dequantize(type))
    throw Error("no GPU dequantize for ggml type " + std::string(ggml_type_name(type)),
                {.expected = "q4_0 q4_1 q5_0 q5_1 q8_0 q2_K ... q6_K iq1_s ... iq4_xs tq1_0 tq2_0 mxfp4 nvfp4 q1_0 q2_0 f32 f16 bf16"});
  ggml_row_bytes(type, cols);  // throws unless rows are whole blocks
  if (rows <= 0 || cols == 0) return;
  // Rows of whole blocks are one contiguous run of blocks: the kernels see rows * cols values.
  if (!detail::dequantize_ggml_legacy(type, blocks, rows * cols, out_dtype, out, stream) &&
      !detail::dequantize_ggml_kquants(type, blocks, rows * cols, out_dtype, out, stream) &&
      !detail::dequantize_ggml_iquants(type, blocks, rows * cols, out_dtype, out, stream) &&
      !detail::dequantize_ggml_ternary_fp4(type, blocks, rows * cols, out_dtype, out, stream))
    detail::dequantize_ggml_float(type, blocks, rows * cols, out_dtype, out, stream);
}

bool has_ggml_matvec(GgmlType type, int64_t cols) {
  return has_ggml_dequantize(type) && cols % 8 == 0 && cols % int64_t(ggml_type_info(type).block_elements) == 0;
}

void matvec_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                 bool accumulate, cudaStream_t stream) {
  if (!has_ggml_matvec(type, cols))
    throw Error("no GPU matrix-vector product for a " + std::string(ggml_type_name(type)) + " weight of " + std::to_string(cols) + " columns",
                {.expected = "a type dequantize_ggml covers, columns a multiple of 8 and of its block"});
  if (tokens < 1 || tokens > kMatvecMaxTokens)
    throw Error("GPU matrix-vector product: " + std::to_string(tokens) + " tokens", {.expected = "1 to 8"});
  if (rows <= 0) return;
  detail::matvec_ggml_legacy(type, blocks, rows, cols, x, tokens, y, accumulate, stream) ||
      detail::matvec_ggml_kquants(type, blocks, rows, cols, x, tokens, y, accumulate, stream) ||
      detail::matvec_ggml_iquants(type, blocks, rows, cols, x, tokens, y, accumulate, stream) ||
      detail::matvec_ggml_ternary_fp4(type, blocks, rows, cols, x, tokens, y, accumulate, stream) ||
      detail::matvec_ggml_float(type, blocks, rows, cols, x, tokens, y, accumulate, stream);
}

}  // namespace lowbit::cuda
