// The matrix-vector product of every ggml block type for a few tokens (decoding, short batches):
// y [tokens, rows] (=, or += when accumulating) x [tokens, cols] · Wᵀ, W in its stored blocks. A warp
// or four per few weight rows; each lane decodes 8-value groups with the type's decoder (ggml_dequantize.cuh: the
// values dequantize_rows gives, in float32) and multiplies them with every token's float32 inputs, so
// the weight is read once for all tokens and no 16-bit copy of it is made.
#pragma once

#include <type_traits>

#include "ggml_dequantize.cuh"
#include "ggml_kernel_table.h"
#include "ggml_matvec_staged.cuh"

namespace lowbit::cuda::detail {

inline constexpr int kMatvecMaxTokens = 8;
constexpr int kMatvecWarps = 4;

// A block of kMatvecWarps warps: kSplit warps share each set of kRows rows, splitting the rows' groups
// between them. A lane's activations, loaded once, serve its kRows rows; each lane has kInFlight groups'
// loads (of every row) issued before it decodes any (one load at a time leaves the product bound by
// latency, whatever the type's bytes).
template <class D, int kTokens, int kRows, int kSplit>
__global__ void __launch_bounds__(32 * kMatvecWarps) ggml_matvec_kernel(const uint8_t* __restrict__ blocks, int64_t rows,
                                                                      int64_t cols, const float* __restrict__ x,
                                                                      float* __restrict__ y, bool accumulate) {
  static_assert(kMatvecWarps % kSplit == 0);
  constexpr int kGroupsPerBlock = D::kValues / 8, kStride = 32 * kSplit, kRowSets = kMatvecWarps / kSplit;
  constexpr int kInFlight = kRows >= 4 ? 1 : 4 / kRows;
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32), row_set = warp / kSplit;
  const int thread = (warp % kSplit) * 32 + lane;  // within the warps sharing these rows
  const int64_t first_row = (int64_t(blockIdx.x) * kRowSets + row_set) * kRows;
  const int64_t groups = cols / 8;
  const size_t row_bytes = size_t(cols / D::kValues) * D::kBytes;
  const uint8_t* row_blocks[kRows];
#pragma unroll
  for (int r = 0; r < kRows; ++r) row_blocks[r] = blocks + size_t(min(first_row + r, rows - 1)) * row_bytes;  // past the end: read, not stored
  float sum[kRows][kTokens] = {};
  for (int64_t g0 = thread; g0 < groups; g0 += int64_t(kStride) * kInFlight) {
    typename D::Raw raw[kInFlight][kRows];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t g = g0 + int64_t(kStride) * u;
      if (g < groups)
#pragma unroll
        for (int r = 0; r < kRows; ++r) raw[u][r] = D::load(row_blocks[r] + (g / kGroupsPerBlock) * D::kBytes, int(g % kGroupsPerBlock));
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t g = g0 + int64_t(kStride) * u;
      if (g >= groups) break;
      float w[kRows][8];
#pragma unroll
      for (int r = 0; r < kRows; ++r) D::decode(raw[u][r], int(g % kGroupsPerBlock), w[r]);
#pragma unroll
      for (int t = 0; t < kTokens; ++t) {
        float v[8];
        load8<DType::f32>(x + t * cols, g, v);
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int k = 0; k < 8; ++k) sum[r][t] = fmaf(w[r][k], v[k], sum[r][t]);
      }
    }
  }
  // Each warp's sums; where warps share rows, their partial sums added in warp order by one thread each.
  __shared__ float partial[kMatvecWarps][kRows][kTokens];
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int t = 0; t < kTokens; ++t) {
      float s = sum[r][t];
      for (int offset = 16; offset > 0; offset /= 2) s += __shfl_xor_sync(0xffffffffu, s, offset);
      partial[warp][r][t] = s;
    }
  if constexpr (kSplit > 1) __syncthreads();
  else __syncwarp();
  if (thread >= kRows * kTokens) return;
  const int r = thread / kTokens, t = thread % kTokens;
  const int64_t row = first_row + r;
  if (row >= rows) return;
  float s = 0.0f;
#pragma unroll
  for (int w = 0; w < kSplit; ++w) s += partial[row_set * kSplit + w][r][t];
  y[t * rows + row] = accumulate ? y[t * rows + row] + s : s;
}

// Launches D's product; tokens in 1..kMatvecMaxTokens, cols a multiple of D::kValues and of 8, x 16-byte aligned.
template <class D>
void launch_ggml_matvec(const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                        bool accumulate, cudaStream_t stream) {
  require_block_alignment<D>(blocks);
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  auto launch = [&]<int T>() {
    // Measured on the H200 (docs/benchmarks.md): one or two tokens, four warps on two rows (a warp per
    // four rows left 14336-column rows to latency: q6_K 4096x14336 took 153 us, 47 us so); more tokens,
    // a warp per four or two rows (the activations' loads then dominate: more rows share each).
    constexpr int kRows = T <= 2 ? 2 : T <= 4 ? 4 : 2, kSplit = T <= 2 ? kMatvecWarps : 1;
    constexpr int kRowsPerBlock = kRows * kMatvecWarps / kSplit;
    const unsigned grid = unsigned((rows + kRowsPerBlock - 1) / kRowsPerBlock);
    ggml_matvec_kernel<D, T, kRows, kSplit><<<grid, 32 * kMatvecWarps, 0, stream>>>(bytes, rows, cols, x, y, accumulate);
  };
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

// The kernel table's product: one token through the staged kernel (ggml_matvec_staged.cuh) where it
// takes the rows, by D's groups or, where the type has a decoder by runs R, by R's runs (each byte read
// once); else the few-token matvec above.
template <class D, class R = void>
void launch_block_matvec(const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                         bool accumulate, cudaStream_t stream) {
  require_block_alignment<D>(blocks);
  using Staged = std::conditional_t<std::is_void_v<R>, D, R>;  // the decoder the staged kernel would use
  using Units = std::conditional_t<std::is_void_v<R>, GroupUnits<D>, RunUnits<R>>;
  if constexpr (takes_staged_product<Staged>())
    if (tokens == 1 && launch_staged_matvec<Units>(static_cast<const uint8_t*>(blocks), rows, cols, x, y, accumulate, stream)) return;
  launch_ggml_matvec<D>(blocks, rows, cols, x, tokens, y, accumulate, stream);
}

// A block type's row of the kernel table: its decoder's dequantize and matrix-vector launchers.
template <class D>
constexpr CudaFormatKernels block_format_kernels(FormatId format) {
  return {format, &launch_dequantize_ggml<D>, &launch_block_matvec<D>};
}

}  // namespace lowbit::cuda::detail
