// A plan's formats: the reference tools' names, labels that tell every candidate apart, and back.
#include <gtest/gtest.h>

#include "lowbit/plan/tensor_format.h"

namespace lowbit {
namespace {

TEST(TensorFormat, NamesAndLabelsRoundTrip) {
  const Bnb4bitFormat fp4{.quant_type = bnb::QuantType::fp4, .blocksize = 128, .double_quant = true};
  EXPECT_EQ(format_name(fp4), "fp4");
  EXPECT_EQ(format_label(fp4), "fp4-b128-dq");
  EXPECT_EQ(format_name(GgmlType::Q4_K), "q4_K");
  EXPECT_EQ(format_label(GgmlType::BF16), "bf16");
  for (const TensorFormat f : {TensorFormat(fp4), TensorFormat(Bnb4bitFormat{}), TensorFormat(GgmlType::Q2_K), TensorFormat(GgmlType::IQ4_XS),
                               TensorFormat(Bnb4bitFormat{.blocksize = 256})})
    EXPECT_EQ(parse_format_label(format_label(f)), f) << format_label(f);
  EXPECT_EQ(parse_format_label("nf4"), TensorFormat(Bnb4bitFormat{}));  // blocksize 64, no double quant
  EXPECT_EQ(parse_format_label("Q6_K"), TensorFormat(GgmlType::Q6_K));
  for (const char* bad : {"nf4-b100", "nf4-b64-dqx", "fp4-", "nf5", "q9_K", "nf4-bx"}) EXPECT_FALSE(parse_format_label(bad)) << bad;
  EXPECT_TRUE(is_float_format(GgmlType::BF16));
  EXPECT_FALSE(is_float_format(GgmlType::Q8_0));
  EXPECT_FALSE(is_float_format(Bnb4bitFormat{}));
}

}  // namespace
}  // namespace lowbit
