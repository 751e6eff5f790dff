// AVX2 kernel for bitsandbytes 4-bit dequantization (the avx2 CPU target; the scalar reference ran there,
// rebuilding each block's 16 values through out-of-line helpers). As the AVX-512 kernel
// (bnb_4bit_dequant_avx512.cpp): a block's element can only take 16 values, to_dtype(lut[code] * scale),
// computed once per block in registers (the reference's float32 product with the GPU's .ftz flushing,
// and lowbit's rounding to bf16 / f16, half.h), and every element is a lookup of its code: two byte
// shuffles (low and high bytes of the 16 values) for the 2-byte dtypes, vpermps and a blend for float32.
#include <cstdint>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cpu/simd_kernels.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define LOWBIT_BNB_DEQUANT_AVX2 1
#endif

namespace lowbit::bnb::detail {
namespace {

#if LOWBIT_BNB_DEQUANT_AVX2
#define LOWBIT_AVX2 __attribute__((target("avx2,f16c")))

// Lanes whose exponent field is 0 (zero or subnormal) become a zero of the same sign (gpu::flush_subnormal).
LOWBIT_AVX2 inline __m256 flush_subnormal8(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i tiny = _mm256_cmpeq_epi32(_mm256_and_si256(bits, _mm256_set1_epi32(0x7f800000)), _mm256_setzero_si256());
  const __m256i sign = _mm256_and_si256(bits, _mm256_set1_epi32(int(0x80000000u)));
  return _mm256_castsi256_ps(_mm256_blendv_epi8(bits, sign, tiny));
}

// f32_to_bf16 (half.h) on 8 lanes, as 32-bit lanes holding the result in their low half: round to nearest
// even by adding 0x7fff + the kept lsb; NaN truncated and quieted instead.
LOWBIT_AVX2 inline __m256i to_bf16_8(__m256 x) {
  const __m256i bits = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  const __m256i rounded = _mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7fff)));
  const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q));
  const __m256i quiet_nan = _mm256_or_si256(bits, _mm256_set1_epi32(0x00400000));
  return _mm256_srli_epi32(_mm256_blendv_epi8(rounded, quiet_nan, nan), 16);
}

// The 16 values of a block as float32: lut * scale with the GPU's mul.ftz (gpu::mul_ftz_on_host).
struct BlockValues {
  __m256 low, high;  // codes 0-7, 8-15
};
LOWBIT_AVX2 inline BlockValues block_values(__m256 lut_low, __m256 lut_high, float scale) {
  const __m256 s = flush_subnormal8(_mm256_set1_ps(scale));
  return {flush_subnormal8(_mm256_mul_ps(lut_low, s)), flush_subnormal8(_mm256_mul_ps(lut_high, s))};
}

// The 16 values rounded to a 2-byte dtype, as two 16-byte tables: their low bytes and their high bytes
// (each in both 128-bit lanes, for the in-lane byte shuffle).
struct ByteTables {
  __m256i low, high;
};
LOWBIT_AVX2 inline ByteTables byte_tables(DType dtype, const BlockValues& v) {
  __m128i first, second;  // codes 0-7 and 8-15, 16 bits each
  if (dtype == DType::bf16) {
    const __m256i low = to_bf16_8(v.low), high = to_bf16_8(v.high);  // 32-bit lanes, below 2^16
    first = _mm_packus_epi32(_mm256_castsi256_si128(low), _mm256_extracti128_si256(low, 1));
    second = _mm_packus_epi32(_mm256_castsi256_si128(high), _mm256_extracti128_si256(high, 1));
  } else {
    first = _mm256_cvtps_ph(v.low, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    second = _mm256_cvtps_ph(v.high, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  }
  const __m128i split = _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);  // low bytes | high bytes
  const __m128i a = _mm_shuffle_epi8(first, split), b = _mm_shuffle_epi8(second, split);
  return {_mm256_broadcastsi128_si256(_mm_unpacklo_epi64(a, b)), _mm256_broadcastsi128_si256(_mm_unpackhi_epi64(a, b))};
}

// 16 packed bytes -> 32 codes as bytes in element order (byte i holds element 2i in its high nibble and
// 2i + 1 in its low one): elements 0-15 in the low 128-bit lane, 16-31 in the high one.
LOWBIT_AVX2 inline __m256i codes32(const uint8_t* packed) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(packed));
  const __m128i high = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(0x0f));
  const __m128i low = _mm_and_si128(bytes, _mm_set1_epi8(0x0f));
  return _mm256_setr_m128i(_mm_unpacklo_epi8(high, low), _mm_unpackhi_epi8(high, low));
}

template <bool kStream>
LOWBIT_AVX2 inline void store32(void* p, __m256i v) {
  if constexpr (kStream) _mm256_stream_si256(static_cast<__m256i*>(p), v);
  else _mm256_storeu_si256(static_cast<__m256i*>(p), v);
}

template <bool kStream>
LOWBIT_AVX2 void dequantize_blocks_half(const uint8_t* packed, const float* scales, __m256 lut_low, __m256 lut_high,
                                        int64_t blocksize, int64_t first_block, int64_t last_block, DType out_dtype,
                                        uint16_t* out) {
  for (int64_t b = first_block; b < last_block; ++b) {
    const ByteTables table = byte_tables(out_dtype, block_values(lut_low, lut_high, scales[b - first_block]));
    const uint8_t* source = packed + b * blocksize / 2;
    uint16_t* destination = out + b * blocksize;
    for (int64_t i = 0; i < blocksize; i += 32) {  // 32 elements: 16 packed bytes in, 64 bytes out
      const __m256i codes = codes32(source + i / 2);
      const __m256i low = _mm256_shuffle_epi8(table.low, codes), high = _mm256_shuffle_epi8(table.high, codes);
      // Per 128-bit lane: words of elements 0-7 | 8-15 (low lane), 16-23 | 24-31 (high lane).
      const __m256i first = _mm256_unpacklo_epi8(low, high), second = _mm256_unpackhi_epi8(low, high);
      store32<kStream>(destination + i, _mm256_permute2x128_si256(first, second, 0x20));
      store32<kStream>(destination + i + 16, _mm256_permute2x128_si256(first, second, 0x31));
    }
  }
}

template <bool kStream>
LOWBIT_AVX2 void dequantize_blocks_f32(const uint8_t* packed, const float* scales, __m256 lut_low, __m256 lut_high,
                                       int64_t blocksize, int64_t first_block, int64_t last_block, float* out) {
  for (int64_t b = first_block; b < last_block; ++b) {
    const BlockValues values = block_values(lut_low, lut_high, scales[b - first_block]);
    const uint8_t* source = packed + b * blocksize / 2;
    float* destination = out + b * blocksize;
    for (int64_t i = 0; i < blocksize; i += 32) {  // 32 elements: 16 packed bytes in, 128 bytes out
      const __m256i codes = codes32(source + i / 2);
      for (int part = 0; part < 4; ++part) {  // elements 8 part .. 8 part + 7
        const __m128i lane = part < 2 ? _mm256_castsi256_si128(codes) : _mm256_extracti128_si256(codes, 1);
        const __m256i code = _mm256_cvtepu8_epi32(part % 2 ? _mm_srli_si128(lane, 8) : lane);
        const __m256 upper = _mm256_castsi256_ps(_mm256_slli_epi32(code, 28));  // bit 3 to the sign bit
        const __m256 value = _mm256_blendv_ps(_mm256_permutevar8x32_ps(values.low, code),
                                              _mm256_permutevar8x32_ps(values.high, code), upper);
        store32<kStream>(destination + i + 8 * part, _mm256_castps_si256(value));
      }
    }
  }
}

LOWBIT_AVX2 void dequantize_4bit_blocks_avx2(const uint8_t* packed, const float* scales, const std::array<float, 16>& lut,
                                             int64_t blocksize, int64_t first_block, int64_t last_block, DType out_dtype,
                                             std::byte* out, bool stream) {
  const __m256 lut_low = _mm256_loadu_ps(lut.data()), lut_high = _mm256_loadu_ps(lut.data() + 8);
  if (out_dtype == DType::f32) {
    float* destination = reinterpret_cast<float*>(out);
    if (stream) dequantize_blocks_f32<true>(packed, scales, lut_low, lut_high, blocksize, first_block, last_block, destination);
    else dequantize_blocks_f32<false>(packed, scales, lut_low, lut_high, blocksize, first_block, last_block, destination);
  } else {
    uint16_t* destination = reinterpret_cast<uint16_t*>(out);
    if (stream) dequantize_blocks_half<true>(packed, scales, lut_low, lut_high, blocksize, first_block, last_block, out_dtype, destination);
    else dequantize_blocks_half<false>(packed, scales, lut_low, lut_high, blocksize, first_block, last_block, out_dtype, destination);
  }
  // Non-temporal stores are weakly ordered: fence before the thread pool reports the chunk done.
  if (stream) _mm_sfence();
}
#endif

}  // namespace

DequantizeBlocksFn avx2_dequantize_4bit_blocks() {
#if LOWBIT_BNB_DEQUANT_AVX2
  return dequantize_4bit_blocks_avx2;
#else
  return nullptr;
#endif
}

}  // namespace lowbit::bnb::detail
