// What the AVX2 ggml dequantizers share (ggml_dequant_avx2.cpp, ggml_iq_dequant_avx2.cpp,
// ggml_ternary_fp4_dequant_avx2.cpp; included inside their x86-64 sections): how 8 floats go out, and
// the choice of a kernel's instantiation by the output's alignment and size.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "lowbit/formats/cpu_target.h"

namespace lowbit::cpu::avx2 {

// How store8 writes. A 32-byte store that straddles two cache lines costs about two once the output streams
// to memory, and malloc'd buffers are often only 16-byte aligned: such outputs get two 16-byte stores,
// which never straddle (the AVX-512 dequantizers do the same with 64 bytes). `streaming`: two 16-byte
// non-temporal stores, for a 16-byte-aligned output too large to stay in cache: they write whole lines
// without first reading them (the read for ownership), so the output costs its bytes once, not twice.
enum class Store8 { unaligned, aligned, streaming };

// 8 floats to y.
template <Store8 S>
__attribute__((target("avx2"))) inline void store8(float* y, __m256 v) {
  if constexpr (S == Store8::aligned) {
    _mm256_store_ps(y, v);
  } else if constexpr (S == Store8::streaming) {
    _mm_stream_ps(y, _mm256_castps256_ps128(v));
    _mm_stream_ps(y + 4, _mm256_extractf128_ps(v, 1));
  } else {
    _mm_storeu_ps(y, _mm256_castps256_ps128(v));
    _mm_storeu_ps(y + 4, _mm256_extractf128_ps(v, 1));
  }
}

using BlocksKernel = void (*)(const void* in, float* y, int64_t blocks);

// A dequantizer of `blocks` blocks into y: its streaming instantiation where the caller says the output
// streams and y allows it (the fence orders the non-temporal stores before whatever the caller does next,
// as normal stores would be), else its 32-byte-aligned one where y allows it.
template <BlocksKernel Streaming, BlocksKernel Aligned, BlocksKernel Unaligned>
void by_output(const void* in, float* y, int64_t blocks, OutputStores stores) {
  const uintptr_t address = reinterpret_cast<uintptr_t>(y);
  if (stores == OutputStores::streaming && address % 16 == 0) {
    Streaming(in, y, blocks);
    _mm_sfence();
    return;
  }
  (address % 32 == 0 ? Aligned : Unaligned)(in, y, blocks);
}

}  // namespace lowbit::cpu::avx2
