// Exact IEEE binary16 (f16) and bfloat16 (bf16) <-> float32 conversions.
// To float32 is exact; from float32 rounds to nearest, ties to even, with Inf, NaN (quieted, payload kept
// where it fits) and f16 subnormals handled as the hardware (F16C, CUDA __float2half_rn) does.
#pragma once

#include <bit>
#include <cstdint>

namespace lowbit {

constexpr float f16_to_f32(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return std::bit_cast<float>(sign | 0x7f800000u | (mant << 13));  // Inf, NaN
  if (exp != 0) return std::bit_cast<float>(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return std::bit_cast<float>(sign);
  // Subnormal: renormalise. value = mant * 2^-24.
  uint32_t e = 113;
  while ((mant & 0x400) == 0) {
    mant <<= 1;
    --e;
  }
  return std::bit_cast<float>(sign | (e << 23) | ((mant & 0x3ff) << 13));
}

constexpr uint16_t f32_to_f16(float f) {
  const uint32_t bits = std::bit_cast<uint32_t>(f);
  const uint16_t sign = uint16_t((bits >> 16) & 0x8000);
  const uint32_t x = bits & 0x7fffffff;
  if (x > 0x7f800000) return uint16_t(sign | 0x7e00 | ((x >> 13) & 0x3ff));  // NaN stays NaN, quiet
  if (x >= 0x47800000) return uint16_t(sign | 0x7c00);                      // >= 65536: Inf
  const uint32_t exp = x >> 23;
  if (exp >= 113) {  // f16 normal range (before rounding)
    uint32_t h = ((exp - 112) << 10) | ((x >> 13) & 0x3ff);
    const uint32_t rest = x & 0x1fff;
    h += (rest > 0x1000 || (rest == 0x1000 && (h & 1))) ? 1 : 0;  // a carry may reach Inf: correct
    return uint16_t(sign | h);
  }
  // f16 subnormal: units of 2^-24. value = mant24 * 2^(exp-150), so units = mant24 >> (126 - exp).
  const uint32_t shift = 126 - exp;
  if (shift > 24) return sign;  // below half the smallest subnormal
  const uint32_t mant = (x & 0x7fffff) | (exp ? 0x800000u : 0u);
  uint32_t h = mant >> shift;
  const uint32_t rest = mant & ((1u << shift) - 1);
  const uint32_t half = 1u << (shift - 1);
  h += (rest > half || (rest == half && (h & 1))) ? 1 : 0;
  return uint16_t(sign | h);
}

constexpr float bf16_to_f32(uint16_t b) { return std::bit_cast<float>(uint32_t(b) << 16); }

constexpr uint16_t f32_to_bf16(float f) {
  const uint32_t x = std::bit_cast<uint32_t>(f);
  if ((x & 0x7fffffff) > 0x7f800000) return uint16_t((x >> 16) | 0x40);  // NaN: quiet, keep payload
  return uint16_t((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

}  // namespace lowbit
