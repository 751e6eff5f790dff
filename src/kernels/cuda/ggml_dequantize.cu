// The GPU's ggml entry points: the kernel table indexed by FormatId (each family file's rows,
// ggml_kernel_table.h), then dequantize_ggml and matvec_ggml check the shape and call the row's kernel.
#include <array>
#include <string>

#include "ggml_dequantize.cuh"
#include "ggml_kernel_table.h"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {
namespace detail {
namespace {

struct KernelIndex {
  std::array<const CudaFormatKernels*, 256> by_format{};  // FormatId is a uint8_t
  std::vector<const CudaFormatKernels*> in_registry_order;
};

const KernelIndex& kernel_index() {
  static const KernelIndex index = [] {
    KernelIndex built;
    for (auto family : {legacy_kernels, kquant_kernels, iquant_kernels, ternary_fp4_kernels, float_kernels})
      for (const CudaFormatKernels& row : family()) {
        const CudaFormatKernels*& slot = built.by_format[size_t(row.format)];
        if (slot != nullptr) throw Error("CUDA kernel table: two rows for " + std::string(format_name(row.format)));
        slot = &row;
      }
    for (const FormatInfo& info : kFormats)
      if (const CudaFormatKernels* row = built.by_format[size_t(info.id)]) built.in_registry_order.push_back(row);
    return built;
  }();
  return index;
}

// The row of a ggml type read from a file (any id), or null.
const CudaFormatKernels* find_ggml_kernels(GgmlType type) {
  const FormatInfo* info = ggml_type_info(uint32_t(type));
  return info != nullptr ? find_format_kernels(info->id) : nullptr;
}

// "q4_0 q4_1 ... bf16": the formats the table has, for error messages.
std::string table_format_names() {
  std::string names;
  for (const CudaFormatKernels* row : all_format_kernels())
    names += (names.empty() ? "" : " ") + std::string(format_name(row->format));
  return names;
}

std::string ggml_type_label(GgmlType type) {
  const FormatInfo* info = ggml_type_info(uint32_t(type));
  return info != nullptr ? std::string(info->name) : "id " + std::to_string(uint32_t(type));
}

}  // namespace

std::span<const CudaFormatKernels* const> all_format_kernels() { return kernel_index().in_registry_order; }

const CudaFormatKernels* find_format_kernels(FormatId format) { return kernel_index().by_format[size_t(format)]; }

}  // namespace detail

bool has_ggml_dequantize(GgmlType type) { return detail::find_ggml_kernels(type) != nullptr; }

void dequantize_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                     cudaStream_t stream) {
  const detail::CudaFormatKernels* kernels = detail::find_ggml_kernels(type);
  if (kernels == nullptr)
    throw Error("no GPU dequantize for ggml type " + detail::ggml_type_label(type), {.expected = detail::table_format_names()});
  ggml_row_bytes(type, cols);  // throws unless rows are whole blocks
  if (rows <= 0 || cols == 0) return;
  // Rows of whole blocks are one contiguous run of blocks: the kernels see rows * cols values.
  kernels->dequantize(blocks, rows * cols, out_dtype, out, stream);
}

bool has_ggml_matvec(GgmlType type, int64_t cols) {
  return has_ggml_dequantize(type) && cols % 8 == 0 && cols % int64_t(ggml_type_info(type).block_elements) == 0;
}

void matvec_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                 bool accumulate, cudaStream_t stream) {
  if (!has_ggml_matvec(type, cols))
    throw Error("no GPU matrix-vector product for a " + detail::ggml_type_label(type) + " weight of " + std::to_string(cols) + " columns",
                {.expected = "a type dequantize_ggml covers, columns a multiple of 8 and of its block"});
  if (tokens < 1 || tokens > kMatvecMaxTokens)
    throw Error("GPU matrix-vector product: " + std::to_string(tokens) + " tokens", {.expected = "1 to 8"});
  if (rows <= 0) return;
  detail::find_ggml_kernels(type)->matvec(blocks, rows, cols, x, tokens, y, accumulate, stream);
}

}  // namespace lowbit::cuda
