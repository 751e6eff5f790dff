// What the AVX2 ggml dequantizers share (ggml_dequant_avx2.cpp, ggml_iq_dequant_avx2.cpp,
// ggml_ternary_fp4_dequant_avx2.cpp; included inside their x86-64 sections): how 8 floats go out, and
// the choice of a kernel's instantiation by the output's alignment.
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace lowbit::cpu::avx2 {

// 8 floats to y. A 32-byte store that straddles two cache lines costs about two once the output streams
// to memory, and malloc'd buffers are often only 16-byte aligned: such outputs get two 16-byte stores,
// which never straddle (the AVX-512 dequantizers do the same with 64 bytes). The kernels are instantiated
// for both cases, picked per call by by_alignment.
template <bool Aligned32>
__attribute__((target("avx2"))) inline void store8(float* y, __m256 v) {
  if (Aligned32) {
    _mm256_store_ps(y, v);
    return;
  }
  _mm_storeu_ps(y, _mm256_castps256_ps128(v));
  _mm_storeu_ps(y + 4, _mm256_extractf128_ps(v, 1));
}

// A dequantizer of `blocks` blocks into y: its 32-byte-aligned instantiation where y allows it.
template <void (*Aligned)(const void*, float*, int64_t), void (*Unaligned)(const void*, float*, int64_t)>
void by_alignment(const void* in, float* y, int64_t blocks) {
  (reinterpret_cast<uintptr_t>(y) % 32 == 0 ? Aligned : Unaligned)(in, y, blocks);
}

}  // namespace lowbit::cpu::avx2
