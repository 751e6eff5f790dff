// The one-token product (decoding) of any ggml block type with its weight staged through shared memory
// by bulk copies: y[rows] (=, or +=) x[cols] · Wᵀ. A block takes consecutive stages of kStageRows
// whole rows (one contiguous run of bytes, up to kStageTargetBytes); one thread starts the copies,
// kStagedStages of them in flight, and every thread decodes the landed stage while the next ones arrive. The per-thread loads of
// ggml_matvec.cuh keep only what their registers hold in flight, a few KB per SM: those products read
// 1-2.3 TB/s of a ~4 TB/s copy (docs/benchmarks.md). Here the bytes in flight are the stages'.
//
// A thread takes the same kUnitsPerThread units of every row, so it loads their activations (and
// their sums) into registers once, before the first stage lands. Where a decoder gives a run's codes and
// an affine map (value = factor·code − minimum), the run's sum is factor·Σ code·x − minimum·Σ x: three
// instructions per value (the code's byte permute and subtraction, one FMA) instead of a rounded value
// each. A stage's row sums are reduced across each warp by halving exchanges (a lane ends with one row's
// sum), then across the warps in a fixed order, so results do not depend on timing.
#pragma once

#include "bulk_copy.cuh"
#include "ggml_dequantize.cuh"

namespace lowbit::cuda::detail {

// What the staged kernel multiplies: a block of kBytes holds kValues values in kUnits units, each of
// kRuns runs of 8 values; run k of unit u starts at value first_value(u, k) of the block; dot(raw, k, u,
// x, Σx) is the run's sum of value·x.
template <class D>
concept AffineGroups = requires(const typename D::Raw& raw, float (&q)[8]) {
  D::codes(raw, 0, q);
  D::factor(raw, 0);
};
template <class D>
concept GroupsWithMinimum = requires(const typename D::Raw& raw) { D::minimum(raw, 0); };
template <class R>
concept AffineRuns = requires(const typename R::Raw& raw, float (&q)[8]) {
  R::codes(raw, 0, 0, q);
  R::factor(raw, 0, 0);
};
template <class R>
concept RunsWithMinimum = requires(const typename R::Raw& raw) { R::minimum(raw, 0, 0); };

__device__ __forceinline__ float dot8(const float (&w)[8], const float (&x)[8]) {
  float sum = w[0] * x[0];
#pragma unroll
  for (int i = 1; i < 8; ++i) sum = fmaf(w[i], x[i], sum);
  return sum;
}

// An 8-value decoder D: a unit is one 8-value group.
template <class D>
struct GroupUnits {
  static constexpr int kBytes = D::kBytes, kValues = D::kValues, kUnits = D::kValues / 8, kRuns = 1;
  static constexpr bool kUsesSums = GroupsWithMinimum<D>;
  static constexpr int kMaxUnitsPerThread = 8;  // 64 activations in registers
  using Raw = typename D::Raw;
  static __device__ __forceinline__ Raw load(const uint8_t* block, int unit) { return D::load(block, unit); }
  static __device__ __forceinline__ int first_value(int unit, int) { return 8 * unit; }
  static __device__ __forceinline__ float dot(const Raw& raw, int, int unit, const float (&x)[8], float x_sum) {
    float w[8];
    if constexpr (AffineGroups<D>) {
      D::codes(raw, unit, w);
      if constexpr (GroupsWithMinimum<D>) return fmaf(D::factor(raw, unit), dot8(w, x), -D::minimum(raw, unit) * x_sum);
      else return D::factor(raw, unit) * dot8(w, x);
    } else {
      D::decode(raw, unit, w);
      return dot8(w, x);
    }
  }
};

// A decoder by runs R (ggml_dequantize.cuh: eight lane tasks per 256-value block, four runs each).
template <class R>
struct RunUnits {
  static constexpr int kBytes = R::kBytes, kValues = 256, kUnits = 8, kRuns = 4;
  static constexpr bool kUsesSums = RunsWithMinimum<R>;
  static constexpr int kMaxUnitsPerThread = 2;  // 64 activations in registers
  using Raw = typename R::Raw;
  static __device__ __forceinline__ Raw load(const uint8_t* block, int unit) { return R::load(block, unit); }
  static __device__ __forceinline__ int first_value(int unit, int k) { return R::first_value(unit, k); }
  static __device__ __forceinline__ float dot(const Raw& raw, int k, int unit, const float (&x)[8], float x_sum) {
    float w[8];
    if constexpr (AffineRuns<R>) {
      R::codes(raw, k, unit, w);
      if constexpr (RunsWithMinimum<R>) return fmaf(R::factor(raw, k, unit), dot8(w, x), -R::minimum(raw, k, unit) * x_sum);
      else return R::factor(raw, k, unit) * dot8(w, x);
    } else {
      R::decode(raw, k, unit, w);
      return dot8(w, x);
    }
  }
};

// Whether a decoder's one-token product takes the staged kernel: all but those measured slower there than
// in the per-thread kernels they had (q3_K's runs, iq4_nl: docs/benchmarks.md) say so by kStagedProduct.
template <class T>
constexpr bool takes_staged_product() {
  if constexpr (requires { T::kStagedProduct; }) return T::kStagedProduct;
  else return true;
}

constexpr int kStagedMaxThreads = 256, kStagedStages = 3;
constexpr int64_t kStageTargetBytes = 32 * 1024, kStagedMaxRowBytes = 24 * 1024;
constexpr int kStagedPadding = 16;  // decoders' aligned loads may read a few bytes past a stage's last row

// The warp's sums of kRows values: each halving exchange sends half of a lane's values to the partner
// that keeps them, so lane l ends holding the sum of v[l / (32 / kRows)] (kRows ≤ 32, a power of two).
template <int kRows>
__device__ __forceinline__ float warp_row_sums(float (&v)[kRows], int lane) {
  int offset = 16;
#pragma unroll
  for (int half = kRows / 2; half >= 1; half /= 2, offset /= 2) {
    const bool upper = (lane & offset) != 0;
#pragma unroll
    for (int j = 0; j < half; ++j) {
      const float keep = upper ? v[j + half] : v[j], send = upper ? v[j] : v[j + half];
      v[j] = keep + __shfl_xor_sync(0xffffffffu, send, offset);
    }
  }
  float sum = v[0];
  for (; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  return sum;
}

template <class U, int kUnitsPerThread, int kStageRows>
__global__ void __launch_bounds__(kStagedMaxThreads) staged_matvec_kernel(const uint8_t* __restrict__ blocks, int64_t rows,
                                                                          int64_t cols, int64_t stages,
                                                                          const float* __restrict__ x, float* __restrict__ y,
                                                                          bool accumulate) {
  extern __shared__ __align__(128) uint8_t staged[];
  __shared__ uint64_t landed[kStagedStages];
  __shared__ float partial[2][kStagedMaxThreads / 32][kStageRows];
  const int lane = int(threadIdx.x % 32), warp = int(threadIdx.x / 32), warps = int(blockDim.x / 32);
  const int blocks_per_row = int(cols / U::kValues), units = blocks_per_row * U::kUnits;
  const uint32_t row_bytes = uint32_t(blocks_per_row) * U::kBytes, slot_bytes = kStageRows * row_bytes;
  // This block's stages: a contiguous share of them.
  const int64_t first = stages * blockIdx.x / gridDim.x, count = stages * (blockIdx.x + 1) / gridDim.x - first;
  auto start = [&](int64_t i) {  // stage i of this block into its slot
    const int64_t row0 = (first + i) * kStageRows;
    const int64_t n = rows - row0 < kStageRows ? rows - row0 : kStageRows;
    barrier_expect_bytes(&landed[i % kStagedStages], uint32_t(n) * row_bytes);
    bulk_copy_to_shared(staged + (i % kStagedStages) * slot_bytes, blocks + size_t(row0) * row_bytes, uint32_t(n) * row_bytes,
                        &landed[i % kStagedStages]);
  };
  if (threadIdx.x == 0) {
    for (int s = 0; s < kStagedStages; ++s) barrier_init(&landed[s]);
    for (int64_t i = 0; i < count && i < kStagedStages; ++i) start(i);
  }
  // This thread's units, their byte offsets within a row and their activations, while the copies fly.
  bool has[kUnitsPerThread];
  int unit_of[kUnitsPerThread];
  uint32_t offset_of[kUnitsPerThread];
  float xs[kUnitsPerThread][U::kRuns][8], x_sums[kUnitsPerThread][U::kRuns];
#pragma unroll
  for (int j = 0; j < kUnitsPerThread; ++j) {
    const int u = int(threadIdx.x) + j * int(blockDim.x);
    has[j] = u < units;
    const int block = has[j] ? u / U::kUnits : 0;
    unit_of[j] = u % U::kUnits, offset_of[j] = uint32_t(block) * U::kBytes;
#pragma unroll
    for (int k = 0; k < U::kRuns; ++k) {
      const float4* at = reinterpret_cast<const float4*>(x + block * U::kValues + U::first_value(unit_of[j], k));
      const float4 x0 = at[0], x1 = at[1];
      const float v[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
      x_sums[j][k] = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) xs[j][k][i] = v[i], x_sums[j][k] += U::kUsesSums ? v[i] : 0.0f;
    }
  }
  __syncthreads();
  for (int64_t i = 0; i < count; ++i) {
    barrier_wait(&landed[i % kStagedStages], uint32_t(i / kStagedStages) & 1u);
    const uint8_t* slot = staged + (i % kStagedStages) * slot_bytes;
    // Rows past the matrix's end (a last stage's) decode stale bytes and are never stored.
    float sum[kStageRows] = {};
#pragma unroll
    for (int j = 0; j < kUnitsPerThread; ++j) {
      if (!has[j]) continue;
      typename U::Raw raw[kStageRows];
#pragma unroll
      for (int r = 0; r < kStageRows; ++r) raw[r] = U::load(slot + r * row_bytes + offset_of[j], unit_of[j]);
#pragma unroll
      for (int k = 0; k < U::kRuns; ++k)
#pragma unroll
        for (int r = 0; r < kStageRows; ++r) sum[r] += U::dot(raw[r], k, unit_of[j], xs[j][k], x_sums[j][k]);
    }
    const float warp_sum = warp_row_sums<kStageRows>(sum, lane);
    if (lane % (32 / kStageRows) == 0) partial[i & 1][warp][lane / (32 / kStageRows)] = warp_sum;
    __syncthreads();  // the slot is read and the partial sums written
    if (threadIdx.x == 0 && i + kStagedStages < count) start(i + kStagedStages);
    const int64_t row = (first + i) * kStageRows + threadIdx.x;
    if (threadIdx.x < kStageRows && row < rows) {
      float s = 0.0f;
      for (int w = 0; w < warps; ++w) s += partial[i & 1][w][threadIdx.x];
      y[row] = accumulate ? y[row] + s : s;
    }
  }
}

// Launches U's staged product for one token when the rows allow it (whole 16-byte runs of at most
// kStagedMaxRowBytes, at most U::kMaxUnitsPerThread units a thread, blocks and x 16-byte aligned); false
// otherwise, the caller then takes another kernel.
template <class U>
bool launch_staged_matvec(const uint8_t* blocks, int64_t rows, int64_t cols, const float* x, float* y, bool accumulate,
                          cudaStream_t stream) {
  const int64_t row_bytes = cols / U::kValues * U::kBytes, units = cols / U::kValues * U::kUnits;
  if (cols % U::kValues != 0 || row_bytes % 16 != 0 || row_bytes > kStagedMaxRowBytes ||
      units > U::kMaxUnitsPerThread * kStagedMaxThreads || !aligned16(blocks) || !aligned16(x))
    return false;
  auto launch = [&]<int kUnitsPerThread, int kStageRows>() {
    const auto kernel = staged_matvec_kernel<U, kUnitsPerThread, kStageRows>;
    const int threads = int((units + kUnitsPerThread - 1) / kUnitsPerThread + 31) / 32 * 32;
    const int shared = int(kStagedStages * kStageRows * row_bytes) + kStagedPadding;
    // The shared-memory opt-in and the blocks one wave holds, once per device, size and block.
    static thread_local int cached_device = -1, cached_shared = -1, cached_threads = -1;
    static thread_local unsigned wave = 0;
    int device = 0;
    check(cudaGetDevice(&device));
    if (device != cached_device || shared != cached_shared || threads != cached_threads) {
      int sms = 0, per_sm = 0;
      check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, shared));
      check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
      check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, shared));
      wave = unsigned(sms * (per_sm > 0 ? per_sm : 1));
      cached_device = device, cached_shared = shared, cached_threads = threads;
    }
    const int64_t stages = (rows + kStageRows - 1) / kStageRows;
    kernel<<<unsigned(stages < wave ? stages : wave), unsigned(threads), shared, stream>>>(blocks, rows, cols, stages, x, y, accumulate);
  };
  // As many rows per stage (up to 8) as fit the stage's target bytes; as few units a thread as keep the
  // block within kStagedMaxThreads.
  auto with_rows = [&]<int kUnitsPerThread>() {
    if (8 * row_bytes <= kStageTargetBytes) launch.template operator()<kUnitsPerThread, 8>();
    else if (4 * row_bytes <= kStageTargetBytes) launch.template operator()<kUnitsPerThread, 4>();
    else if (2 * row_bytes <= kStageTargetBytes) launch.template operator()<kUnitsPerThread, 2>();
    else launch.template operator()<kUnitsPerThread, 1>();
  };
  if (units <= kStagedMaxThreads) with_rows.template operator()<1>();
  else if (units <= 2 * kStagedMaxThreads) with_rows.template operator()<2>();
  else if constexpr (U::kMaxUnitsPerThread >= 8) {
    if (units <= 4 * kStagedMaxThreads) with_rows.template operator()<4>();
    else with_rows.template operator()<8>();
  }
  check(cudaGetLastError());
  return true;
}

}  // namespace lowbit::cuda::detail
