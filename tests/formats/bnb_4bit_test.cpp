// bitsandbytes 4-bit: every golden case reproduced byte for byte (golden/bnb/4bit, from bnb's CUDA
// kernels on an H100), the embedded rcp.approx table checked against its measurement, and the edges.
#include "lowbit/formats/bnb_4bit.h"

#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <random>

#include "formats/bnb_golden_support.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/gpu_rcp_approx.h"

namespace lowbit {
namespace {

using bnb::QuantType;
using test::as_bytes_of;
using test::bytes_equal;

class BnbGolden4bit : public ::testing::TestWithParam<test::BnbGoldenCase> {};

bnb::Bnb4bitOptions options_of(const nlohmann::json& entry, const safetensors::File& file) {
  bnb::Bnb4bitOptions options;
  options.quant_type = entry["quant_type"] == "nf4" ? QuantType::nf4 : QuantType::fp4;
  options.blocksize = std::stoll(entry["blocksize"].get<std::string>());
  options.double_quant = entry["double_quant"] == "true";
  // torch's GPU mean is not reproducible: take bitsandbytes' offset from the file.
  if (options.double_quant) options.nested_offset = file.view("nested_offset").as<float>()[0];
  return options;
}

TEST_P(BnbGolden4bit, ReproducesEveryByte) {
  const nlohmann::json& entry = GetParam().entry;
  const safetensors::File file(test::golden_bnb_dir() / entry["file"].get<std::string>());
  const TensorView input = file.view("input");
  const bnb::Bnb4bitOptions options = options_of(entry, file);
  ASSERT_EQ(dtype_from_name(entry["dtype"].get<std::string>()), input.dtype);

  for (bool reference : {true, false}) {
    SCOPED_TRACE(reference ? "scalar reference" : "dispatched (fast) path");
    const bnb::Bnb4bitQuantized q =
        reference ? bnb::quantize_4bit_reference(input, options, "input") : bnb::quantize_4bit(input, options, "input");
    EXPECT_TRUE(bytes_equal(file.view("packed").bytes, as_bytes_of(q.packed))) << "packed";
    EXPECT_TRUE(bytes_equal(file.view("quant_map").bytes, as_bytes_of(q.state.code))) << "quant_map";
    EXPECT_EQ(q.state.dtype, input.dtype);
    EXPECT_EQ(q.state.shape, input.shape);
    EXPECT_TRUE(bytes_equal(file.view("absmax").bytes, as_bytes_of(q.state.block_scales()))) << "absmax";
    if (!options.double_quant) {
      EXPECT_FALSE(q.state.nested.has_value());
      continue;
    }
    ASSERT_TRUE(q.state.nested.has_value());
    const bnb::NestedAbsmax& nested = *q.state.nested;
    EXPECT_TRUE(q.state.absmax.empty());
    EXPECT_TRUE(bytes_equal(file.view("absmax_quantized").bytes, as_bytes_of(nested.codes))) << "absmax_quantized";
    EXPECT_TRUE(bytes_equal(file.view("nested_absmax").bytes, as_bytes_of(nested.nested_absmax))) << "nested_absmax";
    EXPECT_TRUE(bytes_equal(file.view("nested_quant_map").bytes, as_bytes_of(nested.code))) << "nested_quant_map";
    EXPECT_EQ(nested.blocksize, 256);
  }

  if (options.double_quant) {
    const std::vector<float> raw = bnb::block_absmax(input, options.blocksize, "input");
    EXPECT_TRUE(bytes_equal(file.view("absmax_raw").bytes, as_bytes_of(raw))) << "absmax_raw";
    // Where the manifest says bitsandbytes' offset is the float32 of the exact mean, so is ours.
    if (entry["checks"].value("offset_equals_f32_of_exact_mean", false)) {
      EXPECT_EQ(bnb::mean_to_nearest_float(raw), file.view("nested_offset").as<float>()[0]);
    }
    // Quantizing the absmax alone with the given offset gives the same codes.
    const bnb::NestedAbsmax alone = bnb::quantize_absmax_nested(raw, file.view("nested_offset").as<float>()[0]);
    EXPECT_TRUE(bytes_equal(file.view("absmax_quantized").bytes, as_bytes_of(alone.codes)));
  }

  // Dequantize the golden bytes from a state assembled from the golden tensors alone.
  bnb::Bnb4bitState state;
  state.quant_type = options.quant_type;
  state.blocksize = options.blocksize;
  state.dtype = input.dtype;
  state.shape = input.shape;
  state.code = bnb::code_map(options.quant_type);
  if (options.double_quant) {
    bnb::NestedAbsmax nested;
    const auto codes = file.view("absmax_quantized").as<uint8_t>();
    const auto nested_absmax = file.view("nested_absmax").as<float>();
    nested.codes.assign(codes.begin(), codes.end());
    nested.nested_absmax.assign(nested_absmax.begin(), nested_absmax.end());
    nested.offset = file.view("nested_offset").as<float>()[0];
    nested.code = bnb::dynamic_map_signed();
    state.nested = std::move(nested);
  } else {
    const auto absmax = file.view("absmax").as<float>();
    state.absmax.assign(absmax.begin(), absmax.end());
  }
  Tensor out = bnb::dequantize_4bit(file.view("packed").as<uint8_t>(), state, "packed");
  const TensorView expected = file.view("dequantized");
  EXPECT_EQ(out.dtype, expected.dtype);
  EXPECT_EQ(out.shape, expected.shape);
  EXPECT_TRUE(bytes_equal(expected.bytes, out.buffer.span())) << "dequantized";
}

INSTANTIATE_TEST_SUITE_P(Bnb4bitGolden, BnbGolden4bit, ::testing::ValuesIn(test::bnb_golden_cases("bnb-4bit")),
                         [](const auto& case_info) { return test::bnb_case_name(case_info.param); });

TEST(Bnb4bit, GoldenSetIsComplete) { EXPECT_EQ(test::bnb_golden_cases("bnb-4bit").size(), 153u); }

TEST(BnbRcpApprox, EmbeddedTableMatchesTheMeasurement) {
  const safetensors::File file(test::golden_bnb_dir() / "rcp_approx_delta.safetensors");
  const auto measured = file.view("rcp_delta_2bit").as<uint8_t>();
  ASSERT_EQ(measured.size(), size_t(1) << 21);
  int64_t mismatches = 0;
  for (uint32_t m = 0; m < (1u << 23); ++m) {
    const int expected = int((measured[m >> 2] >> (2 * (m & 3))) & 3) - 1;
    if (gpu::rcp_approx_delta(m) != expected && ++mismatches <= 5) ADD_FAILURE() << "mantissa " << m;
  }
  EXPECT_EQ(mismatches, 0);
}

TEST(BnbRcpApprox, IsCorrectlyRoundedReciprocalPlusDelta) {
  std::mt19937 rng(7);
  for (int exponent : {-100, -20, -1, 0, 5, 60, 120}) {
    for (int i = 0; i < 2000; ++i) {
      const uint32_t m = rng() & 0x7fffff;
      const float x = std::bit_cast<float>(uint32_t(exponent + 127) << 23 | m);
      const uint32_t expected = std::bit_cast<uint32_t>(1.0f / x) + uint32_t(gpu::rcp_approx_delta(m));
      ASSERT_EQ(std::bit_cast<uint32_t>(gpu::rcp_approx_ftz(x)), expected) << x;
      ASSERT_EQ(std::bit_cast<uint32_t>(gpu::rcp_approx_ftz(-x)), expected | 0x80000000u) << x;
    }
  }
  EXPECT_EQ(gpu::rcp_approx_ftz(0.0f), INFINITY);
  EXPECT_EQ(gpu::rcp_approx_ftz(1e-40f), INFINITY);  // subnormal input counts as 0
  EXPECT_EQ(gpu::rcp_approx_ftz(INFINITY), 0.0f);
  EXPECT_EQ(gpu::rcp_approx_ftz(3e38f), 0.0f);  // reciprocal below the normal range: flushed
  EXPECT_EQ(gpu::rcp_approx_ftz(2.0f), 0.5f);
  EXPECT_TRUE(std::isnan(gpu::rcp_approx_ftz(NAN)));
}

Tensor make_f32(const std::vector<float>& values) {
  Tensor t(DType::f32, {int64_t(values.size())});
  std::copy(values.begin(), values.end(), t.as<float>().begin());
  return t;
}

TEST(Bnb4bit, OddLengthPadsTheLastLowNibble) {
  Tensor t = make_f32({0.5f, -1.0f, 0.25f});
  for (QuantType type : {QuantType::nf4, QuantType::fp4}) {
    const auto q = bnb::quantize_4bit(t.view(), {.quant_type = type, .blocksize = 32});
    ASSERT_EQ(q.packed.size(), 2u);
    EXPECT_EQ(q.packed[1] & 0x0f, type == QuantType::nf4 ? 7 : 0);  // 0.0's code
    Tensor back = bnb::dequantize_4bit(q.packed, q.state);
    EXPECT_EQ(back.as<float>()[1], -1.0f);
    EXPECT_EQ(back.shape, t.shape);
  }
}

TEST(Bnb4bit, AllZeroBlockHasScaleZeroAndCodeZero) {
  std::vector<float> values(128, 0.0f);
  values[100] = 0.3f;  // the second block is not zero
  Tensor t = make_f32(values);
  for (QuantType type : {QuantType::nf4, QuantType::fp4}) {
    const auto q = bnb::quantize_4bit(t.view(), {.quant_type = type, .blocksize = 64});
    EXPECT_EQ(q.state.absmax[0], 0.0f);
    for (int i = 0; i < 32; ++i) EXPECT_EQ(q.packed[size_t(i)], 0) << i;  // 0 * Inf = NaN -> code 0
    Tensor back = bnb::dequantize_4bit(q.packed, q.state);
    // NF4 code 0 is -1.0, so the block comes back as -0.0; FP4 code 0 is +0.0.
    EXPECT_EQ(std::signbit(back.as<float>()[0]), type == QuantType::nf4);
    EXPECT_EQ(back.as<float>()[0], 0.0f);
  }
}

TEST(Bnb4bit, NonFiniteInputNamesTheTensor) {
  for (float bad : {NAN, INFINITY, -INFINITY}) {
    std::vector<float> values(100, 0.1f);
    values[70] = bad;
    Tensor t = make_f32(values);
    try {
      (void)bnb::quantize_4bit(t.view(), {.blocksize = 64}, "model.layers.3.mlp.up_proj.weight");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_EQ(e.context().tensor, "model.layers.3.mlp.up_proj.weight");
      EXPECT_NE(std::string(e.what()).find("element 70"), std::string::npos) << e.what();
    }
  }
}

TEST(Bnb4bit, RejectsUnsupportedBlocksizes) {
  Tensor t = make_f32(std::vector<float>(64, 1.0f));
  for (int64_t blocksize : {0, 16, 48, 100, 8192, -64}) {
    try {
      (void)bnb::quantize_4bit(t.view(), {.blocksize = blocksize}, "w");
      ADD_FAILURE() << "accepted blocksize " << blocksize;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("blocksize"), std::string::npos) << e.what();
      EXPECT_EQ(e.context().tensor, "w");
    }
  }
  for (int64_t blocksize : bnb::kBlocksizes4bit) EXPECT_NO_THROW(bnb::quantize_4bit(t.view(), {.blocksize = blocksize}));
}

TEST(Bnb4bit, RejectsInconsistentState) {
  Tensor t = make_f32(std::vector<float>(100, 1.0f));
  const auto q = bnb::quantize_4bit(t.view(), {.blocksize = 64});
  std::vector<uint8_t> short_packed(q.packed.begin(), q.packed.end() - 1);
  EXPECT_THROW(bnb::dequantize_4bit(short_packed, q.state, "w"), Error);
  auto state = q.state;
  state.absmax.pop_back();
  EXPECT_THROW(bnb::dequantize_4bit(q.packed, state, "w"), Error);
  EXPECT_THROW(bnb::dequantize_4bit(q.packed, q.state, DType::i8, "w"), Error);
}

TEST(Bnb4bit, DequantizesToANamedDtype) {
  std::vector<float> values(300);
  for (size_t i = 0; i < values.size(); ++i) values[i] = std::sin(float(i)) * 0.1f;
  Tensor bf(DType::bf16, {3, 100});
  for (size_t i = 0; i < values.size(); ++i) bf.as<uint16_t>()[i] = f32_to_bf16(values[i]);
  for (bool dq : {false, true}) {
    const auto q = bnb::quantize_4bit(bf.view(), {.blocksize = 64, .double_quant = dq});
    Tensor as_f32 = bnb::dequantize_4bit(q.packed, q.state, DType::f32);
    Tensor as_bf16 = bnb::dequantize_4bit(q.packed, q.state);
    EXPECT_EQ(as_bf16.dtype, DType::bf16);
    EXPECT_EQ(as_f32.shape, (Shape{3, 100}));
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(as_bf16.as<uint16_t>()[i], f32_to_bf16(as_f32.as<float>()[i]));
      EXPECT_NEAR(as_f32.as<float>()[i], values[i], 0.02f);
    }
  }
}

// The fast path against the scalar reference on data that stresses every decision: random
// magnitudes over many octaves, exact codebook points, ties, zeros, subnormals and odd lengths.
TEST(Bnb4bit, FastPathMatchesReferenceOnRandomData) {
  std::mt19937 rng(1234);
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> octave(-30, 10);
  const float specials[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 0.5f, -0.5f, 1.0f / 3.0f, 2.0f / 3.0f, 1.0f / 384.0f};
  for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
    for (int64_t count : {1, 2, 33, 4097, 70001}) {
      Tensor t(dtype, {count});
      std::vector<float> values(static_cast<size_t>(count));
      for (auto& v : values) v = (rng() % 16 == 0) ? specials[rng() % std::size(specials)] : std::ldexp(unit(rng), octave(rng));
      convert_from_f32(values.data(), dtype, t.buffer.data(), values.size());
      for (int64_t blocksize : bnb::kBlocksizes4bit)
        for (QuantType type : {QuantType::nf4, QuantType::fp4}) {
          const bnb::Bnb4bitOptions options{.quant_type = type, .blocksize = blocksize, .double_quant = true};
          const auto fast = bnb::quantize_4bit(t.view(), options);
          const auto reference = bnb::quantize_4bit_reference(t.view(), options);
          ASSERT_EQ(fast.packed, reference.packed) << dtype_name(dtype) << " " << count << " " << blocksize;
          ASSERT_EQ(fast.state.nested->codes, reference.state.nested->codes);
          ASSERT_EQ(fast.state.block_scales(), reference.state.block_scales());
        }
    }
  }
}

}  // namespace
}  // namespace lowbit
