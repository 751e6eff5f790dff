// MatmulContext, the 16-bit cuBLAS product, and the 4-bit entry points that choose between the
// fused kernel (few tokens) and dequantize + cuBLAS (many).
#include <string>

#include "codec_common.cuh"
#include "lowbit/formats/format.h"
#include "matmul_context.cuh"

namespace lowbit::cuda {

void check_blas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS)
    throw Error(std::string("cuBLAS error in ") + what + ": " + cublasGetStatusString(status));
}

MatmulContext::MatmulContext() : impl_(std::make_unique<Impl>()) {
  check_blas(cublasCreate(&impl_->blas), "cublasCreate");
  check_blas(cublasLtCreate(&impl_->blas_lt), "cublasLtCreate");
}

MatmulContext::~MatmulContext() {
  for (void* p : impl_->buffers) cudaFree(p);
  cublasLtDestroy(impl_->blas_lt);
  cublasDestroy(impl_->blas);
}

void MatmulContext::set_int8_layout(Int8Layout layout) {
  impl_->int8_layout = layout;
  impl_->int8_algos.clear();
}

void* MatmulContext::Impl::scratch(Slot slot, size_t bytes) {
  if (sizes[slot] < bytes) {
    check(cudaFree(buffers[slot]));
    buffers[slot] = nullptr;
    check(cudaMalloc(&buffers[slot], bytes));
    sizes[slot] = bytes;
  }
  return buffers[slot];
}

void matmul_16bit(MatmulContext& context, DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                  int64_t tokens, void* y, cudaStream_t stream) {
  if (dtype != DType::bf16 && dtype != DType::f16)
    throw Error("GPU 16-bit matmul: dtype must be bf16 or f16, got " + std::string(dtype_name(dtype)));
  if (tokens == 0) return;
  // Row-major y [tokens, rows] is column-major [rows, tokens] = Wᵀ-as-stored · x-as-stored.
  const cudaDataType type = dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const float one = 1.0f, zero = 0.0f;
  cublasHandle_t blas = context.impl().blas;
  check_blas(cublasSetStream(blas, stream), "cublasSetStream");
  check_blas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(tokens), int(cols), &one, w, type, int(cols), x,
                          type, int(cols), &zero, y, type, int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

void matmul_16bit_f32_out(MatmulContext& context, DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                          int64_t tokens, float* y, bool accumulate, cudaStream_t stream) {
  if (dtype != DType::bf16 && dtype != DType::f16)
    throw Error("GPU 16-bit matmul: dtype must be bf16 or f16, got " + std::string(dtype_name(dtype)));
  if (tokens == 0) return;
  const cudaDataType type = dtype == DType::bf16 ? CUDA_R_16BF : CUDA_R_16F;
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  cublasHandle_t blas = context.impl().blas;
  check_blas(cublasSetStream(blas, stream), "cublasSetStream");
  check_blas(cublasGemmEx(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(tokens), int(cols), &one, w, type, int(cols), x,
                          type, int(cols), &beta, y, CUDA_R_32F, int(rows), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
             "cublasGemmEx");
}

void matmul_f32(MatmulContext& context, const float* w, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                bool accumulate, cudaStream_t stream) {
  if (tokens == 0) return;
  const float one = 1.0f, beta = accumulate ? 1.0f : 0.0f;
  cublasHandle_t blas = context.impl().blas;
  check_blas(cublasSetStream(blas, stream), "cublasSetStream");
  check_blas(cublasSetMathMode(blas, CUBLAS_PEDANTIC_MATH), "cublasSetMathMode");  // no TF32 for a float32 product
  const cublasStatus_t status = cublasSgemm(blas, CUBLAS_OP_T, CUBLAS_OP_N, int(rows), int(tokens), int(cols), &one, w, int(cols), x,
                                            int(cols), &beta, y, int(rows));
  check_blas(cublasSetMathMode(blas, CUBLAS_DEFAULT_MATH), "cublasSetMathMode");
  check_blas(status, "cublasSgemm");
}

void matmul_4bit(MatmulContext& context, const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, void* y,
                 cudaStream_t stream) {
  if (tokens < dequantize_tokens(w)) return matmul_4bit_fused(w, dtype, x, tokens, y, stream);
  if (w.format == Fused4bitWeight::Format::q4_K && !w.source_q4_K.blocks)
    throw Error("GPU 4-bit matmul: a stacked q4_K weight (stack_fused) has no blocks to dequantize for " + std::to_string(tokens) +
                " tokens");
  void* weight = context.impl().scratch(MatmulContext::Impl::kWeight16, size_t(w.rows * w.cols) * 2);
  if (w.format == Fused4bitWeight::Format::q4_K) dequantize_ggml(GgmlType::Q4_K, w.source_q4_K.blocks, w.rows, w.cols, dtype, weight, stream);
  else dequantize_fused(w, dtype, weight, stream);  // nf4/fp4: the tile order holds every code and scale
  matmul_16bit(context, dtype, weight, w.rows, w.cols, x, tokens, y, stream);
}

}  // namespace lowbit::cuda
