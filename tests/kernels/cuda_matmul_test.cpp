// The GPU matmuls against the CPU: the 4-bit products (fused kernel and the cuBLAS path) against a
// float64 product of the CPU-dequantized weight, within the rounding of 16-bit inputs and output;
// LLM.int8 against bnb::llm_int8_matmul bit for bit. Fresh heavy-tailed data each run (seed printed),
// outputs poisoned (0xFF is NaN in f16 and bf16, so an element never written fails). Skips without a GPU.
#include <gtest/gtest.h>

#ifdef LOWBIT_HAVE_CUDA
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "cuda_test_support.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit {
namespace {

struct Shape {
  int64_t rows, cols;
};
constexpr Shape kShapes[] = {{16, 256}, {48, 1024}, {256, 4096}};
// nf4/fp4 rows also of an odd number of 64-value chunks (SmolLM2's 576 columns): a half-empty last pair.
constexpr Shape kBnbShapes[] = {{16, 256}, {48, 1024}, {256, 4096}, {32, 576}, {16, 64}};
constexpr int64_t kTokens[] = {1, 3, 8, 9, 16, 17, 40, 70};

// The GPU's y [tokens, rows] (in `dtype`) against Σ x·w in float64 over the CPU's dequantized weight:
// |error| <= tolerance · Σ |x·w| + half an output ulp. The tolerance covers the code values rounded
// to 16 bits before the tensor cores (the scale is applied after) and the float32 sums.
void expect_close(const std::vector<float>& x, const std::vector<float>& w, int64_t tokens, int64_t rows, int64_t cols,
                  const std::vector<std::byte>& y, DType dtype, const std::string& what) {
  const double tolerance = dtype == DType::bf16 ? 1.0 / 256 : 1.0 / 2048;
  int failures = 0;
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t r = 0; r < rows; ++r) {
      double exact = 0, magnitude = 0;
      for (int64_t k = 0; k < cols; ++k) {
        const double p = double(x[size_t(t * cols + k)]) * double(w[size_t(r * cols + k)]);
        exact += p;
        magnitude += std::fabs(p);
      }
      uint16_t bits;
      std::memcpy(&bits, y.data() + size_t(t * rows + r) * 2, 2);
      const double got = dtype == DType::bf16 ? bf16_to_f32(bits) : f16_to_f32(bits);
      const double ulp = std::fabs(exact) * (dtype == DType::bf16 ? 1.0 / 256 : 1.0 / 2048);
      if (!(std::fabs(got - exact) <= tolerance * magnitude + ulp) && ++failures <= 3)
        ADD_FAILURE() << what << ": y[" << t << "][" << r << "] = " << got << ", expected " << exact
                      << " (sum of |x·w| " << magnitude << ")";
    }
}

// Heavy-tailed values whose largest magnitude is `peak`, so that products stay inside f16's range.
std::vector<float> heavy_tailed_peak(size_t n, float peak) {
  std::vector<float> v = heavy_tailed(n);
  float max = 0;
  for (float x : v) max = std::max(max, std::fabs(x));
  for (float& x : v) x = max > 0 ? x / max * peak : x;
  return v;
}

// Activations in `dtype` and the float32 values they hold.
std::pair<Tensor, std::vector<float>> activations(int64_t tokens, int64_t cols, DType dtype) {
  Tensor x = as_dtype(heavy_tailed_peak(size_t(tokens * cols), 8.0f), dtype);
  std::vector<float> values(size_t(tokens * cols));
  convert_to_f32(dtype, x.buffer.data(), values.data(), values.size());
  return {std::move(x), std::move(values)};
}

// The fused kernel on `fused` (dequantized on the CPU: w) for every token count and activation dtype.
void expect_fused_matches(const cuda::Fused4bitWeight& fused, const std::vector<float>& w, Shape s,
                          const std::string& what) {
  for (DType dtype : {DType::bf16, DType::f16})
    for (int64_t tokens : kTokens) {
      const auto [x, xv] = activations(tokens, s.cols, dtype);
      DeviceBytes d_x(x.buffer.size()), d_y(size_t(tokens * s.rows) * 2);
      d_x.upload(x.buffer.data(), x.buffer.size());
      cuda::matmul_4bit_fused(fused, dtype, d_x.ptr, tokens, d_y.ptr, nullptr);
      expect_close(xv, w, tokens, s.rows, s.cols, d_y.download(d_y.size), dtype,
                   what + " " + std::string(dtype_name(dtype)) + " " + std::to_string(s.rows) + "x" +
                       std::to_string(s.cols) + " tokens " + std::to_string(tokens));
    }
}

// A bitsandbytes 4-bit weight quantized on the CPU and its bytes on the device.
struct DeviceBnb4bit {
  bnb::Bnb4bitQuantized q;
  DeviceBytes packed, absmax, codes, nested, offset;
  cuda::Bnb4bitWeight weight;

  DeviceBnb4bit(const Tensor& values, Shape s, bnb::QuantType type, bool double_quant, int64_t blocksize)
      : q(bnb::quantize_4bit(values.view(), {.quant_type = type, .blocksize = blocksize, .double_quant = double_quant})),
        packed(q.packed.size()),
        absmax(q.state.absmax.size() * 4 + 4),
        codes(size_t(q.state.blocks())),
        nested(double_quant ? q.state.nested->nested_absmax.size() * 4 : 4),
        offset(4),
        weight{.type = type, .packed = nullptr, .rows = s.rows, .cols = s.cols, .blocksize = blocksize} {
    packed.upload(q.packed.data(), q.packed.size());
    weight.packed = packed.as<uint8_t>();
    if (double_quant) {
      codes.upload(q.state.nested->codes.data(), q.state.nested->codes.size());
      nested.upload(q.state.nested->nested_absmax.data(), nested.size);
      offset.upload(&q.state.nested->offset, 4);
      weight.nested = {codes.as<uint8_t>(), nested.as<float>(), offset.as<float>()};
    } else {
      absmax.upload(q.state.absmax.data(), q.state.absmax.size() * 4);
      weight.absmax = absmax.as<float>();
    }
  }
};

// A ggml q4_K weight quantized on the CPU, the values the CPU dequantizes from it, and its blocks on the
// device.
struct DeviceQ4K {
  std::vector<float> values;
  DeviceBytes blocks;
  cuda::Q4KWeight weight;
  DeviceQ4K(const float* w, Shape s)
      : values(size_t(s.rows * s.cols)),
        blocks(ggml_row_bytes(GgmlType::Q4_K, s.cols) * size_t(s.rows)),
        weight{.blocks = nullptr, .rows = s.rows, .cols = s.cols} {
    std::vector<uint8_t> bytes(blocks.size);
    quantize_rows(GgmlType::Q4_K, w, s.rows, s.cols, nullptr, bytes.data());
    dequantize_rows(GgmlType::Q4_K, bytes.data(), s.rows, s.cols, values.data());
    blocks.upload(bytes.data(), bytes.size());
    weight.blocks = blocks.ptr;
  }
};

constexpr std::pair<bool, int64_t> kBnbVariants[] = {{true, 64}, {false, 64}, {true, 256}};  // double quant, blocksize

TEST(CudaMatmul, Fused4bitMatchesCpuProduct) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Shape s : kBnbShapes)
    for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
      for (const auto& [double_quant, blocksize] : kBnbVariants) {
        const DeviceBnb4bit d(as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), DType::f32), s, type, double_quant,
                              blocksize);
        Tensor dequantized = bnb::dequantize_4bit(d.q.packed, d.q.state, DType::f32);
        const std::vector<float> w(dequantized.as<float>().begin(), dequantized.as<float>().end());
        expect_fused_matches(cuda::prepare_fused(d.weight, nullptr), w, s,
                             std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : "") + " bs" +
                                 std::to_string(blocksize));
      }
}

// The fused layout alone gives back the weight's 16-bit values, the CPU's bytes, for a weight and for
// each one's rows of a stack (fused_rows): a runtime may keep that layout alone.
TEST(CudaMatmul, Fused4bitLayoutDequantizesToTheCpusBytes) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  auto expect_cpu_bytes = [](const cuda::Fused4bitWeight& fused, const DeviceBnb4bit& d, DType dtype, const std::string& what) {
    const Tensor want = bnb::dequantize_4bit(d.q.packed, d.q.state, dtype);
    DeviceBytes out(want.buffer.size());
    cuda::dequantize_fused(fused, dtype, out.ptr, nullptr);
    const auto got = out.download(out.size);
    EXPECT_TRUE(std::memcmp(got.data(), want.buffer.data(), got.size()) == 0) << what;
  };
  for (const Shape s : kBnbShapes)
    for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
      for (const auto& [double_quant, blocksize] : kBnbVariants)
        for (DType dtype : {DType::bf16, DType::f16}) {
          const std::string what = fmt::format("{}{} bs{} {}x{} {}", bnb::quant_type_name(type), double_quant ? "+dq" : "", blocksize,
                                               s.rows, s.cols, dtype_name(dtype));
          const DeviceBnb4bit first(as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), dtype), s, type, double_quant, blocksize);
          const DeviceBnb4bit second(as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), dtype), s, type, double_quant, blocksize);
          const cuda::Fused4bitWeight a = cuda::prepare_fused(first.weight, nullptr), b = cuda::prepare_fused(second.weight, nullptr);
          expect_cpu_bytes(a, first, dtype, what);
          const cuda::Fused4bitWeight* both[] = {&a, &b};
          const cuda::Fused4bitWeight stacked = cuda::stack_fused(both, nullptr);
          expect_cpu_bytes(cuda::fused_rows(stacked, 0, s.rows), first, dtype, what + ", stacked first");
          expect_cpu_bytes(cuda::fused_rows(stacked, s.rows, s.rows), second, dtype, what + ", stacked second");
        }
  EXPECT_THROW(cuda::fused_rows(cuda::Fused4bitWeight{}, 0, 16), Error);
}

TEST(CudaMatmul, FusedQ4KMatchesCpuProduct) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const Shape s : kShapes) {
    const DeviceQ4K q4k(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f).data(), s);
    expect_fused_matches(cuda::prepare_fused(q4k.weight, nullptr), q4k.values, s, "q4_K");
  }
}

using Product16 = void (*)(const cuda::Fused4bitWeight&, DType, const void*, int64_t, void*, cudaStream_t);
using Product32 = void (*)(const cuda::Fused4bitWeight&, DType, const void*, int64_t, float*, bool, cudaStream_t);

// One kernel's 16-bit and float32-accumulate entry points over nf4 (double quant) and q4_K weights of
// each shape (q4_K where cols % 256 == 0), every token count, bf16 and f16 activations.
void expect_products(Product16 product, Product32 product_f32, std::initializer_list<Shape> shapes,
                     std::initializer_list<int64_t> token_counts) {
  for (const Shape s : shapes) {
    Tensor weight = as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), DType::f32);
    const DeviceBnb4bit nf4(weight, s, bnb::QuantType::nf4, true, 64);
    Tensor dequantized = bnb::dequantize_4bit(nf4.q.packed, nf4.q.state, DType::f32);
    std::vector<std::pair<std::string, std::pair<cuda::Fused4bitWeight, std::vector<float>>>> weights;
    weights.push_back({"nf4+dq", {cuda::prepare_fused(nf4.weight, nullptr),
                                  std::vector<float>(dequantized.as<float>().begin(), dequantized.as<float>().end())}});
    std::unique_ptr<DeviceQ4K> q4k;
    if (s.cols % 256 == 0) {
      q4k = std::make_unique<DeviceQ4K>(weight.as<float>().data(), s);
      weights.push_back({"q4_K", {cuda::prepare_fused(q4k->weight, nullptr), q4k->values}});
    }
    for (const auto& [name, fused_and_values] : weights) {
      const auto& [fused, w] = fused_and_values;
      for (const int64_t tokens : token_counts)
        for (DType dtype : {DType::bf16, DType::f16}) {
          const std::string what = fmt::format("{} {} {}x{} tokens {}", name, dtype_name(dtype), s.rows, s.cols, tokens);
          const auto [x, xv] = activations(tokens, s.cols, dtype);
          DeviceBytes d_x(x.buffer.size()), d_y(size_t(tokens * s.rows) * 4);
          d_x.upload(x.buffer.data(), x.buffer.size());
          d_y.poison();
          product(fused, dtype, d_x.ptr, tokens, d_y.ptr, nullptr);
          expect_close(xv, w, tokens, s.rows, s.cols, d_y.download(size_t(tokens * s.rows) * 2), dtype, what);
          if (dtype != DType::bf16) continue;
          // float32 out, added to y's values (2.0 each): y - 2 is the product in float32.
          const std::vector<float> twos(size_t(tokens * s.rows), 2.0f);
          d_y.upload(twos.data(), twos.size() * 4);
          product_f32(fused, dtype, d_x.ptr, tokens, d_y.as<float>(), true, nullptr);
          const auto sums = d_y.download(d_y.size);
          std::vector<std::byte> as_bf16(size_t(tokens * s.rows) * 2);
          for (size_t i = 0; i < size_t(tokens * s.rows); ++i) {
            float v;
            std::memcpy(&v, sums.data() + i * 4, 4);
            const uint16_t bits = f32_to_bf16(v - 2.0f);
            std::memcpy(as_bf16.data() + i * 2, &bits, 2);
          }
          expect_close(xv, w, tokens, s.rows, s.cols, as_bf16, DType::bf16, what + " f32 accumulate");
        }
    }
  }
}

// Prefill's token counts on the fused entry points, whatever kernel serves them: several token tiles
// and a last partial one, rows not a multiple of 32 (272), a half-empty last pair (576 columns), q4_K's
// activation sums made before the kernel, and the float32 output added to what y holds (the runtime's
// residual stream).
TEST(CudaMatmul, FusedProductsOfPrefillTokenCounts) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  expect_products(cuda::matmul_4bit_fused, cuda::matmul_4bit_fused_f32, {Shape{272, 2048}, Shape{32, 576}}, {64, 65, 130, 300});
}

// The wide kernel (Hopper's warpgroup mma): two and one warpgroups a block (256 and 384 rows, 64 rows),
// k split over blocks, a half-empty last pair (576 columns), one and several token tiles of 64 and 128.
TEST(CudaMatmul, WideKernelProducts) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  if (!cuda::wide_4bit_available(64)) GTEST_SKIP() << "the wide kernel needs an sm_90 GPU and an sm_90a build";
  expect_products(cuda::matmul_4bit_wide, cuda::matmul_4bit_wide_f32, {Shape{256, 2048}, Shape{384, 1024}, Shape{64, 576}},
                  {1, 40, 64, 65, 130, 300});
  const DeviceQ4K q4k(heavy_tailed_peak(32 * 256, 1.0f).data(), Shape{32, 256});
  const cuda::Fused4bitWeight fused = cuda::prepare_fused(q4k.weight, nullptr);
  DeviceBytes d_x(256 * 2), d_y(32 * 2);
  EXPECT_THROW(cuda::matmul_4bit_wide(fused, DType::bf16, d_x.ptr, 1, d_y.ptr, nullptr), Error);  // 32 rows
}

// Two weights stacked (stack_fused: a feed-forward block's gate and up) give, in one launch, the rows
// each gives alone, bit for bit: every 16-row tile is the same work in the same order.
TEST(CudaMatmul, StackedWeightsGiveEachWeightsRows) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  const Shape first{48, 1024}, second{32, 1024};
  std::vector<std::unique_ptr<DeviceQ4K>> weights;
  std::vector<cuda::Fused4bitWeight> parts;
  for (const Shape s : {first, second}) {
    weights.push_back(std::make_unique<DeviceQ4K>(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f).data(), s));
    parts.push_back(cuda::prepare_fused(weights.back()->weight, nullptr));
  }
  const cuda::Fused4bitWeight* both[] = {&parts[0], &parts[1]};
  const cuda::Fused4bitWeight stacked = cuda::stack_fused(both, nullptr);
  EXPECT_EQ(stacked.rows, first.rows + second.rows);
  EXPECT_EQ(stacked.bytes(), parts[0].bytes() + parts[1].bytes());
  for (const int64_t tokens : {int64_t(1), int64_t(5), int64_t(40)}) {
    const auto [x, xv] = activations(tokens, first.cols, DType::bf16);
    DeviceBytes d_x(x.buffer.size()), d_whole(size_t(tokens * stacked.rows) * 4), d_part(size_t(tokens * first.rows) * 4);
    d_x.upload(x.buffer.data(), x.buffer.size());
    cuda::matmul_4bit_fused_f32(stacked, DType::bf16, d_x.ptr, tokens, d_whole.as<float>(), false, nullptr);
    const auto whole = d_whole.download(d_whole.size);
    int64_t row0 = 0;
    for (const cuda::Fused4bitWeight& part : parts) {
      cuda::matmul_4bit_fused_f32(part, DType::bf16, d_x.ptr, tokens, d_part.as<float>(), false, nullptr);
      const auto alone = d_part.download(size_t(tokens * part.rows) * 4);
      for (int64_t t = 0; t < tokens; ++t)
        ASSERT_EQ(std::memcmp(whole.data() + size_t(t * stacked.rows + row0) * 4, alone.data() + size_t(t * part.rows) * 4,
                              size_t(part.rows) * 4),
                  0)
            << "token " << t << " of " << tokens << ", rows from " << row0;
      row0 += part.rows;
    }
  }
  cuda::MatmulContext context;  // no source to dequantize past the fused kernel's token counts
  const int64_t many = cuda::dequantize_tokens(stacked);
  DeviceBytes big(size_t(many * stacked.cols) * 2 + size_t(many * stacked.rows) * 2);
  EXPECT_THROW(cuda::matmul_4bit(context, stacked, DType::bf16, big.ptr, many, big.as<std::byte>(size_t(many * stacked.cols) * 2), nullptr),
               Error);
}

// Past dequantize_tokens (with or without the wide kernel) matmul_4bit dequantizes into scratch and calls cuBLAS.
TEST(CudaMatmul, ManyTokensTakeTheCublasPath) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  cuda::MatmulContext context;
  const int64_t tokens = std::max(cuda::kDequantizeTokens, cuda::kWideDequantizeTokens) + 5;
  for (const Shape s : {Shape{64, 512}, Shape{48, 1024}, Shape{32, 576}}) {
    const auto [x, xv] = activations(tokens, s.cols, DType::bf16);
    DeviceBytes d_x(x.buffer.size()), d_y(size_t(tokens * s.rows) * 2);
    d_x.upload(x.buffer.data(), x.buffer.size());
    const std::string shape = std::to_string(s.rows) + "x" + std::to_string(s.cols);

    Tensor weight = as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), DType::f32);
    const bnb::Bnb4bitQuantized q = bnb::quantize_4bit(weight.view(), {.double_quant = true});
    Tensor dequantized = bnb::dequantize_4bit(q.packed, q.state, DType::f32);
    const std::vector<float> w(dequantized.as<float>().begin(), dequantized.as<float>().end());
    DeviceBytes d_packed(q.packed.size()), d_codes(q.state.nested->codes.size()),
        d_nested(q.state.nested->nested_absmax.size() * 4), d_offset(4);
    d_packed.upload(q.packed.data(), q.packed.size());
    d_codes.upload(q.state.nested->codes.data(), d_codes.size);
    d_nested.upload(q.state.nested->nested_absmax.data(), d_nested.size);
    d_offset.upload(&q.state.nested->offset, 4);
    const cuda::Bnb4bitWeight gw{.packed = d_packed.as<uint8_t>(),
                                 .nested = {d_codes.as<uint8_t>(), d_nested.as<float>(), d_offset.as<float>()},
                                 .rows = s.rows, .cols = s.cols};
    const cuda::Fused4bitWeight fused = cuda::prepare_fused(gw, nullptr);
    d_packed.poison(), d_codes.poison();  // the product dequantizes from the fused layout alone
    cuda::matmul_4bit(context, fused, DType::bf16, d_x.ptr, tokens, d_y.ptr, nullptr);
    expect_close(xv, w, tokens, s.rows, s.cols, d_y.download(d_y.size), DType::bf16, "nf4+dq via cuBLAS " + shape);
    if (s.cols % 256 != 0) continue;  // q4_K rows are whole 256-value blocks

    const DeviceQ4K q4k(weight.as<float>().data(), s);
    d_y.poison();
    cuda::matmul_4bit(context, cuda::prepare_fused(q4k.weight, nullptr), DType::bf16, d_x.ptr, tokens, d_y.ptr, nullptr);
    expect_close(xv, q4k.values, tokens, s.rows, s.cols, d_y.download(d_y.size), DType::bf16, "q4_K via cuBLAS " + shape);
  }
}

TEST(CudaMatmul, LlmInt8MatchesCpuBitForBit) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  cuda::MatmulContext context;
  for (auto layout : {cuda::MatmulContext::Int8Layout::tokens_by_rows, cuda::MatmulContext::Int8Layout::rows_by_tokens}) {
  context.set_int8_layout(layout);
  // 8208 columns: more than one 8-value group per thread of a row's block.
  for (const Shape s : {Shape{64, 256}, Shape{512, 1024}, Shape{16, 8208}})
    for (int64_t tokens : {int64_t(1), int64_t(5), int64_t(64)})
      for (float threshold : {0.0f, 6.0f}) {
        // Activations up to 4 with column 3 past the threshold in every row and every 97th column
        // ten times larger: a few outlier columns.
        std::vector<float> xf = heavy_tailed_peak(size_t(tokens * s.cols), 4.0f);
        for (int64_t t = 0; t < tokens; ++t) {
          for (int64_t k = 3; k < s.cols; k += 97) xf[size_t(t * s.cols + k)] *= 10.0f;
          xf[size_t(t * s.cols + 3)] = 7.0f + float(t);
        }
        Tensor x = as_dtype(xf, DType::f16);
        x.shape = {tokens, s.cols};
        Tensor weight = as_dtype(heavy_tailed_peak(size_t(s.rows * s.cols), 1.0f), DType::f16);
        weight.shape = {s.rows, s.cols};
        const bnb::Int8RowwiseQuantized w = bnb::quantize_int8_rowwise(weight.view());
        const bnb::Int8MatmulResult cpu = bnb::llm_int8_matmul_detailed(x.view(), w, threshold);

        DeviceBytes d_cb(w.cb.size()), d_scb(w.scb.size() * 4), d_x(x.buffer.size()), d_y(size_t(tokens * s.rows) * 2);
        d_cb.upload(w.cb.data(), w.cb.size());
        d_scb.upload(w.scb.data(), d_scb.size);
        d_x.upload(x.buffer.data(), x.buffer.size());
        cuda::llm_int8_matmul(context, {d_cb.as<int8_t>(), d_scb.as<float>(), s.rows, s.cols}, d_x.ptr, tokens, threshold,
                              d_y.ptr, nullptr);
        const std::string what = std::string(layout == cuda::MatmulContext::Int8Layout::tokens_by_rows ? "[t,r] " : "[r,t] ") +
                                 std::to_string(s.rows) + "x" + std::to_string(s.cols) + " tokens " +
                                 std::to_string(tokens) + " threshold " + std::to_string(threshold) + " (" +
                                 std::to_string(cpu.activations.outlier_cols.size()) + " outlier columns)";
        EXPECT_SAME_BYTES(bytes_of(cpu.output.buffer.data(), cpu.output.buffer.size()), d_y.download(d_y.size), 2, what);
        if (threshold > 0) {
          EXPECT_FALSE(cpu.activations.outlier_cols.empty()) << what;
        }
      }
  }
}

TEST(CudaMatmul, RejectsBadShapes) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  cuda::MatmulContext context;
  DeviceBytes buffer(1 << 16);
  // cols must be a multiple of 64 (a chunk), blocksizes powers of two >= 64, activations 16-bit.
  for (int64_t cols : {int64_t(96), int64_t(160)}) {
    const cuda::Bnb4bitWeight w{.packed = buffer.as<uint8_t>(), .absmax = buffer.as<float>(), .rows = 16, .cols = cols};
    EXPECT_THROW(cuda::prepare_fused(w, nullptr), Error) << cols;
  }
  const cuda::Bnb4bitWeight small_blocks{.packed = buffer.as<uint8_t>(), .absmax = buffer.as<float>(), .rows = 16,
                                         .cols = 128, .blocksize = 32};
  EXPECT_THROW(cuda::prepare_fused(small_blocks, nullptr), Error);
  const cuda::Bnb4bitWeight odd_rows{.packed = buffer.as<uint8_t>(), .absmax = buffer.as<float>(), .rows = 24, .cols = 128};
  EXPECT_THROW(cuda::prepare_fused(odd_rows, nullptr), Error);
  const cuda::Bnb4bitWeight fine{.packed = buffer.as<uint8_t>(), .absmax = buffer.as<float>(), .rows = 16, .cols = 128};
  const cuda::Fused4bitWeight fused = cuda::prepare_fused(fine, nullptr);
  EXPECT_THROW(cuda::matmul_4bit(context, fused, DType::f32, buffer.ptr, 1, buffer.ptr, nullptr), Error);
  EXPECT_THROW(cuda::matmul_4bit(context, fused, DType::bf16, buffer.as<std::byte>(2), 1, buffer.ptr, nullptr), Error);
  EXPECT_THROW(cuda::prepare_fused(cuda::Q4KWeight{buffer.ptr, 16, 128}, nullptr), Error);
  EXPECT_THROW(cuda::matmul_4bit(context, cuda::Fused4bitWeight{}, DType::bf16, buffer.ptr, 1, buffer.ptr, nullptr), Error);
  EXPECT_THROW(cuda::llm_int8_matmul(context, {buffer.as<int8_t>(), buffer.as<float>(), 6, 64}, buffer.ptr, 1, 0.0f,
                                     buffer.ptr, nullptr),
               Error);
}

// y = 0.5 + x·Wᵀ by matvec_ggml (accumulating onto a known start checks the += form too) against float64
// sums over the CPU's dequantized weight and float32 inputs: the weight is decoded to the same float32
// values, so only the float32 sum's order differs.
void expect_matvec_matches_cpu(GgmlType type, int64_t rows, int64_t cols, std::initializer_list<int64_t> token_counts) {
  const std::string name(ggml_type_info(type).name);
  ASSERT_TRUE(cuda::has_ggml_matvec(type, cols)) << name;
  const std::vector<float> importance(size_t(cols), 1.0f);  // iq1_s, iq2_xxs and iq2_xs quantize only with one
  const auto values = heavy_tailed(size_t(rows * cols));
  std::vector<std::byte> blocks(ggml_row_bytes(type, cols) * size_t(rows));
  quantize_rows(type, values.data(), rows, cols, ggml_requires_imatrix(type) ? importance.data() : nullptr, blocks.data());
  std::vector<float> w(values.size());
  dequantize_rows(type, blocks.data(), rows, cols, w.data());
  DeviceBytes weight(blocks.size());
  weight.upload(blocks.data(), blocks.size());
  for (const int64_t tokens : token_counts) {
    const auto x = heavy_tailed(size_t(tokens * cols));
    DeviceBytes x_device(x.size() * 4), y_device(size_t(tokens * rows) * 4);
    x_device.upload(x.data(), x.size() * 4);
    std::vector<float> start(size_t(tokens * rows), 0.5f);
    y_device.upload(start.data(), start.size() * 4);
    cuda::matvec_ggml(type, weight.ptr, rows, cols, x_device.as<float>(), tokens, y_device.as<float>(), true, nullptr);
    const auto bytes = y_device.download(start.size() * 4);
    std::vector<float> y(start.size());
    std::memcpy(y.data(), bytes.data(), bytes.size());
    for (int64_t t = 0; t < tokens; ++t)
      for (int64_t r = 0; r < rows; ++r) {
        double exact = 0.5, magnitude = 0.5;
        for (int64_t c = 0; c < cols; ++c) {
          exact += double(x[size_t(t * cols + c)]) * double(w[size_t(r * cols + c)]);
          magnitude += std::abs(double(x[size_t(t * cols + c)]) * double(w[size_t(r * cols + c)]));
        }
        ASSERT_NEAR(y[size_t(t * rows + r)], exact, 1e-5 * magnitude)
            << name << " " << rows << "x" << cols << " token " << t << " row " << r;
      }
  }
}

// The few-token product of every ggml type lowbit writes: an odd row count (a block's second row past the
// end) and rows long enough for several rounds of a block's loads.
TEST(CudaMatmul, GgmlMatvecOfEveryTypeMatchesTheCpuDequantizedWeight) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (const FormatInfo& format : kFormats)
    if (format.ggml && ggml_codec(*format.ggml)) expect_matvec_matches_cpu(*format.ggml, 41, 4096, {1, 5, cuda::kMatvecMaxTokens});
  EXPECT_FALSE(cuda::has_ggml_matvec(GgmlType::Q4_K, 576));  // rows of 576 are no whole number of 256-blocks
  EXPECT_FALSE(cuda::has_ggml_matvec(GgmlType::F32, 172));   // nor of 8-value groups
}

// The one-token product stages rows through shared memory: enough rows that each block runs through
// its ring of stages several times, a last stage cut short, rows of 14336 columns (one row a stage), and
// rows too short for every thread (q6_K's 4096-column rows: 128 lane tasks).
TEST(CudaMatmul, StagedOneTokenProductsMatchTheCpu) {
  if (!has_gpu()) GTEST_SKIP() << "no CUDA device";
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::Q4_K, GgmlType::Q2_K, GgmlType::IQ4_XS, GgmlType::IQ3_S,
                        GgmlType::IQ2_XXS}) {
    expect_matvec_matches_cpu(type, 2003, 4096, {1});
    expect_matvec_matches_cpu(type, 701, 14336, {1});
  }
}

}  // namespace
}  // namespace lowbit
#else
TEST(CudaMatmul, NotBuilt) { GTEST_SKIP() << "lowbit was built without CUDA (LOWBIT_CUDA=OFF)"; }
#endif
