// bitsandbytes 4-bit (nf4, fp4) on the GPU: dequantize (plain or double-quantized scales, one
// launch either way), quantize with bitsandbytes' approximate reciprocal, and the double quant
// second level. The format and its per-value rules (value_4bit, nested_block_scale,
// quantize_dynamic_8bit, shared with the CPU codec): include/lowbit/formats/bnb_4bit.h.
#include <array>
#include <string>
#include <type_traits>

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
// A value's 4-bit code from one entry of a 64-bin table instead of a binary search over the thresholds
// (four dependent loads and compares per value): bnb_quant_bins.h.

using detail::code_4bit_by_bins;
using detail::kQuantBins;
using detail::QuantBin;

__constant__ std::array<QuantBin, kQuantBins> kNf4Bins = detail::kNf4Table.bins;
__constant__ std::array<QuantBin, kQuantBins> kFp4Bins = detail::kFp4Table.bins;

template <DType T>
__device__ __forceinline__ void load_group(const void* input, int64_t g, int64_t n, bool vector, float (&x)[8]) {
  if (vector && g * 8 + 8 <= n) {
    detail::load8<T>(input, g, x);
  } else {
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = g * 8 + k < n ? detail::load1<T>(input, g * 8 + k) : 0.0f;
  }
}

// One 4-bit block per blocksize / 8 consecutive threads (8 values each); a block of threads covers
// whole 4-bit blocks: Threads * 8 values, or one 4096-value block with 512 threads. Each thread
// loads its next chunk's 16 bytes before it codes the current one (two loads in flight).
template <DType T, int Threads, bool Fp4>
__global__ void __launch_bounds__(Threads, 2048 / Threads) quantize_4bit_kernel(const void* __restrict__ input, int64_t n,
                                                                int blocksize, bool vector,
                                                                uint8_t* __restrict__ packed,
                                                                float* __restrict__ absmax) {
  __shared__ QuantBin bins[kQuantBins];
  __shared__ float warp_max[Threads / 32];
  if (threadIdx.x < kQuantBins) bins[threadIdx.x] = Fp4 ? kFp4Bins[threadIdx.x] : kNf4Bins[threadIdx.x];
  __syncthreads();
  const int threads_per_block = blocksize / 8;
  const int64_t chunks = (n + Threads * 8 - 1) / (Threads * 8);
  float next[8];
  if (blockIdx.x < chunks) load_group<T>(input, blockIdx.x * int64_t(Threads) + threadIdx.x, n, vector, next);
  for (int64_t chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
    const int64_t g = chunk * Threads + threadIdx.x;  // this thread's group of 8 values
    float x[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) x[k] = next[k];
    if (chunk + gridDim.x < chunks) load_group<T>(input, g + int64_t(gridDim.x) * Threads, n, vector, next);
    // Subnormal inputs count as zeros: mul_ftz flushes them below, and the maximum of the flushed
    // magnitudes is the flushed maximum (flushing is monotone), so it is flushed once.
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) m = fmaxf(m, fabsf(x[k]));
    // max over the block's threads: lanes first, then (blocks wider than a warp) across warps.
    for (int offset = min(threads_per_block, 32) / 2; offset > 0; offset /= 2)
      m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
    if (threads_per_block > 32) {
      if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
      __syncthreads();
      const int first_warp = (threadIdx.x / threads_per_block) * (threads_per_block / 32);
      for (int w = 0; w < threads_per_block / 32; ++w) m = fmaxf(m, warp_max[first_warp + w]);
      __syncthreads();
    }
    m = detail::flush_subnormal(m);
    const float s = detail::rcp_approx_ftz(m);
    uint32_t word = 0;
#pragma unroll
    for (int k = 0; k < 8; k += 2) {  // values beyond n are 0.0: the padding nibble of an odd n
      const uint32_t high = code_4bit_by_bins<Fp4>(mul_ftz(x[k], s), bins);
      const uint32_t low = code_4bit_by_bins<Fp4>(mul_ftz(x[k + 1], s), bins);
      word |= (high << 4 | low) << (4 * k);
    }
    const int64_t bytes = (n + 1) / 2;
    if (vector && g * 4 + 4 <= bytes) {
      reinterpret_cast<uint32_t*>(packed)[g] = word;
    } else {
      for (int k = 0; k < 4; ++k)
        if (g * 4 + k < bytes) packed[g * 4 + k] = uint8_t(word >> (8 * k));
    }
    if (threadIdx.x % threads_per_block == 0 && g * 8 < n) absmax[g * 8 / blocksize] = m;
  }
}

// ---- double quantization ----

// One thread block of 256 per nested block of 256 absmaxes.
__global__ void __launch_bounds__(256) quantize_absmax_nested_kernel(const float* __restrict__ absmax, int64_t blocks,
                                                                     const float* __restrict__ offset,
                                                                     uint8_t* __restrict__ codes,
                                                                     float* __restrict__ nested_absmax) {
  __shared__ float map[256];
  __shared__ float warp_max[8];
  map[threadIdx.x] = kDynamicMap[threadIdx.x];
  const int64_t i = blockIdx.x * int64_t(256) + threadIdx.x;
  // torch subtracts the offset in float32 (IEEE); the 8-bit kernel then flushes like the 4-bit one.
  const float c = i < blocks ? detail::flush_subnormal(__fsub_rn(absmax[i], *offset)) : 0.0f;
  float m = fabsf(c);
  for (int o = 16; o > 0; o /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32] = m;
  __syncthreads();
  for (int w = 0; w < 8; ++w) m = fmaxf(m, warp_max[w]);
  if (i < blocks) codes[i] = bnb::quantize_dynamic_8bit(mul_ftz(c, detail::rcp_approx_ftz(m)), map);
  if (threadIdx.x == 0) nested_absmax[blockIdx.x] = m;
}

// The mean in two fixed-shape launches, so the same inputs always give the same float whatever
// the device: kMeanParts blocks each sum a fixed contiguous part (a Neumaier sum per thread over a
// fixed stride, then a fixed tree), then one block adds the parts in a fixed tree.
constexpr int kMeanParts = 264;
constexpr int kMeanThreads = 256;

__device__ double block_tree_sum(double v, double* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int half = kMeanThreads / 2; half > 0; half /= 2) {
    if (threadIdx.x < half) shared[threadIdx.x] += shared[threadIdx.x + half];
    __syncthreads();
  }
  return shared[0];
}

__global__ void __launch_bounds__(kMeanThreads) mean_parts_kernel(const float* __restrict__ values, int64_t count,
                                                                  double* __restrict__ parts) {
  __shared__ double shared[kMeanThreads];
  const int64_t per_part = (count + kMeanParts - 1) / kMeanParts;
  const int64_t begin = blockIdx.x * per_part, end = min(count, begin + per_part);
  double sum = 0.0, compensation = 0.0;
  for (int64_t i = begin + threadIdx.x; i < end; i += kMeanThreads) {
    const double v = values[i];
    const double t = sum + v;
    compensation += fabs(sum) >= fabs(v) ? (sum - t) + v : (v - t) + sum;
    sum = t;
  }
  const double total = block_tree_sum(sum + compensation, shared);
  if (threadIdx.x == 0) parts[blockIdx.x] = total;
}

__global__ void __launch_bounds__(kMeanThreads) mean_finish_kernel(const double* __restrict__ parts, int64_t count,
                                                                   float* __restrict__ mean) {
  __shared__ double shared[kMeanThreads];
  double v = 0.0;
  for (int i = threadIdx.x; i < kMeanParts; i += kMeanThreads) v += parts[i];
  const double total = block_tree_sum(v, shared);
  if (threadIdx.x == 0) *mean = count > 0 ? float(total / double(count)) : 0.0f;
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
  bnb::check_blocksize_4bit(blocksize);
  detail::require_float_dtype(in_dtype, "GPU bnb 4-bit quantization");
  if (n <= 0) return;
  const bool fp4 = type == bnb::QuantType::fp4;
  const bool vector = detail::aligned16(input) && (reinterpret_cast<uintptr_t>(packed) & 3) == 0;
  detail::dispatch_float_dtype(in_dtype, [&]<DType T>() {
    auto launch = [&]<int Threads, bool Fp4>() {
      constexpr auto kernel = quantize_4bit_kernel<T, Threads, Fp4>;
      kernel<<<detail::grid_for<kernel>(n / 8, Threads), Threads, 0, stream>>>(input, n, int(blocksize), vector, packed, absmax);
    };
    if (blocksize <= 2048) fp4 ? launch.template operator()<256, true>() : launch.template operator()<256, false>();
    else fp4 ? launch.template operator()<512, true>() : launch.template operator()<512, false>();
  });
  check(cudaGetLastError());
}

void mean_to_nearest_float(const float* values, int64_t count, float* mean, cudaStream_t stream) {
  void* parts = nullptr;  // stream-ordered scratch: no device-wide synchronisation
  check(cudaMallocAsync(&parts, kMeanParts * sizeof(double), stream));
  mean_parts_kernel<<<kMeanParts, kMeanThreads, 0, stream>>>(values, count, static_cast<double*>(parts));
  mean_finish_kernel<<<1, kMeanThreads, 0, stream>>>(static_cast<const double*>(parts), count, mean);
  check(cudaGetLastError());
  check(cudaFreeAsync(parts, stream));
}

void quantize_absmax_nested(const float* absmax, int64_t blocks, const float* offset, uint8_t* codes,
                            float* nested_absmax, cudaStream_t stream) {
  if (blocks <= 0) return;
  const int64_t nested_blocks = (blocks + bnb::kNestedBlocksize - 1) / bnb::kNestedBlocksize;
  quantize_absmax_nested_kernel<<<unsigned(nested_blocks), 256, 0, stream>>>(absmax, blocks, offset, codes,
                                                                             nested_absmax);
  check(cudaGetLastError());
}

void quantize_4bit(bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                   bool double_quant, const Quantized4bitBuffers& out, cudaStream_t stream) {
  quantize_4bit(type, in_dtype, input, n, blocksize, out.packed, out.absmax, stream);
  if (!double_quant) return;
  const int64_t blocks = (n + blocksize - 1) / blocksize;
  mean_to_nearest_float(out.absmax, blocks, out.offset, stream);
  quantize_absmax_nested(out.absmax, blocks, out.offset, out.codes, out.nested_absmax, stream);
}

}  // namespace lowbit::cuda
