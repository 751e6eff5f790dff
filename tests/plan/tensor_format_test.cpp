// A plan's formats: the registry's FormatSpec, labels that tell every candidate apart, and back.
#include <gtest/gtest.h>

#include "lowbit/plan/tensor_format.h"

namespace lowbit {
namespace {

TEST(TensorFormat, NamesAndLabelsRoundTrip) {
  const FormatSpec fp4{.id = FormatId::fp4, .blocksize = 128, .double_quant = true};
  const FormatSpec nf4{.id = FormatId::nf4};
  EXPECT_EQ(format_name(fp4.id), "fp4");
  EXPECT_EQ(format_label(fp4), "fp4-b128-dq");
  EXPECT_EQ(format_name(format_spec(GgmlType::Q4_K).id), "q4_K");
  EXPECT_EQ(format_label(format_spec(GgmlType::BF16)), "bf16");
  for (const FormatSpec f : {fp4, nf4, format_spec(GgmlType::Q2_K), format_spec(GgmlType::IQ4_XS), FormatSpec{.id = FormatId::nf4, .blocksize = 256}})
    EXPECT_EQ(parse_format_label(format_label(f)), f) << format_label(f);
  EXPECT_EQ(parse_format_label("nf4"), nf4);  // blocksize 64, no double quant
  EXPECT_EQ(parse_format_label("Q6_K"), format_spec(GgmlType::Q6_K));
  for (const char* bad : {"nf4-b100", "nf4-b64-dqx", "fp4-", "nf5", "q9_K", "nf4-bx", "int8"}) EXPECT_FALSE(parse_format_label(bad)) << bad;
  EXPECT_TRUE(is_float_format(format_spec(GgmlType::BF16)));
  EXPECT_FALSE(is_float_format(format_spec(GgmlType::Q8_0)));
  EXPECT_FALSE(is_float_format(nf4));
  EXPECT_TRUE(is_bnb_4bit(fp4));
  EXPECT_FALSE(is_bnb_4bit(format_spec(GgmlType::Q4_K)));
}

}  // namespace
}  // namespace lowbit
