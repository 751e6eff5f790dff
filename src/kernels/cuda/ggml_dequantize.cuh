// The one dequantize kernel of every ggml block type, specialised by a decoder type: ggml rows of
// whole blocks are one contiguous run of blocks, cut into 8-value groups. Each thread takes
// consecutive groups across the warp (so a warp reads about one k-quant super-block, or eight
// 32-value blocks, and writes one contiguous stretch of output), loads the raw bytes of two groups
// before decoding either, and writes 16 bytes per group (bf16/f16; 32 for f32).
//
// A decoder `D` gives kValues (per block), kBytes (per block), a `Raw` struct of the words one group
// needs, `load(block, group)` and `decode(raw, group, y)`. Its arithmetic must round as the CPU's
// dequantize_row_* does: every product and sum separately (detail::mul_rn, add_rn, sub_rn).
#pragma once

#include <cuda_fp16.h>

#include "codec_common.cuh"
#include "lowbit/formats/format.h"

namespace lowbit::cuda::detail {

// Little-endian loads at the alignment a field is known to have within its block (blocks of 18,
// 22, 34, 110 or 210 bytes are only 2-byte aligned).
__device__ __forceinline__ uint16_t ld16(const uint8_t* p) { return *reinterpret_cast<const uint16_t*>(p); }
__device__ __forceinline__ uint32_t ld32_a2(const uint8_t* p) { return uint32_t(ld16(p)) | uint32_t(ld16(p + 2)) << 16; }
__device__ __forceinline__ uint32_t ld32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }
// 8 bytes at a 2-byte aligned address: the one or two aligned 8-byte words that hold them, shifted
// together (two wide loads instead of four narrow ones; never reads past the last byte's word).
__device__ __forceinline__ uint2 ld64_a2(const uint8_t* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  const auto* aligned = reinterpret_cast<const unsigned long long*>(address & ~uintptr_t(7));
  const int shift = int(address & 7) * 8;
  unsigned long long v = aligned[0];
  if (shift != 0) v = (v >> shift) | (aligned[1] << (64 - shift));
  return make_uint2(uint32_t(v), uint32_t(v >> 32));
}
__device__ __forceinline__ uint2 ld64_a4(const uint8_t* p) { return make_uint2(ld32(p), ld32(p + 4)); }
// 8 bytes at any address: the two or three aligned 4-byte words that hold them, funnel-shifted (never a
// word without one of the 8 bytes in it).
__device__ __forceinline__ uint2 ld64_a1(const uint8_t* p) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(p);
  const auto* aligned = reinterpret_cast<const uint32_t*>(address & ~uintptr_t(3));
  const int shift = int(address & 3) * 8;
  const uint32_t w0 = aligned[0], w1 = aligned[1], w2 = shift != 0 ? aligned[2] : 0u;
  return make_uint2(__funnelshift_r(w0, w1, shift), __funnelshift_r(w1, w2, shift));
}
__device__ __forceinline__ uint2 ld64(const uint8_t* p) { return *reinterpret_cast<const uint2*>(p); }

// Byte k (0..7) of an 8-byte little-endian word pair.
__device__ __forceinline__ uint32_t byte_of(const uint2& w, int k) { return ((k < 4 ? w.x : w.y) >> (8 * (k % 4))) & 0xff; }

__device__ __forceinline__ float half_bits_to_float(uint32_t bits) {
  return __half2float(__ushort_as_half(uint16_t(bits)));  // exact, as lowbit::f16_to_f32
}

// Byte k (0..3) of a word of small codes as a float, minus an integer bias: the byte is placed in
// the mantissa of 2^23 (one byte permute) and 2^23 + bias subtracted, exactly. Two full-rate
// instructions per value where an integer-to-float conversion runs at a quarter of the rate, and
// the decoders build four codes per word with one shift and mask (byte-parallel) instead of four.
__device__ __forceinline__ float code_minus(uint32_t codes, int k, float bias) {
  return __fsub_rn(__uint_as_float(__byte_perm(codes, 0x4B000000u, 0x7540u + uint32_t(k))), 8388608.0f + bias);
}

constexpr int kGgmlThreads = 256;
constexpr int kGgmlGroupsPerThread = 2;

template <class D, DType T>
__global__ void __launch_bounds__(kGgmlThreads) dequantize_ggml_kernel(const uint8_t* __restrict__ blocks,
                                                                        int64_t groups, void* __restrict__ out) {
  constexpr int kGroupsPerBlock = D::kValues / 8;
  const int64_t stride = int64_t(gridDim.x) * kGgmlThreads;
  for (int64_t base = blockIdx.x * int64_t(kGgmlThreads) + threadIdx.x; base < groups;
       base += kGgmlGroupsPerThread * stride) {
    typename D::Raw raw[kGgmlGroupsPerThread];
#pragma unroll
    for (int u = 0; u < kGgmlGroupsPerThread; ++u) {
      const int64_t g = base + u * stride;
      if (g < groups) raw[u] = D::load(blocks + (g / kGroupsPerBlock) * D::kBytes, int(g % kGroupsPerBlock));
    }
#pragma unroll
    for (int u = 0; u < kGgmlGroupsPerThread; ++u) {
      const int64_t g = base + u * stride;
      if (g >= groups) break;
      float y[8];
      D::decode(raw[u], int(g % kGroupsPerBlock), y);
      store8<T>(out, g, y);
    }
  }
}

// Unaligned outputs: the same decode, stored one value at a time.
template <class D, DType T>
__global__ void __launch_bounds__(kGgmlThreads) dequantize_ggml_unaligned_kernel(const uint8_t* blocks, int64_t groups,
                                                                                  void* out) {
  constexpr int kGroupsPerBlock = D::kValues / 8;
  for (int64_t g = blockIdx.x * int64_t(kGgmlThreads) + threadIdx.x; g < groups; g += int64_t(gridDim.x) * kGgmlThreads) {
    float y[8];
    D::decode(D::load(blocks + (g / kGroupsPerBlock) * D::kBytes, int(g % kGroupsPerBlock)), int(g % kGroupsPerBlock), y);
    for (int k = 0; k < 8; ++k) store1<T>(out, g * 8 + k, y[k]);
  }
}

// Launches D's kernel over `values` values (a whole number of blocks). Blocks need 2-byte
// alignment (4, 8 or 16 for the types whose size is a multiple of it: cudaMalloc'd buffers have it);
// mxfp4's 17-byte blocks are read byte by byte (kAlign 1).
// The alignment a decoder's loads need of the blocks (kAlign where it reads whole 16-byte headers).
template <class D>
constexpr int block_alignment() {
  if constexpr (requires { D::kAlign; }) return D::kAlign;
  else return 2;
}
template <class D>
void require_block_alignment(const void* blocks) {
  if (reinterpret_cast<uintptr_t>(blocks) % block_alignment<D>() != 0)
    throw Error("GPU ggml kernels: blocks must be " + std::to_string(block_alignment<D>()) + "-byte aligned");
}

template <class D>
void launch_dequantize_ggml(const void* blocks, int64_t values, DType out_dtype, void* out, cudaStream_t stream) {
  require_block_alignment<D>(blocks);
  const int64_t groups = values / 8;
  const auto* bytes = static_cast<const uint8_t*>(blocks);
  dispatch_float_dtype(out_dtype, [&]<DType T>() {
    if (aligned16(out))
      dequantize_ggml_kernel<D, T><<<grid_for<dequantize_ggml_kernel<D, T>>(groups / kGgmlGroupsPerThread + 1, kGgmlThreads), kGgmlThreads, 0,
                                     stream>>>(bytes, groups, out);
    else
      dequantize_ggml_unaligned_kernel<D, T><<<grid_for<dequantize_ggml_unaligned_kernel<D, T>>(groups, kGgmlThreads), kGgmlThreads, 0, stream>>>(bytes, groups,
                                                                                                          out);
  });
  check(cudaGetLastError());
}

// Dequantization by runs, for types whose 8-value groups share bytes that narrow loads would fetch
// again per group: eight lane tasks per 256-value super-block, each reading the bytes of its 32
// values once. A Runs type `R` gives kBytes, a `Raw` struct, load(block, task) for task < 8, and
// decode(raw, k, task, y): run k (< 4) of the task, 8 values that go to first_value(task, k) of the
// block. Two tasks' loads in flight; `D` (the 8-value decoder) serves outputs not 16-byte aligned.
// The k-quants' lanes interleave (four neighbours fill 64 contiguous bytes) and store directly.
template <class R, DType T>
__global__ void __launch_bounds__(kGgmlThreads) dequantize_runs_kernel(const uint8_t* __restrict__ blocks, int64_t tasks,
                                                                       void* __restrict__ out) {
  constexpr int kInFlight = 2;
  const int64_t stride = int64_t(gridDim.x) * kGgmlThreads;
  for (int64_t base = blockIdx.x * int64_t(kGgmlThreads) + threadIdx.x; base < tasks; base += kInFlight * stride) {
    typename R::Raw raw[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t task = base + u * stride;
      if (task < tasks) raw[u] = R::load(blocks + size_t(task / 8) * R::kBytes, int(task % 8));
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t task = base + u * stride;
      if (task >= tasks) break;
      // All four runs decoded before any is stored: table lookups then overlap.
      float y[4][8];
#pragma unroll
      for (int k = 0; k < 4; ++k) R::decode(raw[u], k, int(task % 8), y[k]);
#pragma unroll
      for (int k = 0; k < 4; ++k) store8<T>(out, ((task / 8) * 256 + R::first_value(int(task % 8), k)) / 8, y[k]);
    }
  }
}

// The same with the stores staged (R::kStaged): a warp's 32 tasks are four whole super-blocks, 1024
// contiguous values, whose runs go to shared memory first and leave as contiguous 16-byte stores. The
// i-quants' lane takes a whole 32-value group, 64 bytes from its neighbours': stored directly they ran
// at 0.3-0.5 of copy on the H200, staged at 0.84-0.91. (Staging cost the k-quants 0.02-0.09.)
//
// Types with a large grid (R::kGridEntries: iq1_m's 16 KB, iq2_s's 8 KB) decode from the block's copy of it
// in shared memory, R::decode's overload that takes the grid: a warp's 32 random lookups then cost a few
// bank-conflicted wavefronts instead of a cache line each. At 4096x14336 on the H200: iq1_m 0.83-0.84 of
// copy -> 0.86-0.89, iq2_s 0.84-0.86 -> 0.85-0.89. The smaller grids gained nothing (iq2_xs's 4 KB) or lost
// (iq3_s's 2 KB: 0.85-0.86 -> 0.82-0.83, measured before the kernel's four-block bound below).
template <class R>
constexpr int shared_grid_entries() {
  if constexpr (requires { R::kGridEntries; }) return R::kGridEntries;
  else return 0;
}

// Four blocks an SM at least: iq3_s's decoder took 80 registers (three blocks) and read at 0.86 of copy at
// 4096x14336 on the H200, at 64 registers 0.88-0.90 (the other decoders take 64 or fewer either way; five blocks,
// 48 registers, spilled and fell to 0.72-0.85).
template <class R, DType T>
__global__ void __launch_bounds__(kGgmlThreads, 4) dequantize_staged_runs_kernel(const uint8_t* __restrict__ blocks, int64_t tasks,
                                                                              void* __restrict__ out) {
  constexpr int kInFlight = 2, kChunks = 1024 * (T == DType::f32 ? 4 : 2) / 16;
  constexpr int kGridEntries = shared_grid_entries<R>();
  __shared__ uint4 stage[kGgmlThreads / 32][kChunks];
  __shared__ uint64_t grid[kGridEntries > 0 ? kGridEntries : 1];
  if constexpr (kGridEntries > 0) {
    for (int i = int(threadIdx.x); i < kGridEntries; i += kGgmlThreads) grid[i] = R::grid()[i];
    __syncthreads();
  }
  uint4* warp_stage = stage[threadIdx.x / 32];
  const int lane = int(threadIdx.x % 32);
  const int64_t stride = int64_t(gridDim.x) * kGgmlThreads;  // a multiple of 32: rounds start on whole warps
  for (int64_t base = blockIdx.x * int64_t(kGgmlThreads) + threadIdx.x - lane; base < tasks; base += kInFlight * stride) {
    typename R::Raw raw[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t task = base + u * stride + lane;
      if (task < tasks) raw[u] = R::load(blocks + size_t(task / 8) * R::kBytes, lane % 8);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t first = base + u * stride;  // the warp's first task this round
      if (first >= tasks) break;
      if (first + lane < tasks) {
        float y[4][8];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          if constexpr (kGridEntries > 0) R::decode(raw[u], k, lane % 8, y[k], grid);
          else R::decode(raw[u], k, lane % 8, y[k]);
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) store8<T>(warp_stage, (256 * (lane / 8) + R::first_value(lane % 8, k)) / 8, y[k]);
      }
      __syncwarp();
      const int64_t chunks = (tasks - first < 32 ? tasks - first : 32) / 8 * (kChunks / 4);  // whole super-blocks
      uint4* dst = static_cast<uint4*>(out) + first / 32 * kChunks;
      for (int c = lane; c < chunks; c += 32) dst[c] = warp_stage[c];
      __syncwarp();  // the stage is written again next round
    }
  }
}

template <class R, class D>
void launch_dequantize_runs(const void* blocks, int64_t values, DType out_dtype, void* out, cudaStream_t stream) {
  if (!aligned16(out)) return launch_dequantize_ggml<D>(blocks, values, out_dtype, out, stream);
  require_block_alignment<D>(blocks);
  const int64_t tasks = values / 256 * 8;
  dispatch_float_dtype(out_dtype, [&]<DType T>() {
    const auto* bytes = static_cast<const uint8_t*>(blocks);
    if constexpr (R::kStaged)
      dequantize_staged_runs_kernel<R, T><<<grid_for<dequantize_staged_runs_kernel<R, T>>(tasks / 2 + 1, kGgmlThreads), kGgmlThreads, 0,
                                            stream>>>(bytes, tasks, out);
    else
      dequantize_runs_kernel<R, T><<<grid_for<dequantize_runs_kernel<R, T>>(tasks / 2 + 1, kGgmlThreads), kGgmlThreads, 0, stream>>>(
          bytes, tasks, out);
  });
  check(cudaGetLastError());
}

}  // namespace lowbit::cuda::detail
