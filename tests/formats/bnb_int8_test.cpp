// bitsandbytes LLM.int8: the golden row-wise quantization and matmul cases (golden/bnb/int8, from
// bnb's CUDA kernels on an H100) reproduced on the CPU, and the edges.
#include "lowbit/formats/bnb_int8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>

#include "formats/bnb_golden_support.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"

namespace lowbit {
namespace {

using test::as_bytes_of;
using test::bytes_equal;

// Position of an f16 value on a line where adjacent finite values are adjacent integers.
int32_t f16_ordinal(uint16_t h) { return (h & 0x8000) ? -int32_t(h & 0x7fff) : int32_t(h); }

template <class T>
std::vector<T> vector_of(const TensorView& view) {
  const auto span = view.as<T>();
  return {span.begin(), span.end()};
}

class BnbGoldenInt8Vectorwise : public ::testing::TestWithParam<test::BnbGoldenCase> {};

TEST_P(BnbGoldenInt8Vectorwise, ReproducesEveryByte) {
  const nlohmann::json& entry = GetParam().entry;
  const safetensors::File file(test::golden_bnb_dir() / entry["file"].get<std::string>());
  const float threshold = std::stof(entry["threshold"].get<std::string>());
  const bnb::Int8RowwiseQuantized q = bnb::quantize_int8_rowwise(file.view("input"), threshold, "input");
  EXPECT_TRUE(bytes_equal(file.view("CB").bytes, as_bytes_of(q.cb))) << "CB";
  EXPECT_TRUE(bytes_equal(file.view("SCB").bytes, as_bytes_of(q.scb))) << "SCB";
  if (file.find("outlier_cols")) {
    EXPECT_EQ(q.outlier_cols, vector_of<int64_t>(file.view("outlier_cols")));
  } else {
    EXPECT_TRUE(q.outlier_cols.empty());
  }
  Tensor dequantized = bnb::dequantize_int8_rowwise(q);
  EXPECT_TRUE(bytes_equal(file.view("dequantized").bytes, dequantized.buffer.span())) << "dequantized";
}

INSTANTIATE_TEST_SUITE_P(BnbInt8Golden, BnbGoldenInt8Vectorwise,
                         ::testing::ValuesIn(test::bnb_golden_cases("bnb-int8-vectorwise")),
                         [](const auto& case_info) { return test::bnb_case_name(case_info.param); });

class BnbGoldenInt8Matmul : public ::testing::TestWithParam<test::BnbGoldenCase> {};

TEST_P(BnbGoldenInt8Matmul, MatchesBitsandbytes) {
  const nlohmann::json& entry = GetParam().entry;
  const safetensors::File file(test::golden_bnb_dir() / entry["file"].get<std::string>());
  const float threshold = std::stof(entry["threshold"].get<std::string>());

  const bnb::Int8RowwiseQuantized weight = bnb::quantize_int8_rowwise(file.view("W"), 0.0f, "W");
  ASSERT_TRUE(bytes_equal(file.view("CB").bytes, as_bytes_of(weight.cb))) << "CB";
  ASSERT_TRUE(bytes_equal(file.view("SCB").bytes, as_bytes_of(weight.scb))) << "SCB";

  const bnb::Int8MatmulResult result = bnb::llm_int8_matmul_detailed(file.view("X"), weight, threshold, "X");
  EXPECT_TRUE(bytes_equal(file.view("CA").bytes, as_bytes_of(result.activations.cb))) << "CA";
  EXPECT_TRUE(bytes_equal(file.view("SCA").bytes, as_bytes_of(result.activations.scb))) << "SCA";
  if (file.find("outlier_cols")) {
    EXPECT_EQ(result.activations.outlier_cols, vector_of<int64_t>(file.view("outlier_cols")));
  }
  EXPECT_TRUE(bytes_equal(file.view("acc_int32").bytes, as_bytes_of(result.acc))) << "acc_int32";
  EXPECT_TRUE(bytes_equal(file.view("output_int8_part").bytes, result.int8_part.buffer.span())) << "output_int8_part";

  // cuBLAS's fp16 addmm sums in an unspecified order: within one fp16 ulp (exact when T = 0).
  const auto expected = file.view("output").as<uint16_t>();
  const auto actual = result.output.view().as<uint16_t>();
  ASSERT_EQ(expected.size(), actual.size());
  int64_t off_by_one = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    const int32_t distance = std::abs(f16_ordinal(expected[i]) - f16_ordinal(actual[i]));
    ASSERT_LE(distance, threshold > 0.0f ? 1 : 0) << "output element " << i;
    off_by_one += distance;
  }
  RecordProperty("outputs_one_ulp_off", std::to_string(off_by_one));
  Tensor plain = bnb::llm_int8_matmul(file.view("X"), weight, threshold);
  EXPECT_TRUE(bytes_equal(result.output.buffer.span(), plain.buffer.span()));
}

INSTANTIATE_TEST_SUITE_P(BnbInt8Golden, BnbGoldenInt8Matmul,
                         ::testing::ValuesIn(test::bnb_golden_cases("bnb-llm-int8-matmul")),
                         [](const auto& case_info) { return test::bnb_case_name(case_info.param); });

TEST(BnbInt8, GoldenSetIsComplete) {
  EXPECT_EQ(test::bnb_golden_cases("bnb-int8-vectorwise").size(), 4u);
  EXPECT_EQ(test::bnb_golden_cases("bnb-llm-int8-matmul").size(), 2u);
}

Tensor make_f16(Shape shape, const std::vector<float>& values) {
  Tensor t(DType::f16, std::move(shape));
  for (size_t i = 0; i < values.size(); ++i) t.as<uint16_t>()[i] = f32_to_f16(values[i]);
  return t;
}

TEST(BnbInt8, ZeroRowAndOutliers) {
  // Row 0 is zero; column 1 holds an outlier in row 1.
  Tensor t = make_f16({2, 3}, {0.0f, 0.0f, 0.0f, 0.5f, 8.0f, -1.0f});
  const auto q = bnb::quantize_int8_rowwise(t.view(), 6.0f);
  EXPECT_EQ(q.scb, (std::vector<float>{0.0f, 1.0f}));
  EXPECT_EQ(q.outlier_cols, (std::vector<int64_t>{1}));
  EXPECT_EQ(q.cb, (std::vector<int8_t>{0, 0, 0, 64, 0, -127}));  // 63.5 rounds to even
  // A single row keeps its non-outlier codes and zeroes only the outlier itself.
  Tensor row = make_f16({3}, {0.5f, 8.0f, -1.0f});
  const auto r = bnb::quantize_int8_rowwise(row.view(), 6.0f);
  EXPECT_EQ(r.cb, (std::vector<int8_t>{64, 0, -127}));
  EXPECT_EQ(r.outlier_cols, (std::vector<int64_t>{1}));
}

TEST(BnbInt8, NonFiniteInputNamesTheTensor) {
  Tensor t = make_f16({2, 2}, {1.0f, 2.0f, NAN, 3.0f});
  try {
    (void)bnb::quantize_int8_rowwise(t.view(), 0.0f, "lm_head.weight");
    ADD_FAILURE() << "accepted NaN";
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, "lm_head.weight");
    EXPECT_NE(std::string(e.what()).find("row 1"), std::string::npos) << e.what();
  }
}

TEST(BnbInt8, RejectsMismatchedMatmulShapes) {
  Tensor w = make_f16({4, 8}, std::vector<float>(32, 0.5f));
  const auto weight = bnb::quantize_int8_rowwise(w.view());
  Tensor x = make_f16({2, 7}, std::vector<float>(14, 0.5f));
  EXPECT_THROW(bnb::llm_int8_matmul(x.view(), weight, 0.0f, "x"), Error);
  EXPECT_THROW(bnb::quantize_int8_rowwise(w.view(), -1.0f), Error);
}

}  // namespace
}  // namespace lowbit
