// bitsandbytes LLM.int8 row-wise quantization on the GPU (threshold 0) and its dequantization.
// The arithmetic: include/lowbit/formats/bnb_int8.h.
#include <string>

#include "codec_common.cuh"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace lowbit::cuda {
namespace {

using detail::mul_rn;

constexpr int kThreads = 256;

// One thread block per row (grid-stride over rows): the row's absmax, then its codes. The second
// pass re-reads the row, which the first has just brought into L2 (a 14336-value bf16 row is 28 KB).
template <DType T>
__global__ void __launch_bounds__(kThreads) quantize_int8_kernel(const void* __restrict__ input, int64_t rows,
                                                                 int64_t cols, bool vector, int8_t* __restrict__ cb,
                                                                 float* __restrict__ scb) {
  __shared__ float warp_max[kThreads / 32];
  const int64_t groups = vector ? cols / 8 : 0;  // vector: cols % 8 == 0 and aligned rows
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t row_start = r * cols;
    float m = 0.0f;
    for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
      float x[8];
      detail::load8<T>(input, row_start / 8 + g, x);
#pragma unroll
      for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(detail::flush_subnormal(x[k])));
    }
    if (!vector)
      for (int64_t c = threadIdx.x; c < cols; c += kThreads)
        m = fmaxf(m, fabsf(detail::flush_subnormal(detail::load1<T>(input, row_start + c))));
    for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
    __syncthreads();
    for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
    __syncthreads();  // warp_max is rewritten by the next row
    // bitsandbytes' 127.0f / absmax under --use_fast_math; +Inf for a zero row, whose 0 * Inf = NaN
    // codes become 0 (the GPU's float -> int conversion of NaN, made explicit here).
    const float scale = detail::div_approx_ftz(127.0f, m);
    auto code = [scale](float x) -> int8_t {
      const float v = detail::mul_ftz(x, scale);
      return isnan(v) ? int8_t(0) : int8_t(__float2int_rn(v));
    };
    for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
      float x[8];
      detail::load8<T>(input, row_start / 8 + g, x);
      uint32_t lo = 0, hi = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        lo |= uint32_t(uint8_t(code(x[k]))) << (8 * k);
        hi |= uint32_t(uint8_t(code(x[k + 4]))) << (8 * k);
      }
      reinterpret_cast<uint2*>(cb)[row_start / 8 + g] = make_uint2(lo, hi);
    }
    if (!vector)
      for (int64_t c = threadIdx.x; c < cols; c += kThreads) cb[row_start + c] = code(detail::load1<T>(input, row_start + c));
    if (threadIdx.x == 0) scb[r] = m;
  }
}

// bnb::int8_value: (float(cb) * scb_r) * 1/127, rounded twice; group g = 8 values of one row.
template <DType T>
__global__ void __launch_bounds__(kThreads) dequantize_int8_kernel(const int8_t* __restrict__ cb,
                                                                   const float* __restrict__ scb, int64_t rows,
                                                                   int64_t cols, void* __restrict__ out) {
  const int64_t groups = rows * cols / 8;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const uint2* words = reinterpret_cast<const uint2*>(cb);
  for (int64_t g = blockIdx.x * int64_t(kThreads) + threadIdx.x; g < groups; g += stride) {
    const uint2 w = words[g];
    const float s = scb[g * 8 / cols];
    float y[8];
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      y[k] = bnb::int8_value(int8_t(w.x >> (8 * k)), s);
      y[k + 4] = bnb::int8_value(int8_t(w.y >> (8 * k)), s);
    }
    detail::store8<T>(out, g, y);
  }
}

template <DType T>
__global__ void __launch_bounds__(kThreads) dequantize_int8_scalar_kernel(const int8_t* cb, const float* scb,
                                                                          int64_t rows, int64_t cols, void* out) {
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < rows * cols; i += int64_t(gridDim.x) * kThreads)
    detail::store1<T>(out, i, bnb::int8_value(cb[i], scb[i / cols]));
}

}  // namespace

void quantize_int8_rowwise(DType in_dtype, const void* input, int64_t rows, int64_t cols, int8_t* cb, float* scb,
                           cudaStream_t stream) {
  detail::require_float_dtype(in_dtype, "GPU bnb int8 quantization");
  if (rows <= 0 || cols <= 0) return;
  const bool vector = cols % 8 == 0 && detail::aligned16(input) && (reinterpret_cast<uintptr_t>(cb) & 7) == 0;
  detail::dispatch_float_dtype(in_dtype, [&]<DType T>() {
    const unsigned grid = detail::grid_for<quantize_int8_kernel<T>>(rows * kThreads, kThreads);
    quantize_int8_kernel<T><<<grid, kThreads, 0, stream>>>(input, rows, cols, vector, cb, scb);
  });
  check(cudaGetLastError());
}

void dequantize_int8_rowwise(const int8_t* cb, const float* scb, int64_t rows, int64_t cols, DType out_dtype,
                             void* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return;
  const bool vector = cols % 8 == 0 && detail::aligned16(out) && (reinterpret_cast<uintptr_t>(cb) & 7) == 0;
  detail::dispatch_float_dtype(out_dtype, [&]<DType T>() {
    if (vector)
      dequantize_int8_kernel<T><<<detail::grid_for<dequantize_int8_kernel<T>>(rows * cols / 8, kThreads), kThreads, 0, stream>>>(cb, scb, rows,
                                                                                                    cols, out);
    else
      dequantize_int8_scalar_kernel<T><<<detail::grid_for<dequantize_int8_scalar_kernel<T>>(rows * cols, kThreads), kThreads, 0, stream>>>(
          cb, scb, rows, cols, out);
  });
  check(cudaGetLastError());
}

}  // namespace lowbit::cuda
