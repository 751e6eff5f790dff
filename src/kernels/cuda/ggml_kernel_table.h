// The CUDA backend's table of ggml kernels, one row per format keyed by the registry's FormatId: how a
// tensor of that format is dequantized and multiplied with a few tokens on the GPU. Each family file
// (ggml_legacy.cu, ggml_kquants.cu, ggml_iquants.cu, ggml_ternary_fp4.cu, ggml_float.cu) contributes
// the rows of its formats; ggml_dequantize.cu indexes them once by FormatId and answers every lookup
// (codecs.h's has_ggml_dequantize / dequantize_ggml, matmul.h's has_ggml_matvec / matvec_ggml).
// Which formats exist is the registry's (lowbit/formats/format.h): the rows only name them.
// Plain C++: the tests read the table without a GPU.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <span>

#include "lowbit/core/dtype.h"
#include "lowbit/formats/format.h"

namespace lowbit::cuda::detail {

// `values` values (a whole number of the format's blocks, one contiguous run) into out_dtype.
using DequantizeKernel = void (*)(const void* blocks, int64_t values, DType out_dtype, void* out, cudaStream_t stream);
// y [tokens, rows] (=, or += when accumulating) x [tokens, cols] · Wᵀ, W rows x cols in its blocks.
using MatvecKernel = void (*)(const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                              bool accumulate, cudaStream_t stream);

struct CudaFormatKernels {
  FormatId format;
  DequantizeKernel dequantize;
  MatvecKernel matvec;
};

// Each family's rows.
std::span<const CudaFormatKernels> legacy_kernels();
std::span<const CudaFormatKernels> kquant_kernels();
std::span<const CudaFormatKernels> iquant_kernels();
std::span<const CudaFormatKernels> ternary_fp4_kernels();
std::span<const CudaFormatKernels> float_kernels();

// Every row, in the registry's order.
std::span<const CudaFormatKernels* const> all_format_kernels();
// The row of `format`, or null when the CUDA backend has no kernels for it.
const CudaFormatKernels* find_format_kernels(FormatId format);

}  // namespace lowbit::cuda::detail
