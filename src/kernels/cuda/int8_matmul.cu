// LLM.int8 on the GPU (bnb::llm_int8_matmul's arithmetic, include/lowbit/formats/bnb_int8.h):
//   1. threshold > 0: flag the outlier columns of X (any |x| >= threshold) and list them in order;
//   2. quantize X row-wise to int8 (outliers left out of the scale, outlier columns coded 0);
//   3. acc = CA · CBᵀ in int32 on the int8 tensor cores (cuBLASLt);
//   4. y = f16(int8 part + Σ over outlier columns of x · f16(dequantized weight)), the sum a float32
//      fma chain in column order, as the CPU computes it.
// Five launches at most; none waits for the host (the outlier count stays on the device).
#include <cublasLt.h>

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "codec_common.cuh"
#include "lowbit/formats/bnb_int8.h"
#include "matmul_context.cuh"

namespace lowbit::cuda {
namespace {

constexpr int kThreads = 256;
constexpr size_t kLtWorkspaceBytes = size_t(32) << 20;

__device__ __forceinline__ float half_to_float(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// Eight f16 values [8 * group, 8 * group + 8) of a 16-byte aligned array.
__device__ __forceinline__ void load8_f16(const uint16_t* x, int64_t group, float (&v)[8]) {
  const uint4 w = reinterpret_cast<const uint4*>(x)[group];
  const uint32_t words[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    v[2 * i] = half_to_float(uint16_t(words[i]));
    v[2 * i + 1] = half_to_float(uint16_t(words[i] >> 16));
  }
}

__global__ void flag_outlier_columns(const uint16_t* __restrict__ x, int64_t groups, int64_t cols, float threshold,
                                     uint8_t* __restrict__ flags) {
  for (int64_t g = blockIdx.x * int64_t(kThreads) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * kThreads) {
    float v[8];
    load8_f16(x, g, v);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (fabsf(v[i]) >= threshold) flags[(g * 8 + i) % cols] = 1;  // racing writers all write 1
  }
}

// One block: the flagged columns in ascending order, and their count.
__global__ void __launch_bounds__(1024) list_outlier_columns(const uint8_t* __restrict__ flags, int64_t cols,
                                                             int32_t* __restrict__ list, int32_t* __restrict__ count) {
  __shared__ int32_t warp_totals[32];
  const int64_t per_thread = (cols + blockDim.x - 1) / blockDim.x;
  const int64_t begin = threadIdx.x * per_thread, end = min(cols, begin + per_thread);
  int32_t mine = 0;
  for (int64_t c = begin; c < end; ++c) mine += flags[c];
  // Exclusive scan of `mine` over the block: within warps, then over the warp totals.
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  int32_t inclusive = mine;
  for (int o = 1; o < 32; o *= 2) {
    const int32_t up = __shfl_up_sync(0xffffffffu, inclusive, o);
    if (lane >= o) inclusive += up;
  }
  if (lane == 31) warp_totals[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    int32_t total = lane < int(blockDim.x / 32) ? warp_totals[lane] : 0;
    for (int o = 1; o < 32; o *= 2) {
      const int32_t up = __shfl_up_sync(0xffffffffu, total, o);
      if (lane >= o) total += up;
    }
    warp_totals[lane] = total;  // inclusive over warps
  }
  __syncthreads();
  int32_t at = inclusive - mine + (warp > 0 ? warp_totals[warp - 1] : 0);
  for (int64_t c = begin; c < end; ++c)
    if (flags[c]) list[at++] = int32_t(c);
  if (threadIdx.x == blockDim.x - 1) *count = at;
}

// One block per row: SCA over the values below the threshold, then the codes (0 in outlier columns).
__global__ void __launch_bounds__(kThreads) quantize_activation_rows(const uint16_t* __restrict__ x, int64_t cols,
                                                                     float threshold, const uint8_t* __restrict__ flags,
                                                                     int8_t* __restrict__ ca, float* __restrict__ sca) {
  __shared__ float warp_max[kThreads / 32];
  const int64_t row = blockIdx.x, groups = cols / 8;
  const uint16_t* xr = x + row * cols;
  const bool split = threshold > 0.0f;
  float m = 0.0f;
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    float v[8];
    load8_f16(xr, g, v);
#pragma unroll
    for (int i = 0; i < 8; ++i)
      if (!(split && fabsf(v[i]) >= threshold)) m = fmaxf(m, fabsf(detail::flush_subnormal(v[i])));
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  for (int w = 0; w < kThreads / 32; ++w) m = fmaxf(m, warp_max[w]);
  const float scale = detail::div_approx_ftz(127.0f, m);  // +Inf for a zero row: its codes are 0
  for (int64_t g = threadIdx.x; g < groups; g += kThreads) {
    float v[8];
    load8_f16(xr, g, v);
    uint32_t word[2] = {0, 0};
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      const float q = detail::mul_ftz(v[i], scale);
      const bool zero = (split && flags[g * 8 + i]) || isnan(q);
      word[i / 4] |= uint32_t(uint8_t(zero ? int8_t(0) : int8_t(__float2int_rn(q)))) << (8 * (i % 4));
    }
    reinterpret_cast<uint2*>(ca + row * cols)[g] = make_uint2(word[0], word[1]);
  }
  if (threadIdx.x == 0) sca[row] = m;
}

// The outlier columns of the weight, dequantized and rounded to f16: weight_out[j][r] for j < *count.
__global__ void gather_outlier_weights(const int8_t* __restrict__ cb, const float* __restrict__ scb, int64_t rows,
                                       int64_t cols, const int32_t* __restrict__ list, const int32_t* __restrict__ count,
                                       uint16_t* __restrict__ weight_out) {
  const int32_t n = *count;
  const int64_t r = blockIdx.x * int64_t(kThreads) + threadIdx.x;
  if (r >= rows) return;
  for (int32_t j = blockIdx.y; j < n; j += gridDim.y) {  // the columns spread over blockIdx.y
    const float w = bnb::int8_value(cb[r * cols + list[j]], scb[r]);
    weight_out[j * rows + r] = __half_as_ushort(__float2half_rn(w));
  }
}

// A block takes 256 weight rows and kEpilogueTokens tokens; the tokens' outlier activations are staged
// in shared memory, each dequantized outlier weight is read once for all of them.
constexpr int kEpilogueTokens = 8, kOutlierStage = 256;  // 8 sums of a transposed row: two 16-byte loads
__global__ void __launch_bounds__(kThreads) int8_epilogue(const int32_t* __restrict__ acc, bool transposed,
                                                          const float* __restrict__ sca,
                                                          const float* __restrict__ scb, int64_t tokens, int64_t rows,
                                                          const uint16_t* __restrict__ x, int64_t cols,
                                                          const int32_t* __restrict__ list,
                                                          const int32_t* __restrict__ count,
                                                          const uint16_t* __restrict__ weight_out,
                                                          uint16_t* __restrict__ y) {
  __shared__ float staged[kEpilogueTokens][kOutlierStage];
  const int32_t n = count ? *count : 0;
  const int64_t r = blockIdx.x * int64_t(kThreads) + threadIdx.x, t0 = int64_t(blockIdx.y) * kEpilogueTokens;
  const int here = int(min(int64_t(kEpilogueTokens), tokens - t0));
  float dot[kEpilogueTokens] = {};
  for (int32_t j0 = 0; j0 < n; j0 += kOutlierStage) {
    const int m = min(int32_t(kOutlierStage), n - j0);
    __syncthreads();
    for (int i = threadIdx.x; i < kEpilogueTokens * kOutlierStage; i += kThreads) {
      const int tt = i / kOutlierStage, j = i % kOutlierStage;
      staged[tt][j] = tt < here && j < m ? half_to_float(x[(t0 + tt) * cols + list[j0 + j]]) : 0.0f;
    }
    __syncthreads();
    if (r < rows)
      for (int j = 0; j < m; ++j) {
        const float w = half_to_float(weight_out[int64_t(j0 + j) * rows + r]);
#pragma unroll
        for (int tt = 0; tt < kEpilogueTokens; ++tt) dot[tt] = fmaf(staged[tt][j], w, dot[tt]);  // column order
      }
  }
  if (r >= rows) return;
  // The block's int32 sums of row r: one strided load per token, or (transposed) 8 contiguous ones.
  int32_t sums[kEpilogueTokens] = {};
  if (transposed && here == kEpilogueTokens && tokens % 4 == 0) {
    const int4* p = reinterpret_cast<const int4*>(acc + r * tokens + t0);
    const int4 a = p[0], b = p[1];
    sums[0] = a.x, sums[1] = a.y, sums[2] = a.z, sums[3] = a.w, sums[4] = b.x, sums[5] = b.y, sums[6] = b.z, sums[7] = b.w;
  } else {
    for (int tt = 0; tt < here; ++tt) sums[tt] = acc[transposed ? r * tokens + t0 + tt : (t0 + tt) * rows + r];
  }
#pragma unroll
  for (int tt = 0; tt < kEpilogueTokens; ++tt) {
    if (tt >= here) break;
    const int64_t i = (t0 + tt) * rows + r;
    const int32_t sum = sums[tt];
    const float scaled = detail::mul_rn(detail::mul_rn(float(sum), sca[t0 + tt]), scb[r]);
    const uint16_t int8_part = __half_as_ushort(__float2half_rn(detail::mul_rn(scaled, bnb::kInt8MatmulDequantScale)));
    y[i] = n == 0 ? int8_part : __half_as_ushort(__float2half_rn(detail::add_rn(half_to_float(int8_part), dot[tt])));
  }
}

// acc = ca [tokens, cols] · cbᵀ in int32, cb [rows, cols], on the int8 tensor cores ("TN" in cuBLAS's
// column-major terms). Either orientation: acc [tokens, rows] = cbᵀ-as-stored · ca-as-stored, or
// (transposed) acc [rows, tokens] = caᵀ-as-stored · cb-as-stored; cuBLASLt tiles them differently.
struct Int8Gemm {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  const int8_t *a_data = nullptr, *b_data = nullptr;
  Int8Gemm(const int8_t* cb, int64_t rows, int64_t cols, const int8_t* ca, int64_t tokens, bool transposed) {
    const int64_t m = transposed ? tokens : rows, n = transposed ? rows : tokens;
    a_data = transposed ? ca : cb, b_data = transposed ? cb : ca;
    check_blas(cublasLtMatmulDescCreate(&op, CUBLAS_COMPUTE_32I, CUDA_R_32I), "cublasLtMatmulDescCreate");
    const cublasOperation_t transpose = CUBLAS_OP_T;
    check_blas(cublasLtMatmulDescSetAttribute(op, CUBLASLT_MATMUL_DESC_TRANSA, &transpose, sizeof transpose), "TRANSA");
    check_blas(cublasLtMatrixLayoutCreate(&a, CUDA_R_8I, uint64_t(cols), uint64_t(m), cols), "layout A");
    check_blas(cublasLtMatrixLayoutCreate(&b, CUDA_R_8I, uint64_t(cols), uint64_t(n), cols), "layout B");
    check_blas(cublasLtMatrixLayoutCreate(&c, CUDA_R_32I, uint64_t(m), uint64_t(n), m), "layout C");
  }
  ~Int8Gemm() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
  Int8Gemm(const Int8Gemm&) = delete;
  Int8Gemm& operator=(const Int8Gemm&) = delete;
  cublasStatus_t run(cublasLtHandle_t lt, const cublasLtMatmulAlgo_t& algo, int32_t* acc, void* workspace,
                     cudaStream_t stream) const {
    const int32_t one = 1, zero = 0;
    return cublasLtMatmul(lt, op, &one, a_data, a, b_data, b, &zero, acc, c, acc, c, &algo, workspace,
                          kLtWorkspaceBytes, stream);
  }
};

// Returns whether acc came out transposed. The first call per shape times cuBLASLt's top candidates of
// both orientations (its first guess is not always its fastest: at 512x4096x4096 on the H100 it picked
// a split-k kernel at half the int8 rate) and keeps the fastest; inside a graph capture, where nothing
// can be timed, it takes the first candidate.
bool int8_gemm(MatmulContext::Impl& ctx, const int8_t* cb, int64_t rows, int64_t cols, const int8_t* ca, int64_t tokens,
               int32_t* acc, cudaStream_t stream) {
  void* workspace = ctx.scratch(MatmulContext::Impl::kLtWorkspace, kLtWorkspaceBytes);
  const auto key = std::make_tuple(rows, cols, tokens);
  auto found = ctx.int8_algos.find(key);
  if (found == ctx.int8_algos.end()) {
    cublasLtMatmulPreference_t preference = nullptr;
    check_blas(cublasLtMatmulPreferenceCreate(&preference), "preference");
    const uint64_t limit = kLtWorkspaceBytes;
    cublasLtMatmulPreferenceSetAttribute(preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &limit, sizeof limit);
    std::vector<std::pair<bool, cublasLtMatmulHeuristicResult_t>> candidates;
    for (bool transposed : {false, true}) {
      const Int8Gemm gemm(cb, rows, cols, ca, tokens, transposed);
      cublasLtMatmulHeuristicResult_t results[8] = {};
      int count = 0;
      if (cublasLtMatmulAlgoGetHeuristic(ctx.blas_lt, gemm.op, gemm.a, gemm.b, gemm.c, gemm.c, preference, 8, results,
                                         &count) == CUBLAS_STATUS_SUCCESS)
        for (int i = 0; i < count; ++i) candidates.push_back({transposed, results[i]});
    }
    cublasLtMatmulPreferenceDestroy(preference);
    if (ctx.int8_layout != MatmulContext::Int8Layout::fastest) {  // keep one way when it has an algorithm
      const bool want = ctx.int8_layout == MatmulContext::Int8Layout::rows_by_tokens;
      if (std::any_of(candidates.begin(), candidates.end(), [&](const auto& c) { return c.first == want; }))
        std::erase_if(candidates, [&](const auto& c) { return c.first != want; });
    }
    if (candidates.empty()) throw Error("cuBLASLt has no int8 algorithm for this shape");
    cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream, &capturing));
    size_t best = 0;
    if (capturing == cudaStreamCaptureStatusNone && candidates.size() > 1) {
      cudaEvent_t start, stop;
      check(cudaEventCreate(&start));
      check(cudaEventCreate(&stop));
      float best_ms = -1;
      for (size_t i = 0; i < candidates.size(); ++i) {
        const Int8Gemm gemm(cb, rows, cols, ca, tokens, candidates[i].first);
        if (gemm.run(ctx.blas_lt, candidates[i].second.algo, acc, workspace, stream) != CUBLAS_STATUS_SUCCESS) continue;
        check(cudaEventRecord(start, stream));
        for (int rep = 0; rep < 3; ++rep) gemm.run(ctx.blas_lt, candidates[i].second.algo, acc, workspace, stream);
        check(cudaEventRecord(stop, stream));
        check(cudaEventSynchronize(stop));
        float ms = 0;
        check(cudaEventElapsedTime(&ms, start, stop));
        if (best_ms < 0 || ms < best_ms) best = i, best_ms = ms;
      }
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
    }
    found = ctx.int8_algos.emplace(key, candidates[best]).first;
  }
  const Int8Gemm gemm(cb, rows, cols, ca, tokens, found->second.first);
  check_blas(gemm.run(ctx.blas_lt, found->second.second.algo, acc, workspace, stream), "cublasLtMatmul (int8)");
  return found->second.first;
}

}  // namespace

void llm_int8_matmul(MatmulContext& context, const Int8Weight& w, const void* x_in, int64_t tokens, float threshold,
                     void* y_out, cudaStream_t stream) {
  auto fail = [&](const std::string& why) {
    throw Error("GPU LLM.int8 matmul: " + why + " (weight " + std::to_string(w.rows) + "x" + std::to_string(w.cols) +
                ", " + std::to_string(tokens) + " tokens)");
  };
  if (w.rows <= 0 || w.cols <= 0 || tokens < 0) fail("empty or negative shape");
  if (w.cols % 16 != 0 || w.rows % 4 != 0) fail("cols must be a multiple of 16 and rows of 4");
  if (!(threshold >= 0.0f)) fail("threshold must be >= 0");
  if (!detail::aligned16(x_in) || !detail::aligned16(w.cb)) fail("activations and codes must be 16-byte aligned");
  if (tokens == 0) return;
  auto& ctx = context.impl();
  using Impl = MatmulContext::Impl;
  const auto* x = static_cast<const uint16_t*>(x_in);
  auto* y = static_cast<uint16_t*>(y_out);
  const int64_t cols = w.cols, rows = w.rows;

  // Scratch: CA and SCA; the int32 sums; the outlier flags, list, count and weight columns.
  auto* ca = static_cast<int8_t*>(ctx.scratch(Impl::kInt8Activations, size_t(tokens * cols) + size_t(tokens) * 4 + 16));
  auto* sca = reinterpret_cast<float*>(ca + (tokens * cols + 15) / 16 * 16);
  auto* acc = static_cast<int32_t*>(ctx.scratch(Impl::kInt8Sums, size_t(tokens * rows) * 4));
  uint8_t* flags = nullptr;
  int32_t *list = nullptr, *count = nullptr;
  uint16_t* weight_out = nullptr;
  if (threshold > 0.0f) {
    const size_t list_at = (size_t(cols) + 15) / 16 * 16, count_at = list_at + size_t(cols) * 4;
    const size_t weights_at = count_at + 16;
    auto* base = static_cast<uint8_t*>(ctx.scratch(Impl::kOutliers, weights_at + size_t(rows * cols) * 2));
    flags = base;
    list = reinterpret_cast<int32_t*>(base + list_at);
    count = reinterpret_cast<int32_t*>(base + count_at);
    weight_out = reinterpret_cast<uint16_t*>(base + weights_at);
    check(cudaMemsetAsync(flags, 0, size_t(cols), stream));
    const int64_t groups = tokens * cols / 8;
    flag_outlier_columns<<<detail::grid_for<flag_outlier_columns>(groups, kThreads), kThreads, 0, stream>>>(
        x, groups, cols, threshold, flags);
    list_outlier_columns<<<1, 1024, 0, stream>>>(flags, cols, list, count);
  }
  quantize_activation_rows<<<unsigned(tokens), kThreads, 0, stream>>>(x, cols, threshold, flags, ca, sca);
  check(cudaGetLastError());
  const bool transposed = int8_gemm(ctx, w.cb, rows, cols, ca, tokens, acc, stream);
  if (threshold > 0.0f)
    gather_outlier_weights<<<dim3(unsigned((rows + kThreads - 1) / kThreads), 16), kThreads, 0, stream>>>(
        w.cb, w.scb, rows, cols, list, count, weight_out);
  const dim3 grid(unsigned((rows + kThreads - 1) / kThreads), unsigned((tokens + kEpilogueTokens - 1) / kEpilogueTokens));
  int8_epilogue<<<grid, kThreads, 0, stream>>>(
      acc, transposed, sca, w.scb, tokens, rows, x, cols, list, count, weight_out, y);
  check(cudaGetLastError());
}

}  // namespace lowbit::cuda
