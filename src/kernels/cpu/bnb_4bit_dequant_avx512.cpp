// AVX-512 kernel for bitsandbytes 4-bit dequantization (the avx512 CPU target). A block's
// element can only take 16 values, to_dtype(lut[code] * scale), so each block computes them once
// in a register (the same float32 product, .ftz flushing and rounding as the reference's table,
// bnb_4bit.cpp) and every element is a register permute of its code: vpermw for the 2-byte dtypes
// (32 outputs per instruction), vpermps for float32. The work per byte is then a few instructions
// and the kernel runs at the speed of memory.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // GCC 12's _mm512_undefined_* false positive
#endif
#include <cstdint>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cpu/bnb_avx512.h"
#include "kernels/cpu/simd_kernels.h"

namespace lowbit::bnb::detail {
namespace {

#ifdef LOWBIT_BNB_HAVE_AVX512
using namespace avx512;

// 16 packed bytes -> 32 codes, one per 16-bit lane, in element order: byte i holds element 2i in
// its high nibble (-> word 2i) and element 2i+1 in its low nibble (-> word 2i+1).
LOWBIT_AVX512 inline __m512i codes32_as_words(const uint8_t* packed) {
  const __m512i bytes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(packed)));
  // dword i = (byte_i >> 4) | (byte_i & 0x0f) << 16; ternary 0xF8 is a | (b & c).
  return _mm512_ternarylogic_epi32(_mm512_srli_epi32(bytes, 4), _mm512_slli_epi32(bytes, 16),
                                   _mm512_set1_epi32(0x000f0000), 0xF8);
}

// 8 packed bytes -> 16 codes, one per 32-bit lane, in element order.
LOWBIT_AVX512 inline __m512i codes16_as_dwords(const uint8_t* packed) {
  const __m128i words = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(packed)));
  // word i = (byte_i >> 4) | (byte_i & 0x0f) << 8: the 16 codes as bytes in element order.
  const __m128i nibbles = _mm_or_si128(_mm_srli_epi16(words, 4), _mm_slli_epi16(_mm_and_si128(words, _mm_set1_epi16(0x0f)), 8));
  return _mm512_cvtepu8_epi32(nibbles);
}

// The 16 float32 values of a block's codes: lut * scale with the GPU's mul.ftz.
LOWBIT_AVX512 inline __m512 block_values(__m512 lut, float scale) {
  return flush_subnormal16(_mm512_mul_ps(lut, flush_subnormal16(_mm512_set1_ps(scale))));
}

template <bool kStream>
LOWBIT_AVX512 void dequantize_blocks_half(const uint8_t* packed, const float* scales, __m512 lut, int64_t blocksize,
                                          int64_t first_block, int64_t last_block, DType out_dtype, uint16_t* out) {
  for (int64_t b = first_block; b < last_block; ++b) {
    // The 16 outputs in the low 16 words; vpermw reads only those, codes being < 16.
    const __m512i table = _mm512_castsi256_si512(to_half16(out_dtype, block_values(lut, scales[b - first_block])));
    const uint8_t* source = packed + b * blocksize / 2;
    uint16_t* destination = out + b * blocksize;
    for (int64_t i = 0; i < blocksize; i += 32) {  // 32 elements: 16 packed bytes in, 64 bytes out
      _mm_prefetch(reinterpret_cast<const char*>(source + i / 2) + kPrefetchBytes, _MM_HINT_T0);
      store64<kStream>(destination + i, _mm512_permutexvar_epi16(codes32_as_words(source + i / 2), table));
    }
  }
}

template <bool kStream>
LOWBIT_AVX512 void dequantize_blocks_f32(const uint8_t* packed, const float* scales, __m512 lut, int64_t blocksize,
                                         int64_t first_block, int64_t last_block, float* out) {
  for (int64_t b = first_block; b < last_block; ++b) {
    const __m512 table = block_values(lut, scales[b - first_block]);
    const uint8_t* source = packed + b * blocksize / 2;
    float* destination = out + b * blocksize;
    for (int64_t i = 0; i < blocksize; i += 16) {  // 16 elements: 8 packed bytes in, 64 bytes out
      _mm_prefetch(reinterpret_cast<const char*>(source + i / 2) + kPrefetchBytes, _MM_HINT_T0);
      store64<kStream>(destination + i, _mm512_castps_si512(_mm512_permutexvar_ps(codes16_as_dwords(source + i / 2), table)));
    }
  }
}

LOWBIT_AVX512 void dequantize_4bit_blocks_avx512(const uint8_t* packed, const float* scales,
                                                 const std::array<float, 16>& lut, int64_t blocksize,
                                                 int64_t first_block, int64_t last_block, DType out_dtype,
                                                 std::byte* out, bool stream) {
  const __m512 lut16 = _mm512_loadu_ps(lut.data());
  if (out_dtype == DType::f32) {
    float* destination = reinterpret_cast<float*>(out);
    if (stream) dequantize_blocks_f32<true>(packed, scales, lut16, blocksize, first_block, last_block, destination);
    else dequantize_blocks_f32<false>(packed, scales, lut16, blocksize, first_block, last_block, destination);
  } else {
    uint16_t* destination = reinterpret_cast<uint16_t*>(out);
    if (stream) dequantize_blocks_half<true>(packed, scales, lut16, blocksize, first_block, last_block, out_dtype, destination);
    else dequantize_blocks_half<false>(packed, scales, lut16, blocksize, first_block, last_block, out_dtype, destination);
  }
  // Non-temporal stores are weakly ordered: fence before the thread pool reports the chunk done.
  if (stream) _mm_sfence();
}

// Double quant's scales of blocks [first, last): map[code] * nested_absmax (mul.ftz) + offset,
// 16 blocks at a time; the two tables are gathered (the map is 1 KiB, it stays in L1).
LOWBIT_AVX512 void dequantize_absmax_nested_avx512(const NestedAbsmax& nested, int64_t first, int64_t last,
                                                   float* scales) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (int64_t i = first; i < last; i += 16) {
    const __mmask16 lanes = last - i >= 16 ? __mmask16(0xffff) : __mmask16((1u << (last - i)) - 1);
    const __m512i codes = _mm512_cvtepu8_epi32(_mm_maskz_loadu_epi8(lanes, nested.codes.data() + i));
    const __m512 code_values = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, codes, nested.code.data(), 4);
    const __m512i group = _mm512_srli_epi32(_mm512_add_epi32(_mm512_set1_epi32(int(i)), lane), 8);  // / 256
    const __m512 group_absmax = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), lanes, group, nested.nested_absmax.data(), 4);
    const __m512 product = flush_subnormal16(_mm512_mul_ps(flush_subnormal16(code_values), flush_subnormal16(group_absmax)));
    _mm512_mask_storeu_ps(scales + (i - first), lanes, _mm512_add_ps(product, _mm512_set1_ps(nested.offset)));
  }
}
#endif

}  // namespace

DequantizeBlocksFn avx512_dequantize_4bit_blocks() { return LOWBIT_BNB_AVX512_OR_NULL(dequantize_4bit_blocks_avx512); }

NestedScalesFn avx512_dequantize_absmax_nested() { return LOWBIT_BNB_AVX512_OR_NULL(dequantize_absmax_nested_avx512); }

}  // namespace lowbit::bnb::detail
