// The matrix-vector product of every ggml block type for a few tokens (decoding, short batches):
// y [tokens, rows] (=, or += when accumulating) x [tokens, cols] · Wᵀ, W in its stored blocks. One warp
// per weight row; each lane decodes 8-value groups with the type's decoder (ggml_dequantize.cuh: the
// values dequantize_rows gives, in float32) and multiplies them with every token's float32 inputs, so
// the weight is read once for all tokens and no 16-bit copy of it is made.
#pragma once

#include "ggml_dequantize.cuh"
#include "ggml_kernel_table.h"

namespace lowbit::cuda::detail {

inline constexpr int kMatvecMaxTokens = 8;
constexpr int kMatvecWarps = 4;

template <class D, int kTokens>
__global__ void __launch_bounds__(32 * kMatvecWarps) ggml_matvec_kernel(const uint8_t* __restrict__ blocks, int64_t rows,
                                                                      int64_t cols, const float* __restrict__ x,
                                                                      float* __restrict__ y, bool accumulate) {
  constexpr int kGroupsPerBlock = D::kValues / 8;
  const int64_t row = int64_t(blockIdx.x) * kMatvecWarps + threadIdx.x / 32;
  const int lane = int(threadIdx.x % 32);
  if (row >= rows) return;
  const int64_t groups = cols / 8;
  const uint8_t* row_blocks = blocks + row * (cols / D::kValues) * D::kBytes;
  float sum[kTokens] = {};
  // Each lane has kInFlight groups' loads issued before it decodes any (one load at a time leaves the
  // product bound by latency, whatever the type's bytes); it still takes its groups in the same order.
  constexpr int kInFlight = 4;
  for (int64_t g0 = lane; g0 < groups; g0 += 32 * kInFlight) {
    typename D::Raw raw[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t g = g0 + 32 * u;
      if (g < groups) raw[u] = D::load(row_blocks + (g / kGroupsPerBlock) * D::kBytes, int(g % kGroupsPerBlock));
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t g = g0 + 32 * u;
      if (g >= groups) break;
      float w[8];
      D::decode(raw[u], int(g % kGroupsPerBlock), w);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        float v[8];
        load8<DType::f32>(x + t * cols, g, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) sum[t] = fmaf(w[k], v[k], sum[t]);
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kTokens; ++t) {
    float s = sum[t];
    for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
    if (lane == 0) y[t * rows + row] = accumulate ? y[t * rows + row] + s : s;
  }
}

// Launches D's product; tokens in 1..kMatvecMaxTokens, cols a multiple of D::kValues and of 8, x 16-byte aligned.
template <class D>
void launch_ggml_matvec(const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                        bool accumulate, cudaStream_t stream) {
  require_block_alignment<D>(blocks);
  const unsigned grid = unsigned((rows + kMatvecWarps - 1) / kMatvecWarps);
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  auto launch = [&]<int T>() { ggml_matvec_kernel<D, T><<<grid, 32 * kMatvecWarps, 0, stream>>>(bytes, rows, cols, x, y, accumulate); };
  switch (tokens) {
    case 1: launch.template operator()<1>(); break;
    case 2: launch.template operator()<2>(); break;
    case 3: launch.template operator()<3>(); break;
    case 4: launch.template operator()<4>(); break;
    case 5: launch.template operator()<5>(); break;
    case 6: launch.template operator()<6>(); break;
    case 7: launch.template operator()<7>(); break;
    default: launch.template operator()<8>(); break;
  }
  check(cudaGetLastError());
}

// A block type's row of the kernel table: its decoder's dequantize and matrix-vector launchers.
template <class D>
constexpr CudaFormatKernels block_format_kernels(FormatId format) {
  return {format, &launch_dequantize_ggml<D>, &launch_ggml_matvec<D>};
}

}  // namespace lowbit::cuda::detail
