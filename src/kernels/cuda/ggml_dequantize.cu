// The GPU's ggml dequantize entry point: checks the shape, then hands the type to its family's file.
#include <string>

#include "ggml_dequantize.cuh"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace lowbit::cuda {

bool has_ggml_dequantize(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_0: case GgmlType::Q4_1: case GgmlType::Q5_0: case GgmlType::Q5_1: case GgmlType::Q8_0:
    case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::Q4_K: case GgmlType::Q5_K: case GgmlType::Q6_K:
      return true;
    default: return false;
  }
}

void dequantize_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                     cudaStream_t stream) {
  if (!has_ggml_dequantize(type))
    throw Error("no GPU dequantize for ggml type " + std::string(ggml_type_name(type)),
                {.expected = "q4_0 q4_1 q5_0 q5_1 q8_0 q2_K q3_K q4_K q5_K q6_K"});
  ggml_row_bytes(type, cols);  // throws unless rows are whole blocks
  if (rows <= 0 || cols == 0) return;
  // Rows of whole blocks are one contiguous run of blocks: the kernels see rows * cols values.
  if (!detail::dequantize_ggml_legacy(type, blocks, rows * cols, out_dtype, out, stream))
    detail::dequantize_ggml_kquants(type, blocks, rows * cols, out_dtype, out, stream);
}

}  // namespace lowbit::cuda
