// f16 / bf16 <-> f32 checked exhaustively: every one of the 65,536 16-bit patterns, the midpoints
// between neighbours (ties must go to even) and the values one float32 ulp either side of them.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>

#include <immintrin.h>

#include <random>

#include "lowbit/core/half.h"

namespace lowbit {
namespace {

// f16 value computed independently, in double: sign * mantissa * 2^exponent.
double f16_value(uint16_t h) {
  const int sign = (h & 0x8000) ? -1 : 1;
  const int exp = (h >> 10) & 0x1f;
  const int mant = h & 0x3ff;
  if (exp == 0) return sign * std::ldexp(double(mant), -24);
  return sign * std::ldexp(double(1024 + mant), exp - 25);
}

bool is_f16_nan(uint16_t h) { return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0; }
bool is_bf16_nan(uint16_t b) { return (b & 0x7f80) == 0x7f80 && (b & 0x7f) != 0; }

TEST(Half, F16ToF32IsExactForAllValues) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = uint16_t(i);
    const float f = f16_to_f32(h);
    if (is_f16_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << i;
      EXPECT_EQ(std::signbit(f), bool(h & 0x8000)) << i;
    } else if ((h & 0x7fff) == 0x7c00) {
      EXPECT_TRUE(std::isinf(f)) << i;
      EXPECT_EQ(std::signbit(f), bool(h & 0x8000)) << i;
    } else {
      ASSERT_EQ(double(f), f16_value(h)) << i;
      ASSERT_EQ(std::signbit(f), bool(h & 0x8000)) << i;  // -0 stays -0
    }
  }
}

TEST(Half, F32ToF16RoundTripsAllValues) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = uint16_t(i);
    const uint16_t back = f32_to_f16(f16_to_f32(h));
    if (is_f16_nan(h))
      EXPECT_TRUE(is_f16_nan(back) && (back & 0x8000) == (h & 0x8000) && (back & 0x200)) << i;  // quiet NaN
    else
      ASSERT_EQ(back, h) << i;
  }
}

// Between each pair of neighbouring finite f16 values: the midpoint rounds to the even one, and
// anything off the midpoint to the nearer one.
TEST(Half, F32ToF16RoundsToNearestEven) {
  for (uint32_t i = 0; i < 0x7c00; ++i) {
    for (const uint16_t sign : {uint16_t(0), uint16_t(0x8000)}) {
      const auto lo = uint16_t(i | sign), hi = uint16_t((i + 1) | sign);
      const double mid_exact = (f16_value(lo) + f16_value(hi)) / 2;
      const auto mid = float(mid_exact);
      ASSERT_EQ(double(mid), mid_exact);  // f16 midpoints are representable in f32
      const uint16_t even = (lo & 1) ? hi : lo;
      ASSERT_EQ(f32_to_f16(mid), even) << i;
      ASSERT_EQ(f32_to_f16(std::nextafter(mid, 0.0f)), lo) << i;
      ASSERT_EQ(f32_to_f16(std::nextafter(mid, sign ? -INFINITY : INFINITY)), hi) << i;
    }
  }
}

TEST(Half, F32ToF16Specials) {
  EXPECT_EQ(f32_to_f16(65504.0f), 0x7bff);
  EXPECT_EQ(f32_to_f16(65519.996f), 0x7bff);  // below the midpoint to "65536"
  EXPECT_EQ(f32_to_f16(65520.0f), 0x7c00);     // the midpoint ties to even, which is Inf
  EXPECT_EQ(f32_to_f16(1e10f), 0x7c00);
  EXPECT_EQ(f32_to_f16(-1e10f), 0xfc00);
  EXPECT_EQ(f32_to_f16(INFINITY), 0x7c00);
  EXPECT_TRUE(is_f16_nan(f32_to_f16(NAN)));
  EXPECT_TRUE(is_f16_nan(f32_to_f16(std::bit_cast<float>(0x7f800001u))));  // payload only in low bits
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -25)), 0x0000);                   // half the smallest subnormal: even
  EXPECT_EQ(f32_to_f16(std::nextafter(std::ldexp(1.0f, -25), 1.0f)), 0x0001);
  EXPECT_EQ(f32_to_f16(std::ldexp(1.0f, -30)), 0x0000);
  EXPECT_EQ(f32_to_f16(-std::ldexp(1.0f, -30)), 0x8000);
  EXPECT_EQ(f32_to_f16(std::numeric_limits<float>::denorm_min()), 0x0000);
}

// The processor's own conversion (F16C, round to nearest even) as an independent oracle.
__attribute__((target("f16c"))) uint16_t hardware_f32_to_f16(float f) {
  return uint16_t(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

TEST(Half, F32ToF16MatchesHardwareOnRandomBitPatterns) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "no F16C on this processor";
  std::mt19937 rng(1234);
  for (int i = 0; i < 4'000'000; ++i) {
    const float f = std::bit_cast<float>(uint32_t(rng()));
    const uint16_t want = hardware_f32_to_f16(f);
    const uint16_t got = f32_to_f16(f);
    if (is_f16_nan(want))
      ASSERT_TRUE(is_f16_nan(got)) << std::bit_cast<uint32_t>(f);
    else
      ASSERT_EQ(got, want) << std::hex << std::bit_cast<uint32_t>(f);
  }
}

TEST(Half, Bf16ToF32IsExactForAllValues) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto b = uint16_t(i);
    const float f = bf16_to_f32(b);
    ASSERT_EQ(std::bit_cast<uint32_t>(f), uint32_t(b) << 16) << i;
    if (is_bf16_nan(b)) {
      ASSERT_TRUE(is_bf16_nan(f32_to_bf16(f))) << i;  // signalling NaNs come back quiet
    } else {
      ASSERT_EQ(f32_to_bf16(f), b) << i;
    }
  }
}

TEST(Half, F32ToBf16RoundsToNearestEven) {
  for (uint32_t i = 0; i < 0x7f80; ++i) {
    for (const uint32_t sign : {0u, 0x8000u}) {
      const auto lo = uint16_t(i | sign), hi = uint16_t((i + 1) | sign);
      const uint32_t mid_bits = (uint32_t(lo) << 16) | 0x8000;  // halfway between lo and hi
      const uint16_t even = (lo & 1) ? hi : lo;
      ASSERT_EQ(f32_to_bf16(std::bit_cast<float>(mid_bits)), even) << i;
      ASSERT_EQ(f32_to_bf16(std::bit_cast<float>(mid_bits - 1)), lo) << i;
      ASSERT_EQ(f32_to_bf16(std::bit_cast<float>(mid_bits + 1)), hi) << i;
    }
  }
  EXPECT_EQ(f32_to_bf16(INFINITY), 0x7f80);
  EXPECT_EQ(f32_to_bf16(-INFINITY), 0xff80);
  EXPECT_EQ(f32_to_bf16(std::numeric_limits<float>::max()), 0x7f80);  // rounds up to Inf
  EXPECT_TRUE(is_bf16_nan(f32_to_bf16(std::bit_cast<float>(0x7f800001u))));  // NaN never becomes Inf
  EXPECT_TRUE(is_bf16_nan(f32_to_bf16(std::bit_cast<float>(0xff800001u))));
}

}  // namespace
}  // namespace lowbit
