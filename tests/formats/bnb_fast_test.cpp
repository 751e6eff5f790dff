// The CPU backend's (AVX-512) bitsandbytes kernels against their scalar references on random data: 4-bit
// dequantization (every output dtype, block size, odd lengths, double quant, odd scales, the
// streaming-store path of large outputs) and the int8 row-wise codec both ways. On a CPU without
// AVX-512 both sides are the reference and the tests pass trivially.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <random>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"

namespace lowbit {
namespace {

using bnb::QuantType;

bool same_bytes(const Tensor& a, const Tensor& b) {
  return a.buffer.size() == b.buffer.size() && std::memcmp(a.buffer.data(), b.buffer.data(), a.buffer.size()) == 0;
}

// Values over many octaves with zeros, subnormals and exact codebook points mixed in.
std::vector<float> random_values(std::mt19937& rng, size_t count) {
  std::uniform_real_distribution<float> unit(-1.0f, 1.0f);
  std::uniform_int_distribution<int> octave(-30, 10);
  const float specials[] = {0.0f, -0.0f, 1e-40f, -1e-40f, 0.5f, -0.5f, 1.0f / 3.0f, 127.0f, -1.0f / 384.0f};
  std::vector<float> values(count);
  for (auto& v : values) v = (rng() % 16 == 0) ? specials[rng() % std::size(specials)] : std::ldexp(unit(rng), octave(rng));
  return values;
}

Tensor tensor_of(const std::vector<float>& values, DType dtype, Shape shape) {
  Tensor t(dtype, std::move(shape));
  convert_from_f32(values.data(), dtype, t.buffer.data(), values.size());
  return t;
}

TEST(BnbFast, Dequantize4bitMatchesReference) {
  std::mt19937 rng(99);
  for (int64_t count : {2, 33, 4097, 70001}) {
    const Tensor input = tensor_of(random_values(rng, size_t(count)), DType::f32, {count});
    for (int64_t blocksize : bnb::kBlocksizes4bit)
      for (QuantType type : {QuantType::nf4, QuantType::fp4})
        for (bool double_quant : {false, true}) {
          const auto q = bnb::quantize_4bit(input.view(), {.quant_type = type, .blocksize = blocksize, .double_quant = double_quant});
          for (DType out : {DType::f32, DType::f16, DType::bf16}) {
            const Tensor fast = bnb::dequantize_4bit(q.packed, q.state, out);
            const Tensor reference = bnb::dequantize_4bit_reference(q.packed, q.state, out);
            ASSERT_TRUE(same_bytes(fast, reference)) << count << " " << blocksize << " " << bnb::quant_type_name(type)
                                                     << " dq " << double_quant << " " << dtype_name(out);
          }
        }
  }
}

// Scales a quantizer never produces but a state read from a file may hold: subnormal (flushed),
// huge (f16 and bf16 overflow to Inf), Inf and NaN (NaN outputs, quieted).
TEST(BnbFast, Dequantize4bitMatchesReferenceOnOddScales) {
  std::mt19937 rng(5);
  bnb::Bnb4bitState state;
  state.blocksize = 64;
  state.shape = {64 * 8};
  state.absmax = {1e-40f, 3e38f, 7e4f, INFINITY, -INFINITY, NAN, -2.5f, 0.0f};
  std::vector<uint8_t> packed(size_t(state.packed_bytes()));
  for (auto& byte : packed) byte = uint8_t(rng());
  for (QuantType type : {QuantType::nf4, QuantType::fp4})
    for (DType out : {DType::f32, DType::f16, DType::bf16}) {
      state.quant_type = type;
      ASSERT_TRUE(same_bytes(bnb::dequantize_4bit(packed, state, out), bnb::dequantize_4bit_reference(packed, state, out)))
          << bnb::quant_type_name(type) << " " << dtype_name(out);
    }
}

// Outputs of 16 MiB and more are written with non-temporal stores.
TEST(BnbFast, Dequantize4bitStreamingMatchesReference) {
  std::mt19937 rng(11);
  const int64_t rows = 1024, cols = 8256;  // 17 MB of bf16
  const Tensor input = tensor_of(random_values(rng, size_t(rows * cols)), DType::bf16, {rows, cols});
  for (bool double_quant : {false, true}) {
    const auto q = bnb::quantize_4bit(input.view(), {.quant_type = QuantType::nf4, .blocksize = 64, .double_quant = double_quant});
    EXPECT_TRUE(same_bytes(bnb::dequantize_4bit(q.packed, q.state, DType::bf16),
                           bnb::dequantize_4bit_reference(q.packed, q.state, DType::bf16)));
    Tensor into(DType::bf16, {rows, cols});
    bnb::dequantize_4bit_into(q.packed, q.state, DType::bf16, into.buffer.span());
    EXPECT_TRUE(same_bytes(into, bnb::dequantize_4bit_reference(q.packed, q.state, DType::bf16)));
  }
}

TEST(BnbFast, Dequantize4bitIntoChecksTheBufferSize) {
  const Tensor input = tensor_of(std::vector<float>(128, 0.5f), DType::f32, {128});
  const auto q = bnb::quantize_4bit(input.view(), {});
  std::vector<std::byte> small(128 * 2 - 1);
  EXPECT_THROW(bnb::dequantize_4bit_into(q.packed, q.state, DType::bf16, small, "w"), Error);
}

// Double quant's 8-bit codes (quantize_absmax_nested uses the fast kernel for both quantize paths).
TEST(BnbFast, QuantizeDynamic8bitMatchesReference) {
  const bnb::detail::QuantizeDynamic8bitFn fast = cpu::cpu_kernels(cpu::best_cpu_target()).bnb_quantize_dynamic_8bit;
  if (!fast) GTEST_SKIP() << "no fast kernel on this CPU";
  std::mt19937 rng(17);
  std::uniform_real_distribution<float> unit(-1.2f, 1.2f);
  const auto& map = bnb::dynamic_map_signed();
  std::vector<float> values(4099);
  for (size_t i = 0; i < values.size(); ++i) {
    const float neighbour = map[rng() % 255];
    switch (i % 5) {
      case 0: values[i] = neighbour; break;                                        // a map point
      case 1: values[i] = (neighbour + map[(rng() % 254) + 1]) * 0.5f; break;      // near a midpoint
      case 2: values[i] = std::nextafter(neighbour, 2.0f); break;                  // just above
      case 3: values[i] = i % 97 == 3 ? NAN : unit(rng) * 1e-30f; break;           // tiny, subnormal after scaling
      default: values[i] = unit(rng);
    }
  }
  for (float scale : {1.0f, 0.75f, 3.0f, 1e-10f}) {
    std::vector<uint8_t> fast_codes(values.size()), reference_codes(values.size());
    for (int64_t count : {int64_t(values.size()), int64_t(5)}) {
      fast(values.data(), count, scale, map, fast_codes.data());
      bnb::detail::quantize_dynamic_8bit_reference(values.data(), count, scale, map, reference_codes.data());
      ASSERT_EQ(fast_codes, reference_codes) << scale << " " << count;
    }
  }
}

TEST(BnbFast, QuantizeInt8MatchesReference) {
  std::mt19937 rng(3);
  for (int64_t cols : {1, 15, 16, 17, 33, 100, 1000})
    for (DType dtype : {DType::f32, DType::f16, DType::bf16}) {
      const int64_t rows = 7;
      std::vector<float> values = random_values(rng, size_t(rows * cols));
      std::fill(values.begin() + 2 * cols, values.begin() + 3 * cols, 0.0f);  // a zero row: scale +Inf
      for (int64_t c = 0; c < cols; ++c) values[size_t(4 * cols + c)] = c % 2 ? 1e-40f : 1.5e-38f;  // a tiny row
      const Tensor input = tensor_of(values, dtype, {rows, cols});
      const auto fast = bnb::quantize_int8_rowwise(input.view(), 0.0f);
      const auto reference = bnb::quantize_int8_rowwise_reference(input.view(), 0.0f);
      ASSERT_EQ(fast.cb, reference.cb) << cols << " " << dtype_name(dtype);
      ASSERT_EQ(fast.scb, reference.scb) << cols << " " << dtype_name(dtype);
      ASSERT_EQ(fast.rows, rows);
      ASSERT_EQ(fast.cols, cols);
    }
}

TEST(BnbFast, QuantizeInt8ReportsTheFirstNonFiniteValue) {
  std::vector<float> values(40 * 33, 0.25f);
  values[size_t(31 * 33 + 20)] = INFINITY;
  values[size_t(7 * 33 + 5)] = NAN;  // the first one: row 7, column 5
  const Tensor input = tensor_of(values, DType::bf16, {40, 33});
  try {
    (void)bnb::quantize_int8_rowwise(input.view(), 0.0f, "w");
    ADD_FAILURE() << "accepted NaN";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("row 7, column 5"), std::string::npos) << e.what();
    EXPECT_EQ(e.context().tensor, "w");
  }
}

TEST(BnbFast, DequantizeInt8MatchesReference) {
  std::mt19937 rng(8);
  for (int64_t cols : {1, 16, 31, 32, 33, 100, 4096}) {
    bnb::Int8RowwiseQuantized q;
    q.rows = 9;
    q.cols = cols;
    q.cb.resize(size_t(q.rows * cols));
    for (auto& code : q.cb) code = int8_t(rng());
    q.scb = {0.0f, 1e-40f, 3e38f, 1.0f, 0.02f, 7e4f, INFINITY, NAN, 1e-3f};
    for (DType out : {DType::f32, DType::f16, DType::bf16})
      ASSERT_TRUE(same_bytes(bnb::dequantize_int8_rowwise(q, out), bnb::dequantize_int8_rowwise_reference(q, out)))
          << cols << " " << dtype_name(out);
  }
}

TEST(BnbFast, DequantizeInt8StreamingMatchesReference) {
  std::mt19937 rng(21);
  const int64_t rows = 512, cols = 16384;  // 32 MB of f32, 16 MB of bf16
  const Tensor input = tensor_of(random_values(rng, size_t(rows * cols)), DType::bf16, {rows, cols});
  const auto q = bnb::quantize_int8_rowwise(input.view(), 0.0f);
  for (DType out : {DType::f32, DType::bf16}) {
    Tensor into(out, {rows, cols});
    bnb::dequantize_int8_rowwise_into(q, out, into.buffer.span());
    EXPECT_TRUE(same_bytes(into, bnb::dequantize_int8_rowwise_reference(q, out))) << dtype_name(out);
  }
  EXPECT_TRUE(same_bytes(bnb::dequantize_int8_rowwise(q), bnb::dequantize_int8_rowwise_reference(q, DType::f32)));
}

}  // namespace
}  // namespace lowbit
