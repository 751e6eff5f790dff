// bitsandbytes 4-bit (nf4, fp4) on the GPU: dequantize (plain or double-quantized scales, one
// launch either way), quantize with bitsandbytes' approximate reciprocal, and the double quant
// second level. The format and its arithmetic: include/lowbit/formats/bnb_4bit.h.
#include <algorithm>
#include <array>
#include <bit>
#include <string>
#include <type_traits>

#include "codec_common.cuh"
#include "formats/bnb_tables.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace lowbit::cuda {
namespace {

using detail::add_rn;
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
  // The 8-bit dequantize multiplies (.ftz); torch then adds the offset (IEEE): two roundings.
  __device__ float operator()(int64_t block, const float* map) const {
    return add_rn(mul_ftz(map[codes[block]], nested_absmax[block / bnb::kNestedBlocksize]), __ldg(offset));
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
        y[2 * k] = mul_ftz(lut[(word[u] >> (8 * k + 4)) & 15], s[u]);
        y[2 * k + 1] = mul_ftz(lut[(word[u] >> (8 * k)) & 15], s[u]);
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
    const float v = mul_ftz(lut[i % 2 ? byte & 15 : byte >> 4], scale(i >> log2_blocksize, map));
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
    detail::store1<T>(out, i, mul_ftz(lut[i % 2 ? byte & 15 : byte >> 4], scale(i >> log2_blocksize, map)));
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
// A value's 4-bit code from one shared-memory word instead of a binary search over the thresholds
// (four dependent loads per value): the float bits of |v| above bit 20 (exponent and three mantissa
// bits) pick a bin that holds at most one threshold of either format (checked at compile time
// below), and the bin's word holds its two codes and where in the bin's low 20 bits the code
// changes. Bins below the smallest threshold and above the largest are one bin each.

constexpr int kBinShift = 20;
constexpr uint32_t kLowMask = (1u << kBinShift) - 1;
constexpr uint32_t key_of(float x) { return (std::bit_cast<uint32_t>(x) & 0x7fffffffu) >> kBinShift; }
constexpr uint32_t kFirstKey = [] {
  uint32_t k = ~0u;
  for (float t : bnb::tables::kNf4Thresholds) k = std::min(k, key_of(t));
  for (float t : bnb::tables::kFp4AbsThresholds) k = std::min(k, key_of(t));
  return k;
}();
constexpr int kBins = [] {  // bin 0: keys below kFirstKey; the last: keys above every threshold's
  uint32_t k = 0;
  for (float t : bnb::tables::kNf4Thresholds) k = std::max(k, key_of(t));
  for (float t : bnb::tables::kFp4AbsThresholds) k = std::max(k, key_of(t));
  return int(k - kFirstKey) + 3;
}();

// The reference decision as bitsandbytes makes it: how many ascending thresholds v exceeds (NaN
// exceeds none); FP4 compares |v| and adds the sign bit when v < 0.
constexpr int rank_4bit(float v, bool fp4) {
  int rank = 0;
  if (!fp4) {
    for (float t : bnb::tables::kNf4Thresholds) rank += v > t;
  } else {
    const float a = v < 0.0f ? -v : v;
    for (float t : bnb::tables::kFp4AbsThresholds) rank += a > t;
  }
  return rank;
}
constexpr uint32_t reference_code_4bit(float v, bool fp4) {
  const int rank = rank_4bit(v, fp4);
  if (!fp4) return uint32_t(rank);
  // FP4's bit pattern of each rank: {0, 1, 6, 7, 4, 5, 2, 3} as nibbles, plus the sign bit.
  return ((0x32547610u >> (4 * rank)) & 7u) | (v < 0.0f ? 8u : 0u);
}

// Bin word: bits 0-3 the code at the bin's low end, 4-7 the code above the change, 8-27 the low bits
// of |v| that the change needs exceeded (all ones: no change in this bin). Bins [0, kBins) are for
// v >= 0 (and -0.0), [kBins, 2 kBins) for v < 0.
struct BinTable {
  std::array<uint32_t, 2 * kBins> words{};
  bool valid = true;  // every bin holds at most one change, and the outer bins none
};
constexpr BinTable make_bin_table(bool fp4) {
  BinTable table;
  for (int side = 0; side < 2; ++side) {
    for (int bin = 0; bin < kBins; ++bin) {
      // |v|'s bits in this bin: [low, high], as non-negative floats they order as their bits.
      const uint32_t low = bin == 0 ? (side ? 1u : 0u) : (kFirstKey + uint32_t(bin) - 1) << kBinShift;
      const uint32_t high = bin == kBins - 1 ? 0x7f800000u : ((kFirstKey + uint32_t(bin)) << kBinShift) - 1;
      auto value = [&](uint32_t bits) { return side ? -std::bit_cast<float>(bits) : std::bit_cast<float>(bits); };
      const uint32_t code_low = reference_code_4bit(value(low), fp4), code_high = reference_code_4bit(value(high), fp4);
      const int changes = rank_4bit(value(high), fp4) - rank_4bit(value(low), fp4);
      uint32_t threshold = kLowMask;
      if (code_low != code_high || changes != 0) {
        if ((changes != 1 && changes != -1) || bin == 0 || bin == kBins - 1) table.valid = false;
        uint32_t lo = low, hi = high;  // the first bits with code_high: in (lo, hi]
        while (hi - lo > 1) {
          const uint32_t mid = lo + (hi - lo) / 2;
          (reference_code_4bit(value(mid), fp4) == code_low ? lo : hi) = mid;
        }
        threshold = (hi & kLowMask) - 1;
      }
      table.words[size_t(side * kBins + bin)] = code_low | code_high << 4 | threshold << 8;
    }
  }
  return table;
}
constexpr BinTable kNf4BinTable = make_bin_table(false), kFp4BinTable = make_bin_table(true);
static_assert(kNf4BinTable.valid && kFp4BinTable.valid, "a quantization bin holds more than one threshold");
__constant__ std::array<uint32_t, 2 * kBins> kNf4Bins = kNf4BinTable.words;
__constant__ std::array<uint32_t, 2 * kBins> kFp4Bins = kFp4BinTable.words;

// `bins` is this lane's copy: word b at bins[32 b] (each lane reads its own bank, never a conflict).
__device__ __forceinline__ uint32_t code_4bit(float v, const uint32_t* bins) {
  const uint32_t a = __float_as_uint(v) & 0x7fffffffu;
  const int bin = min(max(int(a >> kBinShift) - int(kFirstKey - 1), 0), kBins - 1) + (v < 0.0f ? kBins : 0);
  const uint32_t word = bins[32 * bin];
  const uint32_t code = (a & kLowMask) > (word >> 8) ? word >> 4 : word;
  return v != v ? 0u : code & 15u;  // NaN exceeds no threshold: code 0 in both formats
}

// One 4-bit block per blocksize / 8 consecutive threads (8 values each); a block of threads covers
// whole 4-bit blocks: kThreads * 8 values, or one 4096-value block with 512 threads.
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
template <DType T, int Threads>
__global__ void __launch_bounds__(Threads) quantize_4bit_kernel(const void* __restrict__ input, int64_t n,
                                                                int blocksize, bool fp4, bool vector,
                                                                uint8_t* __restrict__ packed,
                                                                float* __restrict__ absmax) {
  // 32 copies of the bin table, interleaved so that lane l's copy lies in bank l (18 KB).
  __shared__ uint32_t bins_by_lane[2 * kBins * 32];
  __shared__ float warp_max[Threads / 32];
  for (int i = threadIdx.x; i < 2 * kBins * 32; i += Threads) bins_by_lane[i] = fp4 ? kFp4Bins[i / 32] : kNf4Bins[i / 32];
  __syncthreads();
  const uint32_t* bins = bins_by_lane + threadIdx.x % 32;
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
    float m = 0.0f;
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      x[k] = detail::flush_subnormal(x[k]);
      m = fmaxf(m, fabsf(x[k]));
    }
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
    const float s = detail::rcp_approx_ftz(m);
    uint32_t word = 0;
#pragma unroll
    for (int k = 0; k < 8; k += 2) {  // values beyond n are 0.0: the padding nibble of an odd n
      const uint32_t high = code_4bit(mul_ftz(x[k], s), bins);
      const uint32_t low = code_4bit(mul_ftz(x[k + 1], s), bins);
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

// bitsandbytes' dQuantize over the ascending signed dynamic map: a 7-step binary search, then the
// nearer neighbour by float32 midpoints (explicitly rounded: no fused multiply-add).
__device__ uint8_t quantize_dynamic_8bit(float x, const float* map) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  for (int step = 64; step > 0; step >>= 1) {
    if (x > map[pivot]) {
      lower_pivot = pivot;
      lower = map[pivot];
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = map[pivot];
      pivot -= step;
    }
  }
  if (upper_pivot == 255) upper = map[255];
  if (lower_pivot == 0) lower = map[0];
  const float value = map[pivot];
  if (x > value) return uint8_t(x > __fmul_rn(add_rn(upper, value), 0.5f) ? upper_pivot : pivot);
  return uint8_t(x < __fmul_rn(add_rn(lower, value), 0.5f) ? lower_pivot : pivot);
}

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
  if (i < blocks) codes[i] = quantize_dynamic_8bit(mul_ftz(c, detail::rcp_approx_ftz(m)), map);
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
    if (blocksize <= 2048) {
      constexpr int threads = 256;
      quantize_4bit_kernel<T, threads><<<detail::grid_for<quantize_4bit_kernel<T, threads>>(n / 8, threads), threads, 0, stream>>>(
          input, n, int(blocksize), fp4, vector, packed, absmax);
    } else {
      constexpr int threads = 512;
      quantize_4bit_kernel<T, threads><<<detail::grid_for<quantize_4bit_kernel<T, threads>>(n / 8, threads), threads, 0, stream>>>(
          input, n, int(blocksize), fp4, vector, packed, absmax);
    }
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
