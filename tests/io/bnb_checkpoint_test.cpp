#include <gtest/gtest.h>

#include "lowbit/io/bnb_checkpoint.h"

namespace lowbit::bnb {
namespace {

// Expected strings are what CPython's repr() prints for the same doubles.
TEST(BnbCheckpoint, PythonFloatRepr) {
  EXPECT_EQ(python_float_repr(0.0123), "0.0123");
  EXPECT_EQ(python_float_repr(1e-5), "1e-05");
  EXPECT_EQ(python_float_repr(1.0), "1.0");
  EXPECT_EQ(python_float_repr(123.0), "123.0");
  EXPECT_EQ(python_float_repr(1e16), "1e+16");
  EXPECT_EQ(python_float_repr(1.5e-7), "1.5e-07");
  EXPECT_EQ(python_float_repr(0.0001), "0.0001");
  EXPECT_EQ(python_float_repr(0.00012345), "0.00012345");
  EXPECT_EQ(python_float_repr(12345678901234567.0), "1.2345678901234568e+16");
  EXPECT_EQ(python_float_repr(0.012345678912345678), "0.012345678912345679");
  EXPECT_EQ(python_float_repr(-0.5), "-0.5");
  EXPECT_EQ(python_float_repr(3.4028234663852886e38), "3.4028234663852886e+38");
  EXPECT_EQ(python_float_repr(0.0), "0.0");
  EXPECT_EQ(python_float_repr(double(0.013472557f)), "0.013472557067871094");
}

TEST(BnbCheckpoint, QuantStateJsonIsBitsandbytesBytes) {
  QuantStateJson s{.quant_type = "nf4", .blocksize = 64, .dtype = DType::bf16, .shape = {4096, 4096}};
  EXPECT_EQ(pack_quant_state(s), R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]})");
  s.nested_offset = 0.013472557f;
  const std::string packed = pack_quant_state(s);
  EXPECT_EQ(packed, R"({"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096], )"
                    R"("nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.013472557067871094})");
  const auto back = parse_quant_state(packed, {});
  EXPECT_EQ(back.shape, s.shape);
  EXPECT_EQ(back.dtype, DType::bf16);
  EXPECT_EQ(back.nested_offset, s.nested_offset);
  EXPECT_THROW(parse_quant_state(R"({"quant_type": "int4"})", {}), Error);
  EXPECT_THROW(parse_quant_state(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [1]})", {}), Error);
}

TEST(BnbCheckpoint, QuantizationConfigKeys) {
  const auto j = quantization_config({.format = FormatId::nf4, .double_quant = true, .skip_modules = {"lm_head"}});
  EXPECT_EQ(j["quant_method"], "bitsandbytes");
  EXPECT_EQ(j["load_in_4bit"], true);
  EXPECT_EQ(j["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(j["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(j["llm_int8_skip_modules"][0], "lm_head");
  const auto i8 = quantization_config({.format = FormatId::int8});
  EXPECT_EQ(i8["load_in_8bit"], true);
  EXPECT_TRUE(i8["llm_int8_skip_modules"].is_null());
}

}  // namespace
}  // namespace lowbit::bnb
