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

}  // namespace lowbit::cuda::detail
