// The scans behind lowbit's NaN/Inf policy: which values a destination cannot hold, where the block
// scales of each ggml type sit, and the bitsandbytes codecs' messages (NaN or Inf, row and column).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <functional>
#include <span>
#include <cstring>
#include <limits>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/value_check.h"

namespace lowbit {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(ValueCheck, CountsNaNAndInfAtEveryPositionOfVectorsAndTails) {
  for (int64_t n = 1; n <= 70; ++n)
    for (int64_t at = 0; at < n; at += 7) {
      std::vector<float> x(size_t(n), 1.5f);
      x[size_t(at)] = at % 2 ? kNaN : -kInf;
      if (n > at + 3) x[size_t(n - 1)] = kInf;
      const ValueScan scan = scan_values(x.data(), n, ValueRange::finite);
      EXPECT_EQ(scan.count, n > at + 3 ? 2 : 1) << n << " " << at;
      EXPECT_EQ(scan.first, at);
      EXPECT_EQ(scan.problem, at % 2 ? ValueProblem::nan : ValueProblem::inf);
    }
  const std::vector<float> fine(1000, 3.0e38f);
  EXPECT_FALSE(scan_values(fine.data(), 1000, ValueRange::finite));
}

TEST(ValueCheck, F16AndBf16RangesEndWhereRoundingReachesInf) {
  // 65519 rounds to 65504; 65520 is the tie that rounds (to even) up to Inf.
  const float f16_edge[] = {65519.0f, -65519.0f, 65520.0f, -99840.0f};
  const ValueScan f16 = scan_values(f16_edge, 4, ValueRange::f16);
  EXPECT_EQ(f16.count, 2);
  EXPECT_EQ(f16.first, 2);
  EXPECT_EQ(f16.problem, ValueProblem::beyond_f16);
  EXPECT_TRUE(std::isinf(f16_to_f32(f32_to_f16(65520.0f))));
  EXPECT_FALSE(std::isinf(f16_to_f32(f32_to_f16(65519.0f))));
  EXPECT_NE(describe(f16.problem, f16.first_value).find("65520 is beyond the f16 range"), std::string::npos);

  const float below = std::bit_cast<float>(0x7f7f7fffu), tie = std::bit_cast<float>(0x7f7f8000u);
  EXPECT_FALSE(std::isinf(bf16_to_f32(f32_to_bf16(below))));
  EXPECT_TRUE(std::isinf(bf16_to_f32(f32_to_bf16(tie))));
  const float bf16_edge[] = {below, tie};
  EXPECT_EQ(scan_values(bf16_edge, 2, ValueRange::bf16).first, 1);
  EXPECT_FALSE(scan_values(bf16_edge, 2, ValueRange::finite));
}

TEST(ValueCheck, StoredFloatsOfEachType) {
  const uint16_t f16[] = {0x3c00, 0x7bff, 0xfc00, 0x7e00};  // 1, 65504, -Inf, NaN
  const ValueScan h = scan_stored_values(GgmlType::F16, std::as_bytes(std::span(f16)));
  EXPECT_EQ(h.count, 2);
  EXPECT_EQ(h.first, 2);
  EXPECT_EQ(h.problem, ValueProblem::inf);
  const uint16_t bf16[] = {0x3f80, 0x7fc0};  // 1, NaN
  EXPECT_EQ(scan_stored_values(GgmlType::BF16, std::as_bytes(std::span(bf16))).first, 1);
  std::vector<float> f32(5000, 2.0f);
  f32[4500] = kNaN;
  const ValueScan f = scan_stored_values(GgmlType::F32, std::as_bytes(std::span(f32)));
  EXPECT_EQ(f.first, 4500);
  EXPECT_EQ(f.problem, ValueProblem::nan);
}

// A quantized row of `type` whose block `block` gets the f16 bits `bits` at byte `offset`.
std::vector<std::byte> row_with_scale(GgmlType type, int blocks, int block, size_t offset, uint16_t bits) {
  const int64_t cols = int64_t(blocks) * ggml_type_info(type).block_elements;
  std::vector<float> x(static_cast<size_t>(cols));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(float(i));
  std::vector<std::byte> row(ggml_row_bytes(type, cols));
  quantize_rows(type, x.data(), 1, cols, nullptr, row.data());
  EXPECT_FALSE(scan_block_scales(type, row)) << ggml_type_name(type);
  std::memcpy(row.data() + size_t(block) * ggml_type_info(type).block_bytes + offset, &bits, 2);
  return row;
}

TEST(ValueCheck, BlockScalesOfEveryTypeLowbitWrites) {
  struct Case { GgmlType type; size_t offset; std::string_view field; };
  const Case cases[] = {{GgmlType::Q4_0, 0, "d"},   {GgmlType::Q4_1, 2, "m"},    {GgmlType::Q5_0, 0, "d"},
                        {GgmlType::Q5_1, 0, "d"},   {GgmlType::Q8_0, 0, "d"},    {GgmlType::Q2_K, 82, "dmin"},
                        {GgmlType::Q3_K, 108, "d"}, {GgmlType::Q4_K, 2, "dmin"}, {GgmlType::Q5_K, 0, "d"},
                        {GgmlType::Q6_K, 208, "d"}, {GgmlType::IQ4_NL, 0, "d"},  {GgmlType::IQ4_XS, 0, "d"}};
  for (const auto& c : cases) {
    ASSERT_TRUE(has_block_scales(c.type));
    const auto row = row_with_scale(c.type, 3, 2, c.offset, 0x7c00);
    const ScaleScan scan = scan_block_scales(c.type, row);
    EXPECT_EQ(scan.count, 1) << ggml_type_name(c.type);
    EXPECT_EQ(scan.first, 2) << ggml_type_name(c.type);
    EXPECT_EQ(scan.field, c.field) << ggml_type_name(c.type);
    EXPECT_TRUE(std::isinf(scan.first_value));
  }
}

TEST(ValueCheck, InfAndHugeWeightsGiveNonFiniteGgmlScales) {
  // What the pipeline's output validation exists for: ggml's quantizers write these scales.
  std::vector<float> x(256, 0.25f);
  x[7] = 3.4e38f;
  std::vector<std::byte> q4k(ggml_row_bytes(GgmlType::Q4_K, 256)), q8(ggml_row_bytes(GgmlType::Q8_0, 256));
  quantize_rows(GgmlType::Q4_K, x.data(), 1, 256, nullptr, q4k.data());
  quantize_rows(GgmlType::Q8_0, x.data(), 1, 256, nullptr, q8.data());
  EXPECT_TRUE(scan_block_scales(GgmlType::Q4_K, q4k));
  const ScaleScan s8 = scan_block_scales(GgmlType::Q8_0, q8);
  EXPECT_EQ(s8.first, 0);
  EXPECT_EQ(s8.count, 1);
}

TEST(ValueCheck, BnbCodecsSayNaNOrInfAndWhere) {
  std::vector<float> w(4 * 64, 0.5f);
  w[2 * 64 + 3] = kNaN;
  const auto nan_view = TensorView::make(DType::f32, {4, 64}, std::as_bytes(std::span(w)));
  const auto nf4 = message_of([&] { bnb::quantize_4bit(nan_view, {}, "w"); });
  EXPECT_NE(nf4.find("nf4 quantization: NaN at row 2, column 3"), std::string::npos) << nf4;
  w[2 * 64 + 3] = -kInf;
  const auto int8 = message_of([&] { bnb::quantize_int8_rowwise(nan_view, 0.0f, "w"); });
  EXPECT_NE(int8.find("-Inf at row 2, column 3"), std::string::npos) << int8;
}

}  // namespace
}  // namespace lowbit
