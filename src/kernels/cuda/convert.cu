// Float dtype conversion on the GPU, through the same constexpr conversions as the CPU (half.h),
// so both sides give the same bits.
#include <string>

#include "check.h"
#include "lowbit/core/half.h"
#include "lowbit/kernels/cuda/device.h"

namespace lowbit::cuda {
namespace {

template <class Source, class ToFloat>
__global__ void to_f32_kernel(const Source* src, float* dst, size_t count, ToFloat to_float) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = to_float(src[i]);
}

template <class Target, class FromFloat>
__global__ void from_f32_kernel(const float* src, Target* dst, size_t count, FromFloat from_float) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < count; i += size_t(gridDim.x) * blockDim.x)
    dst[i] = from_float(src[i]);
}

constexpr int kThreads = 256;
unsigned grid_for(size_t count) { return unsigned(std::min<size_t>((count + kThreads - 1) / kThreads, 65535 * 8)); }

}  // namespace

void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  const unsigned grid = grid_for(count);
  switch (src_dtype) {
    case DType::f32: check(cudaMemcpyAsync(dst, src, count * 4, cudaMemcpyDeviceToDevice, stream)); return;
    case DType::f16:
      to_f32_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), dst, count,
                                                   [] __device__(uint16_t h) { return f16_to_f32(h); });
      break;
    case DType::bf16:
      to_f32_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const uint16_t*>(src), dst, count,
                                                   [] __device__(uint16_t b) { return bf16_to_f32(b); });
      break;
    case DType::f64:
      to_f32_kernel<<<grid, kThreads, 0, stream>>>(static_cast<const double*>(src), dst, count,
                                                   [] __device__(double d) { return float(d); });
      break;
    default: throw Error("cannot convert " + std::string(dtype_name(src_dtype)) + " to f32 on the GPU: not a float dtype");
  }
  check(cudaGetLastError());
}

void convert_from_f32(const float* src, DType dst_dtype, void* dst, size_t count, cudaStream_t stream) {
  if (count == 0) return;
  const unsigned grid = grid_for(count);
  switch (dst_dtype) {
    case DType::f32: check(cudaMemcpyAsync(dst, src, count * 4, cudaMemcpyDeviceToDevice, stream)); return;
    case DType::f16:
      from_f32_kernel<<<grid, kThreads, 0, stream>>>(src, static_cast<uint16_t*>(dst), count,
                                                     [] __device__(float f) { return f32_to_f16(f); });
      break;
    case DType::bf16:
      from_f32_kernel<<<grid, kThreads, 0, stream>>>(src, static_cast<uint16_t*>(dst), count,
                                                     [] __device__(float f) { return f32_to_bf16(f); });
      break;
    case DType::f64:
      from_f32_kernel<<<grid, kThreads, 0, stream>>>(src, static_cast<double*>(dst), count,
                                                     [] __device__(float f) { return double(f); });
      break;
    default: throw Error("cannot convert f32 to " + std::string(dtype_name(dst_dtype)) + " on the GPU: not a float dtype");
  }
  check(cudaGetLastError());
}

}  // namespace lowbit::cuda
