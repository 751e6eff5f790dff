// bitsandbytes 4-bit (nf4, fp4) on the GPU: dequantize (plain or double-quantized scales, one
// launch either way), quantize with bitsandbytes' approximate reciprocal, and the double quant
// second level. The format and its per-value rules (value_4bit, nested_block_scale,
// quantize_dynamic_8bit, shared with the CPU codec): include/lowbit/formats/bnb_4bit.h.
#include <array>
#include <string>
#include <type_traits>

#include <cooperative_groups.h>

#include "codec_common.cuh"
#include "bnb_quant_bins.h"
#include "lowbit/formats/bnb_tables.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace lowbit::cuda {
namespace {

using detail::mul_ftz;

// The tables live in constant memory; each block copies what it indexes per thread into shared
// memory (constant memory serialises lanes that read different addresses).
__constant__ std::array<float, 16> kNf4Lut = bnb::tables::kNf4Code;
__constant__ std::array<float, 16> kFp4Lut = bnb::tables::kFp4KernelLut;  // code 8 is -0.0 here
__constant__ std::array<float, 256> kDynamicMap = bnb::tables::kDynamicMapSigned;

constexpr int kThreads = 256;
constexpr int kGroupsPerThread = 4;  // 8-value groups each thread loads before it stores any

// ---- dequantize ----

// Block b's scale as dequantization multiplies by it.
struct PlainScale {
  const float* absmax;
  __device__ float operator()(int64_t block, const float*) const { return absmax[block]; }
};
struct NestedScale {
  const uint8_t* codes;
  const float* nested_absmax;
  const float* offset;  // on the device: each thread's read is a cached broadcast, no host sync
  __device__ float operator()(int64_t block, const float* map) const {
    return bnb::nested_block_scale(map[codes[block]], nested_absmax[block / bnb::kNestedBlocksize], __ldg(offset));
  }
};

// Thread layout: group g = values [8g, 8g + 8) = packed bytes [4g, 4g + 4) = one 32-bit load and
// one 16-byte store (for f32: 4 values, a 16-bit load); consecutive lanes take consecutive groups,
// so each warp's loads and stores are contiguous. A group never straddles a 4-bit block (blocksizes
// are multiples of 32).
template <DType T, class Scale>
__global__ void __launch_bounds__(kThreads) dequantize_4bit_kernel(const uint8_t* __restrict__ packed, Scale scale,
                                                                   bool fp4, int64_t n, int log2_blocksize,
                                                                   void* __restrict__ out) {
  __shared__ float lut[16];
  __shared__ float map[256];
  if (threadIdx.x < 16) lut[threadIdx.x] = fp4 ? kFp4Lut[threadIdx.x] : kNf4Lut[threadIdx.x];
  if constexpr (!std::is_same_v<Scale, PlainScale>) map[threadIdx.x] = kDynamicMap[threadIdx.x];
  __syncthreads();

  // A group is what one 16-byte store writes: 8 values for bf16/f16 (4 packed bytes), 4 for f32
  // (2 packed bytes), so that every store instruction of a warp covers one contiguous 512 bytes.
  constexpr int kValues = T == DType::f32 ? 4 : 8;
  using Word = std::conditional_t<kValues == 8, uint32_t, uint16_t>;
  const int64_t groups = n / kValues;
  const int64_t stride = int64_t(gridDim.x) * kThreads;
  const Word* words = reinterpret_cast<const Word*>(packed);
  for (int64_t base = blockIdx.x * int64_t(kThreads) + threadIdx.x; base < groups; base += kGroupsPerThread * stride) {
    uint32_t word[kGroupsPerThread];
    float s[kGroupsPerThread];
#pragma unroll
    for (int u = 0; u < kGroupsPerThread; ++u) {
      const int64_t g = base + u * stride;
      if (g < groups) {
        word[u] = words[g];
        s[u] = scale((g * kValues) >> log2_blocksize, map);
      }
    }
#pragma unroll
    for (int u = 0; u < kGroupsPerThread; ++u) {
      const int64_t g = base + u * stride;
      if (g >= groups) break;
      float y[kValues];
#pragma unroll
      for (int k = 0; k < kValues / 2; ++k) {  // byte k of the little-endian word: values 2k (high nibble), 2k + 1
        y[2 * k] = bnb::value_4bit(lut[(word[u] >> (8 * k + 4)) & 15], s[u]);
        y[2 * k + 1] = bnb::value_4bit(lut[(word[u] >> (8 * k)) & 15], s[u]);
      }
      if constexpr (kValues == 4)
        static_cast<float4*>(out)[g] = make_float4(y[0], y[1], y[2], y[3]);
      else
        detail::store8<T>(out, g, y);
    }
  }
  // The last n % kValues values (an odd n's last byte holds one value and the padding nibble).
  if (blockIdx.x == 0 && threadIdx.x < n % kValues) {
    const int64_t i = groups * kValues + threadIdx.x;
    const uint8_t byte = packed[i / 2];
    const float v = bnb::value_4bit(lut[i % 2 ? byte & 15 : byte >> 4], scale(i >> log2_blocksize, map));
    detail::store1<T>(out, i, v);
  }
}

// Any alignment: one element per thread.
template <DType T, class Scale>
__global__ void __launch_bounds__(kThreads) dequantize_4bit_scalar_kernel(const uint8_t* packed, Scale scale, bool fp4,
                                                                          int64_t n, int log2_blocksize, void* out) {
  __shared__ float lut[16];
  __shared__ float map[256];
  if (threadIdx.x < 16) lut[threadIdx.x] = fp4 ? kFp4Lut[threadIdx.x] : kNf4Lut[threadIdx.x];
  map[threadIdx.x] = kDynamicMap[threadIdx.x];
  __syncthreads();
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < n; i += int64_t(gridDim.x) * kThreads) {
    const uint8_t byte = packed[i / 2];
    detail::store1<T>(out, i, bnb::value_4bit(lut[i % 2 ? byte & 15 : byte >> 4], scale(i >> log2_blocksize, map)));
  }
}

int log2_of_blocksize(int64_t blocksize) {
  bnb::check_blocksize_4bit(blocksize);
  int log2 = 0;
  while ((int64_t(1) << log2) < blocksize) ++log2;
  return log2;
}

template <class Scale>
void launch_dequantize(bnb::QuantType type, const uint8_t* packed, Scale scale, int64_t n, int64_t blocksize,
                       DType out_dtype, void* out, cudaStream_t stream) {
  const int log2_blocksize = log2_of_blocksize(blocksize);
  if (n <= 0) return;
  const bool fp4 = type == bnb::QuantType::fp4;
  const bool vector = detail::aligned16(out) && (reinterpret_cast<uintptr_t>(packed) & 3) == 0;
  detail::dispatch_float_dtype(out_dtype, [&]<DType T>() {
    if (vector)
      dequantize_4bit_kernel<T, Scale><<<detail::grid_for<dequantize_4bit_kernel<T, Scale>>(n / 8 / kGroupsPerThread + 1, kThreads), kThreads, 0, stream>>>(
          packed, scale, fp4, n, log2_blocksize, out);
    else
      dequantize_4bit_scalar_kernel<T, Scale><<<detail::grid_for<dequantize_4bit_scalar_kernel<T, Scale>>(n, kThreads), kThreads, 0, stream>>>(
          packed, scale, fp4, n, log2_blocksize, out);
  });
  check(cudaGetLastError());
}

// ---- quantize ----
//
// A value's 4-bit code from one entry of a 128-entry table instead of a binary search over the
// thresholds (four dependent loads and compares per value): bnb_quant_bins.h.

using detail::code_4bit_by_bins;
using detail::kQuantEntries;
using detail::QuantBin;

__constant__ std::array<QuantBin, kQuantEntries> kNf4Bins = detail::kNf4Table.bins;
__constant__ std::array<QuantBin, kQuantEntries> kFp4Bins = detail::kFp4Table.bins;

template <bool Fp4>
__device__ void load_bins(QuantBin* bins) {
  if (threadIdx.x < kQuantEntries) bins[threadIdx.x] = Fp4 ? kFp4Bins[threadIdx.x] : kNf4Bins[threadIdx.x];
  __syncthreads();
}

// A group's 8 inputs as loaded: 16 bytes (f16, bf16) or 32 (f32). They become floats only when the
// group is coded, so that the load of a thread's next group stays in flight while it codes this one
// (converting at the load stalls there for the whole memory latency).
template <DType T>
struct RawGroup {
  static constexpr int kWords = T == DType::f32 ? 8 : 4;
  uint32_t w[kWords];
};

template <DType T>
__device__ __forceinline__ RawGroup<T> load_group(const void* input, int64_t g, int64_t n, bool vector) {
  RawGroup<T> raw;
  if (vector && g * 8 + 8 <= n) {
#pragma unroll
    for (int q = 0; q < RawGroup<T>::kWords / 4; ++q) {
      const uint4 v = static_cast<const uint4*>(input)[g * (RawGroup<T>::kWords / 4) + q];
      raw.w[4 * q] = v.x, raw.w[4 * q + 1] = v.y, raw.w[4 * q + 2] = v.z, raw.w[4 * q + 3] = v.w;
    }
  } else {  // the tail, or an unaligned input: element by element, zeros beyond n
#pragma unroll
    for (int k = 0; k < RawGroup<T>::kWords; ++k) raw.w[k] = 0;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      if (g * 8 + k >= n) break;
      if constexpr (T == DType::f32) raw.w[k] = static_cast<const uint32_t*>(input)[g * 8 + k];
      else raw.w[k / 2] |= uint32_t(static_cast<const uint16_t*>(input)[g * 8 + k]) << (16 * (k % 2));
    }
  }
  return raw;
}

template <DType T>
__device__ __forceinline__ void group_floats(const RawGroup<T>& raw, float (&x)[8]) {
#pragma unroll
  for (int k = 0; k < 8; ++k) {
    const uint32_t bits = T == DType::f32 ? raw.w[k] : raw.w[k / 2] >> (16 * (k % 2)) & 0xffffu;
    if constexpr (T == DType::f32) x[k] = __uint_as_float(bits);
    else if constexpr (T == DType::bf16) x[k] = __uint_as_float(bits << 16);
    else x[k] = __half2float(__ushort_as_half(uint16_t(bits)));
  }
}

// One group of 8 values coded: its 4-bit block's absmax (max over the block's threads: lanes first,
// then, for blocks wider than a warp, across warps) and its 4 packed bytes. Every thread of the
// thread block calls it together.
template <bool Fp4>
__device__ __forceinline__ uint32_t code_group(const float (&x)[8], int threads_per_block, const QuantBin* bins,
                                               float* warp_max, float& block_max) {
  // Subnormal inputs count as zeros: mul_ftz flushes them below, and the maximum of the flushed
  // magnitudes is the flushed maximum (flushing is monotone), so it is flushed once.
  float m = 0.0f;
#pragma unroll
  for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(x[k]));
  for (int offset = min(threads_per_block, 32) / 2; offset > 0; offset /= 2)
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  if (threads_per_block > 32) {
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
    __syncthreads();
    const int first_warp = (threadIdx.x & ~(threads_per_block - 1)) / 32;
    for (int w = 0; w < threads_per_block / 32; ++w) m = fmaxf(m, warp_max[first_warp + w]);
    __syncthreads();
  }
  block_max = m = detail::flush_subnormal(m);
  const float s = detail::rcp_approx_ftz(m);
  uint32_t word = 0;
#pragma unroll
  for (int k = 0; k < 8; k += 2) {  // values beyond n are 0.0: the padding nibble of an odd n
    const uint32_t high = code_4bit_by_bins<Fp4>(mul_ftz(x[k], s), bins);
    const uint32_t low = code_4bit_by_bins<Fp4>(mul_ftz(x[k + 1], s), bins);
    word |= (high << 4 | low) << (4 * k);
  }
  return word;
}

// A chunk is Threads groups of 8 consecutive values, a thread's group each: one 4-bit block per
// blocksize / 8 consecutive threads, so a chunk covers whole 4-bit blocks (Threads * 8 values, or
// one 4096-value block with 512 threads). Whole chunks of an aligned input run unchecked, each
// thread's next load in flight while it codes the current group; the rest (a last partial chunk, or
// an unaligned input) element by element. Block sizes are powers of two: shifts and masks.
template <DType T, int Threads, bool Fp4>
__device__ __forceinline__ void quantize_4bit_blocks(const void* __restrict__ input, int64_t n, int blocksize,
                                                     bool vector, uint8_t* __restrict__ packed,
                                                     float* __restrict__ absmax, const QuantBin* bins,
                                                     float* warp_max) {
  const int block_shift = __ffs(blocksize) - 1, threads_per_block = blocksize / 8;
  const bool block_first = (threadIdx.x & (threads_per_block - 1)) == 0;
  const int64_t chunks = (n + Threads * 8 - 1) / (Threads * 8), whole = vector ? n / (Threads * 8) : 0;
  RawGroup<T> next{};
  if (blockIdx.x < whole) next = load_group<T>(input, blockIdx.x * int64_t(Threads) + threadIdx.x, n, true);
  for (int64_t chunk = blockIdx.x; chunk < whole; chunk += gridDim.x) {
    const int64_t g = chunk * Threads + threadIdx.x;
    float x[8];
    group_floats<T>(next, x);
    if (chunk + gridDim.x < whole) next = load_group<T>(input, g + int64_t(gridDim.x) * Threads, n, true);
    float m;
    reinterpret_cast<uint32_t*>(packed)[g] = code_group<Fp4>(x, threads_per_block, bins, warp_max, m);
    if (block_first) absmax[(g * 8) >> block_shift] = m;
  }
  for (int64_t chunk = whole + blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t g = chunk * Threads + threadIdx.x, bytes = (n + 1) / 2;
    float x[8];
    group_floats<T>(load_group<T>(input, g, n, vector), x);
    float m;
    const uint32_t word = code_group<Fp4>(x, threads_per_block, bins, warp_max, m);
    for (int k = 0; k < 4; ++k)
      if (g * 4 + k < bytes) packed[g * 4 + k] = uint8_t(word >> (8 * k));
    if (block_first && g * 8 < n) absmax[(g * 8) >> block_shift] = m;
  }
}

// 6 blocks of 256 per SM: with the 32 registers of 8 blocks the loop spilled.
template <DType T, int Threads, bool Fp4>
__global__ void __launch_bounds__(Threads, 1536 / Threads) quantize_4bit_kernel(const void* __restrict__ input, int64_t n,
                                                                int blocksize, bool vector,
                                                                uint8_t* __restrict__ packed,
                                                                float* __restrict__ absmax) {
  __shared__ QuantBin bins[kQuantEntries];
  __shared__ float warp_max[Threads / 32];
  load_bins<Fp4>(bins);
  quantize_4bit_blocks<T, Threads, Fp4>(input, n, blocksize, vector, packed, absmax, bins, warp_max);
}

// ---- double quantization ----
//
// The phases of the single launch below. In the mean, threads [0, 256) do the work; the further
// threads of a 512-thread block only take part in the barriers.

constexpr int kPhaseThreads = 256;  // the mean's threads per block (its fixed shape)

// The mean in a fixed shape, so the same inputs always give the same float whatever the device or
// grid: kMeanParts parts each sum a fixed contiguous range (a Neumaier sum per thread over a fixed
// stride, then a fixed tree), then the parts are added in a fixed tree.
constexpr int kMeanParts = 264;

__device__ double block_tree_sum(double v, double* shared) {
  if (threadIdx.x < kPhaseThreads) shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kPhaseThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  const double total = shared[0];
  __syncthreads();  // `shared` may be reused at once
  return total;
}

// Part `part` of the mean's sum of values[0, count) into parts[part]. Values are read through L2:
// other blocks of the launch wrote them.
__device__ void mean_part(const float* values, int64_t count, int part, double* parts, double* shared) {
  const int64_t per_part = (count + kMeanParts - 1) / kMeanParts;
  const int64_t begin = part * per_part, end = min(count, begin + per_part);
  double sum = 0.0, compensation = 0.0;
  constexpr int kBatch = 8;  // loads in flight per thread: one at a time, the phase waited out 14 latencies
  if (threadIdx.x < kPhaseThreads) {
    for (int64_t first = begin + threadIdx.x; first < end; first += kBatch * kPhaseThreads) {
      float batch[kBatch];
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        const int64_t i = first + k * kPhaseThreads;
        batch[k] = i < end ? __ldcg(values + i) : 0.0f;
      }
#pragma unroll
      for (int k = 0; k < kBatch; ++k) {
        if (first + k * kPhaseThreads >= end) break;
        const double v = batch[k];
        const double t = sum + v;
        compensation += fabs(sum) >= fabs(v) ? (sum - t) + v : (v - t) + sum;
        sum = t;
      }
    }
  }
  const double total = block_tree_sum(sum + compensation, shared);
  if (threadIdx.x == 0) parts[part] = total;
}

__device__ float mean_of_parts(const double* parts, int64_t count, double* shared) {
  double v = 0.0;
  if (threadIdx.x < kPhaseThreads)
    for (int i = threadIdx.x; i < kMeanParts; i += kPhaseThreads) v += __ldcg(parts + i);
  const double total = block_tree_sum(v, shared);
  return count > 0 ? float(total / double(count)) : 0.0f;
}

// The nested blocks, a warp each (lane l holds absmaxes l, l + 32, ... of its block), so no block
// barrier: each nested block's absmaxes less the offset, as 8-bit dynamic codes scaled by their
// largest magnitude.
constexpr int kNestedPerLane = bnb::kNestedBlocksize / 32;
__device__ void load_nested(const float* absmax, int64_t blocks, int64_t j, float (&values)[kNestedPerLane]) {
#pragma unroll
  for (int k = 0; k < kNestedPerLane; ++k) {
    const int64_t i = j * bnb::kNestedBlocksize + threadIdx.x % 32 + 32 * k;
    values[k] = i < blocks ? __ldcg(absmax + i) : 0.0f;
  }
}
__device__ void quantize_nested(float (&values)[kNestedPerLane], int64_t j, int64_t blocks, float offset,
                                uint8_t* codes, float* nested_absmax, const float* map) {
  float c[kNestedPerLane], m = 0.0f;
#pragma unroll
  for (int k = 0; k < kNestedPerLane; ++k) {
    // torch subtracts the offset in float32 (IEEE); the 8-bit kernel then flushes like the 4-bit one.
    const int64_t i = j * bnb::kNestedBlocksize + threadIdx.x % 32 + 32 * k;
    c[k] = i < blocks ? detail::flush_subnormal(__fsub_rn(values[k], offset)) : 0.0f;
    m = fmaxf(m, fabsf(c[k]));
  }
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const float r = detail::rcp_approx_ftz(m);
#pragma unroll
  for (int k = 0; k < kNestedPerLane; ++k) {
    const int64_t i = j * bnb::kNestedBlocksize + threadIdx.x % 32 + 32 * k;
    if (i < blocks) codes[i] = bnb::quantize_dynamic_8bit(mul_ftz(c[k], r), map);
  }
  if (threadIdx.x % 32 == 0) nested_absmax[j] = m;
}

__device__ void load_dynamic_map(float* map) {
  if (threadIdx.x < 256) map[threadIdx.x] = kDynamicMap[threadIdx.x];
  __syncthreads();
}

// Quantization with double quant in one cooperative launch: the blocks quantize, then (after a grid
// barrier) sum the mean's parts, then (after another) each derives the same mean from the parts and
// its warps quantize their nested blocks. Always 512-thread blocks, two per SM (a chunk of 4096
// values covers whole 4-bit blocks of any size): a grid barrier's cost grows with the blocks that
// arrive at it.
template <DType T, int Threads, bool Fp4>
__global__ void __launch_bounds__(Threads, 1024 / Threads) quantize_4bit_nested_kernel(
    const void* __restrict__ input, int64_t n, int blocksize, bool vector, uint8_t* __restrict__ packed,
    float* absmax, uint8_t* __restrict__ codes, float* __restrict__ nested_absmax, float* __restrict__ offset,
    double* parts) {
  __shared__ QuantBin bins[kQuantEntries];
  __shared__ float warp_max[Threads / 32];
  __shared__ double sums[kPhaseThreads];
  __shared__ float map[256];
  const cooperative_groups::grid_group grid = cooperative_groups::this_grid();
  load_bins<Fp4>(bins);
  load_dynamic_map(map);
  quantize_4bit_blocks<T, Threads, Fp4>(input, n, blocksize, vector, packed, absmax, bins, warp_max);
  grid.sync();
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  const int64_t nested_blocks = (blocks + bnb::kNestedBlocksize - 1) / bnb::kNestedBlocksize;
  const int64_t first = int64_t(blockIdx.x) * (Threads / 32) + threadIdx.x / 32;  // this warp's nested block
  const int64_t stride = int64_t(gridDim.x) * (Threads / 32);
  float values[kNestedPerLane];
  load_nested(absmax, blocks, first, values);  // in flight during the mean
  for (int part = blockIdx.x; part < kMeanParts; part += gridDim.x) mean_part(absmax, blocks, part, parts, sums);
  grid.sync();
  const float mean = mean_of_parts(parts, blocks, sums);
  if (blockIdx.x == 0 && threadIdx.x == 0) *offset = mean;
  for (int64_t j = first; j < nested_blocks; j += stride) {
    if (j != first) load_nested(absmax, blocks, j, values);
    quantize_nested(values, j, blocks, mean, codes, nested_absmax, map);
  }
}

// Calls launch.template operator()<T, Threads, Fp4>() for the input dtype, the block size (a block of
// threads covers whole 4-bit blocks: 256 threads up to blocksize 2048, 512 for 4096) and the type.
template <class Launch>
void dispatch_quantize_4bit(bnb::QuantType type, DType in_dtype, int64_t blocksize, Launch&& launch) {
  bnb::check_blocksize_4bit(blocksize);
  detail::require_float_dtype(in_dtype, "GPU bnb 4-bit quantization");
  const bool fp4 = type == bnb::QuantType::fp4;
  detail::dispatch_float_dtype(in_dtype, [&]<DType T>() {
    if (blocksize <= 2048) fp4 ? launch.template operator()<T, 256, true>() : launch.template operator()<T, 256, false>();
    else fp4 ? launch.template operator()<T, 512, true>() : launch.template operator()<T, 512, false>();
  });
}

}  // namespace

void dequantize_4bit(bnb::QuantType type, const uint8_t* packed, const float* absmax, int64_t n, int64_t blocksize,
                     DType out_dtype, void* out, cudaStream_t stream) {
  launch_dequantize(type, packed, PlainScale{absmax}, n, blocksize, out_dtype, out, stream);
}

void dequantize_4bit(bnb::QuantType type, const uint8_t* packed, const NestedScales& scales, int64_t n,
                     int64_t blocksize, DType out_dtype, void* out, cudaStream_t stream) {
  launch_dequantize(type, packed, NestedScale{scales.codes, scales.nested_absmax, scales.offset}, n, blocksize,
                    out_dtype, out, stream);
}

void quantize_4bit(bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                   uint8_t* packed, float* absmax, cudaStream_t stream) {
  const bool vector = detail::aligned16(input) && (reinterpret_cast<uintptr_t>(packed) & 3) == 0;
  dispatch_quantize_4bit(type, in_dtype, blocksize, [&]<DType T, int Threads, bool Fp4>() {
    if (n <= 0) return;
    constexpr auto kernel = quantize_4bit_kernel<T, Threads, Fp4>;
    kernel<<<detail::grid_for<kernel>(n / 8, Threads), Threads, 0, stream>>>(input, n, int(blocksize), vector, packed,
                                                                            absmax);
    check(cudaGetLastError());
  });
}

void quantize_4bit(bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                   bool double_quant, const Quantized4bitBuffers& out, cudaStream_t stream) {
  if (!double_quant) return quantize_4bit(type, in_dtype, input, n, blocksize, out.packed, out.absmax, stream);
  const bool vector = detail::aligned16(input) && (reinterpret_cast<uintptr_t>(out.packed) & 3) == 0;
  dispatch_quantize_4bit(type, in_dtype, blocksize, [&]<DType T, int, bool Fp4>() {
    if (n <= 0) return;
    void* parts = nullptr;  // stream-ordered scratch for the mean's parts
    check(cudaMallocAsync(&parts, kMeanParts * sizeof(double), stream));
    // Cooperative, so that the grid barriers hold: grid_for never asks for more blocks than fit at once.
    constexpr int Threads = 512;
    constexpr auto kernel = quantize_4bit_nested_kernel<T, Threads, Fp4>;
    cudaLaunchAttribute cooperative{};
    cooperative.id = cudaLaunchAttributeCooperative;
    cooperative.val.cooperative = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(detail::grid_for<kernel>(n / 8, Threads));
    config.blockDim = dim3(Threads);
    config.stream = stream;
    config.attrs = &cooperative;
    config.numAttrs = 1;
    check(cudaLaunchKernelEx(&config, kernel, input, n, int(blocksize), vector, out.packed, out.absmax, out.codes,
                             out.nested_absmax, out.offset, static_cast<double*>(parts)));
    check(cudaFreeAsync(parts, stream));
  });
}

}  // namespace lowbit::cuda
