// ggml's float types (f32, f16, bf16) beside the block types: the weight-to-tile conversion that
// dequantize_ggml does for them, and their decoders for the few-token matrix-vector product.
#include "ggml_matvec.cuh"

namespace lowbit::cuda::detail {
namespace {

// 8 consecutive values per group, 16 bytes (16-bit) or 32 bytes (f32): a "block" of 8.
template <DType S>
struct Float {
  static constexpr int kValues = 8, kBytes = S == DType::f32 ? 32 : 16;
  struct Raw { float v[8]; };
  static __device__ Raw load(const uint8_t* b, int) {
    Raw r;
    load8<S>(b, 0, r.v);
    return r;
  }
  static __device__ void decode(const Raw& r, int, float (&y)[8]) {
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = r.v[k];
  }
};

template <DType S, DType T>
__global__ void convert_kernel(const void* __restrict__ in, int64_t count, void* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x)
    store1<T>(out, i, load1<S>(in, i));
}

// The float types' dequantize: a conversion, one value per thread.
template <DType S>
void dequantize_float(const void* in, int64_t values, DType out_dtype, void* out, cudaStream_t stream) {
  dispatch_float_dtype(out_dtype, [&]<DType T>() {
    convert_kernel<S, T><<<grid_for<convert_kernel<S, T>>(values, 256), 256, 0, stream>>>(in, values, out);
  });
  check(cudaGetLastError());
}

template <DType S>
constexpr CudaFormatKernels float_format_kernels(FormatId format) {
  return {format, &dequantize_float<S>, &launch_block_matvec<Float<S>>};
}

constexpr CudaFormatKernels kFloatKernels[] = {
    float_format_kernels<DType::f32>(FormatId::f32),
    float_format_kernels<DType::f16>(FormatId::f16),
    float_format_kernels<DType::bf16>(FormatId::bf16),
};

}  // namespace

std::span<const CudaFormatKernels> float_kernels() { return kFloatKernels; }

}  // namespace lowbit::cuda::detail
