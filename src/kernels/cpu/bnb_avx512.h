// AVX-512 building blocks shared by the bitsandbytes kernels (bnb_4bit_avx512.cpp,
// bnb_4bit_dequant_avx512.cpp, bnb_int8_avx512.cpp). Each reproduces one scalar operation of the
// reference bit for bit: the widening loads, the GPU's .ftz flushing, and lowbit's rounding of
// float32 to bf16 / f16 (half.h). The kernels run only where cpu_kernels.h hands them out.
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define LOWBIT_BNB_HAVE_AVX512 1
#include <immintrin.h>

#include <cstddef>
#include <cstdint>

#include "lowbit/core/dtype.h"

// VL for the 128/256-bit masked loads and stores; every AVX-512BW CPU has it.
#define LOWBIT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

namespace lowbit::bnb::avx512 {

// The elements of `mask` among 16 elements of `dtype` at `p` as float32 (f16 and bf16 widen
// exactly); other lanes are 0 and nothing past them is read.
LOWBIT_AVX512 inline __m512 load16_as_f32(DType dtype, const std::byte* p, __mmask16 mask = 0xffff) {
  if (dtype == DType::f32) return _mm512_maskz_loadu_ps(mask, p);
  const __m256i halves = _mm256_maskz_loadu_epi16(mask, p);
  if (dtype == DType::f16) return _mm512_cvtph_ps(halves);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));  // bf16
}

// Lanes whose exponent field is 0 (zero or subnormal) become a zero of the same sign.
LOWBIT_AVX512 inline __m512 flush_subnormal16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __mmask16 tiny = _mm512_testn_epi32_mask(bits, _mm512_set1_epi32(0x7f800000));
  return _mm512_mask_mov_ps(x, tiny, _mm512_castsi512_ps(_mm512_and_si512(bits, _mm512_set1_epi32(int(0x80000000u)))));
}

// Lanes holding NaN or Inf (exponent field all ones).
LOWBIT_AVX512 inline __mmask16 non_finite16(__m512 x) {
  const __m512i exponent = _mm512_and_si512(_mm512_castps_si512(x), _mm512_set1_epi32(0x7f800000));
  return _mm512_cmpeq_epi32_mask(exponent, _mm512_set1_epi32(0x7f800000));
}

// f32_to_bf16 (half.h) on 16 lanes: round to nearest even by adding 0x7fff + the kept lsb; NaN is
// truncated and quieted instead (rounding could carry it into Inf).
LOWBIT_AVX512 inline __m256i to_bf16_16(__m512 x) {
  const __m512i bits = _mm512_castps_si512(x);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
  const __mmask16 nan = _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q);
  const __m512i quiet_nan = _mm512_or_si512(bits, _mm512_set1_epi32(0x00400000));
  return _mm512_cvtepi32_epi16(_mm512_srli_epi32(_mm512_mask_mov_epi32(rounded, nan, quiet_nan), 16));
}

// f32_to_f16 (half.h) on 16 lanes: F16C rounds to nearest even with IEEE subnormals, overflow to
// Inf and NaN quieted with its payload truncated, which is what half.h reproduces.
LOWBIT_AVX512 inline __m256i to_f16_16(__m512 x) {
  return _mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

// 16 float32 lanes rounded to a 2-byte float dtype (bf16 or f16), in the low 256 bits.
LOWBIT_AVX512 inline __m256i to_half16(DType dtype, __m512 x) {
  return dtype == DType::bf16 ? to_bf16_16(x) : to_f16_16(x);
}

// How far ahead of the current read the streaming kernels prefetch. With non-temporal stores
// holding most of a core's fill buffers, the hardware prefetcher alone leaves the reads waiting.
inline constexpr int64_t kPrefetchBytes = 1024;

// Non-temporal stores skip reading the destination line before writing it (and keep a tensor far
// larger than the cache from evicting everything else); they need 64-byte alignment.
template <bool kStream>
LOWBIT_AVX512 inline void store64(void* p, __m512i v) {
  if constexpr (kStream) _mm512_stream_si512(static_cast<__m512i*>(p), v);
  else _mm512_storeu_si512(p, v);
}

}  // namespace lowbit::bnb::avx512
#endif

// A kernel of this file's users, or nullptr on a build without it (where it does not exist and is not named).
#ifdef LOWBIT_BNB_HAVE_AVX512
#define LOWBIT_BNB_AVX512_OR_NULL(kernel) (kernel)
#else
#define LOWBIT_BNB_AVX512_OR_NULL(kernel) nullptr
#endif
