// ggml codecs against ggml itself: every golden file in ../shared/golden/ggml (see its README) holds an
// `input` matrix, optionally the `imatrix` weights, the `quantized` bytes ggml_quantize_chunk wrote and
// the `dequantized` floats ggml's to_float gave. Quantizing must give the same bytes, dequantizing the
// same bits. Plus round-trip error bounds on random data and rejection of partial blocks.
#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::vector<std::string> golden_file_names() {
  std::vector<std::string> names;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(test::golden_ggml_dir(), ec))
    if (entry.is_regular_file() && entry.path().extension() == ".gguf") names.push_back(entry.path().stem().string());
  std::sort(names.begin(), names.end());
  return names;
}

template <class T>
std::vector<T> copy_as(std::span<const std::byte> bytes) {
  std::vector<T> out(bytes.size() / sizeof(T));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(T));
  return out;
}

// First differing byte index, or -1.
int64_t first_difference(std::span<const std::byte> a, std::span<const std::byte> b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i)
    if (a[i] != b[i]) return int64_t(i);
  return a.size() == b.size() ? -1 : int64_t(n);
}

// The codecs run the scalar references or the kernels of a CPU target (kernels/cpu); all must give ggml's
// bytes. The targets with kernels this CPU runs (avx2, avx512), each checked against the scalar one.
std::vector<cpu::CpuTarget> vector_targets() {
  std::vector<cpu::CpuTarget> targets = cpu::supported_cpu_targets();
  std::erase(targets, cpu::CpuTarget::scalar);
  return targets;
}

// Golden types whose codec is still being written (issue 15); GgmlGoldenSet checks this list is exactly
// the golden types without a codec, so a new codec must take its type off.

class GgmlGoldenTest : public testing::TestWithParam<std::string> {};

void check_golden_file(const std::string& name, cpu::CpuTarget target);

TEST_P(GgmlGoldenTest, QuantizeAndDequantizeMatchGgml) { check_golden_file(GetParam(), cpu::best_cpu_target()); }

// The test above ran the best CPU target; this one every other target the CPU runs (scalar, and avx2 on an
// AVX-512 CPU).
TEST_P(GgmlGoldenTest, OtherCpuTargetsMatchGgml) {
  int checked = 0;
  for (const cpu::CpuTarget target : cpu::supported_cpu_targets()) {
    if (target == cpu::best_cpu_target()) continue;
    SCOPED_TRACE(cpu::cpu_target_name(target));
    check_golden_file(GetParam(), target);
    ++checked;
  }
  if (!checked) GTEST_SKIP() << "this CPU runs only the scalar target: the test above ran it";
}

void check_golden_file(const std::string& name, cpu::CpuTarget target) {
  SCOPED_TRACE(name);
  const auto path = test::golden_ggml_dir() / (name + ".gguf");
  const gguf::File file(path);
  const gguf::TensorInfo* input = file.find_tensor("input");
  const gguf::TensorInfo* quantized = file.find_tensor("quantized");
  const gguf::TensorInfo* dequantized = file.find_tensor("dequantized");
  ASSERT_TRUE(input && quantized && dequantized) << path;
  const gguf::TensorInfo* imatrix = file.find_tensor("imatrix");

  // GGUF lists dimensions innermost first: ne = [cols, rows].
  const int64_t cols = input->ne.at(0), rows = input->ne.at(1);
  const GgmlType type = quantized->type;
  ASSERT_NE(ggml_codec(type), nullptr) << "no codec for " << ggml_type_name(type);

  const std::vector<float> x = copy_as<float>(file.data(*input));
  std::vector<float> weights;
  if (imatrix) {
    weights = copy_as<float>(file.data(*imatrix));
    ASSERT_EQ(int64_t(weights.size()), cols);
  }
  const auto expected_bytes = file.data(*quantized);
  ASSERT_EQ(expected_bytes.size(), size_t(rows) * ggml_row_bytes(type, cols));

  std::vector<std::byte> bytes(expected_bytes.size());
  quantize_rows(type, x.data(), rows, cols, imatrix ? weights.data() : nullptr, bytes.data(), target);
  const int64_t diff = first_difference(bytes, expected_bytes);
  EXPECT_EQ(diff, -1) << "quantized bytes differ from ggml's, first at byte " << diff << " (row "
                      << diff / int64_t(ggml_row_bytes(type, cols)) << ")";

  std::vector<float> y(size_t(rows * cols));
  dequantize_rows(type, expected_bytes.data(), rows, cols, y.data(), target);
  const std::vector<uint32_t> expected_bits = copy_as<uint32_t>(file.data(*dequantized));
  ASSERT_EQ(expected_bits.size(), y.size());
  int64_t mismatches = 0, first = -1;
  for (size_t i = 0; i < y.size(); ++i) {
    if (std::bit_cast<uint32_t>(y[i]) != expected_bits[i]) {
      if (first < 0) first = int64_t(i);
      ++mismatches;
    }
  }
  EXPECT_EQ(mismatches, 0) << "dequantized values differ from ggml's, first at value " << first;
}

INSTANTIATE_TEST_SUITE_P(Ggml, GgmlGoldenTest, testing::ValuesIn(golden_file_names()),
                         [](const testing::TestParamInfo<std::string>& param_info) { return param_info.param; });

// 4 cases x (12 types with and without weights, less q8_0 with) = 92 files, plus 4 x 17 of the 13 types
// of the README's addendum = 160, as manifest.json counts.
TEST(GgmlGoldenSet, HasEveryCase) { EXPECT_EQ(golden_file_names().size(), 160u); }

TEST(GgmlGoldenSet, EveryTypeHasACodec) {
  for (const std::string& name : golden_file_names()) {
    const gguf::File file(test::golden_ggml_dir() / (name + ".gguf"));
    EXPECT_NE(ggml_codec(file.find_tensor("quantized")->type), nullptr) << name;
  }
}

// llama-quantize's Q4_K_M file of the tiny model: every quantized tensor equals quantizing the f32
// model's tensor without weights (README, model/).
TEST(GgmlGoldenModel, Q4KMTensorsMatchLlamaQuantize) {
  const gguf::File f32_file(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf");
  const gguf::File quant_file(test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf");
  int checked = 0;
  for (const gguf::TensorInfo& q : quant_file.tensors()) {
    if (!ggml_type_info(q.type).quantized) continue;
    SCOPED_TRACE(q.name);
    const gguf::TensorInfo* source = f32_file.find_tensor(q.name);
    ASSERT_TRUE(source);
    ASSERT_EQ(source->type, GgmlType::F32);
    const int64_t cols = q.ne.at(0), rows = q.elements() / cols;
    const std::vector<float> x = copy_as<float>(f32_file.data(*source));
    std::vector<std::byte> bytes(size_t(rows) * ggml_row_bytes(q.type, cols));
    quantize_rows(q.type, x.data(), rows, cols, nullptr, bytes.data());
    EXPECT_EQ(first_difference(bytes, quant_file.data(q)), -1);
    ++checked;
  }
  EXPECT_EQ(checked, 16);
}

// ---- round trip on random data ----

struct ErrorBound {
  GgmlType type;
  double max_relative_rmse;  // RMS error / RMS value, Gaussian data
};

// Loose bounds from the bits per value (about 2^-bits of the range), enough to catch a broken codec.
constexpr ErrorBound kBounds[] = {
    {GgmlType::Q4_0, 0.12}, {GgmlType::Q4_1, 0.11}, {GgmlType::Q5_0, 0.06}, {GgmlType::Q5_1, 0.05},
    {GgmlType::Q8_0, 0.01}, {GgmlType::Q2_K, 0.40}, {GgmlType::Q3_K, 0.20}, {GgmlType::Q4_K, 0.10},
    {GgmlType::Q5_K, 0.05}, {GgmlType::Q6_K, 0.025}, {GgmlType::IQ4_NL, 0.10}, {GgmlType::IQ4_XS, 0.10},
    {GgmlType::F16, 0.001}, {GgmlType::BF16, 0.005}, {GgmlType::F32, 0.0},
    // Ternary and 1-bit types have no scale search: d = max|x| (mean|x| for q1_0) leaves most Gaussian
    // values at 0 or +-d (measured 0.80, 0.60, 0.71).
    {GgmlType::TQ1_0, 0.85}, {GgmlType::TQ2_0, 0.85}, {GgmlType::Q1_0, 0.65}, {GgmlType::Q2_0, 0.75},
    {GgmlType::MXFP4, 0.15}, {GgmlType::NVFP4, 0.15}, {GgmlType::IQ3_XXS, 0.24}, {GgmlType::IQ3_S, 0.20},
};

double relative_rmse(const std::vector<float>& x, const std::vector<float>& y) {
  double err = 0, ref = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    err += (double(x[i]) - y[i]) * (double(x[i]) - y[i]);
    ref += double(x[i]) * x[i];
  }
  return std::sqrt(err / ref);
}

TEST(GgmlCodecs, RoundTripErrorIsBounded) {
  const int64_t rows = 7, cols = 1024;
  std::mt19937 rng(42);
  std::normal_distribution<float> normal(0.f, 0.02f);
  std::uniform_real_distribution<float> uniform(0.1f, 2.f);
  std::vector<float> x(static_cast<size_t>(rows * cols)), weights(static_cast<size_t>(cols));
  for (float& v : x) v = normal(rng);
  for (float& w : weights) w = uniform(rng);
  for (const ErrorBound& bound : kBounds) {
    for (const bool weighted : {false, true}) {
      SCOPED_TRACE(std::string(ggml_type_name(bound.type)) + (weighted ? " with weights" : ""));
      std::vector<std::byte> bytes(size_t(rows) * ggml_row_bytes(bound.type, cols));
      quantize_rows(bound.type, x.data(), rows, cols, weighted ? weights.data() : nullptr, bytes.data());
      std::vector<float> y(x.size());
      dequantize_rows(bound.type, bytes.data(), rows, cols, y.data());
      EXPECT_LE(relative_rmse(x, y), bound.max_relative_rmse);
      // Quantizing is deterministic whatever the thread split: a single-row pass gives the same bytes.
      std::vector<std::byte> row(ggml_row_bytes(bound.type, cols));
      ggml_codec(bound.type)->quantize_row(x.data() + 3 * cols, row.data(), cols, weighted ? weights.data() : nullptr,
                                           cpu::best_cpu_target());
      EXPECT_EQ(0, std::memcmp(row.data(), bytes.data() + 3 * row.size(), row.size()));
    }
  }
}

// Types ggml quantizes without looking at importance weights give the same bytes with and without them.
TEST(GgmlCodecs, TypesIgnoringWeightsGiveTheSameBytesWithThem) {
  const int64_t rows = 3, cols = 512;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 1.f);
  std::vector<float> x(static_cast<size_t>(rows * cols)), weights(static_cast<size_t>(cols));
  for (float& v : x) v = normal(rng);
  for (float& w : weights) w = std::fabs(normal(rng));
  int checked = 0;
  for (const ErrorBound& bound : kBounds) {
    if (ggml_codec(bound.type)->uses_weights) continue;
    SCOPED_TRACE(std::string(ggml_type_name(bound.type)));
    std::vector<std::byte> plain(size_t(rows) * ggml_row_bytes(bound.type, cols)), weighted(plain.size());
    quantize_rows(bound.type, x.data(), rows, cols, nullptr, plain.data());
    quantize_rows(bound.type, x.data(), rows, cols, weights.data(), weighted.data());
    EXPECT_EQ(first_difference(plain, weighted), -1);
    ++checked;
  }
  EXPECT_GE(checked, 10);  // q8_0, the plain types, tq1_0, tq2_0, mxfp4, nvfp4, q1_0, q2_0
}

// Quantizes x under the scalar target and under every vector target, for every type, without and with
// weights, and expects the same bytes.
void expect_vector_kernels_match_scalar(const std::vector<float>& x, int64_t rows, int64_t cols,
                                        const std::vector<float>& weights) {
  for (const ErrorBound& bound : kBounds) {
    for (const bool weighted : {false, true}) {
      SCOPED_TRACE(std::string(ggml_type_name(bound.type)) + (weighted ? " with weights" : ""));
      const size_t size = size_t(rows) * ggml_row_bytes(bound.type, cols);
      std::vector<std::byte> scalar_bytes(size);
      quantize_rows(bound.type, x.data(), rows, cols, weighted ? weights.data() : nullptr, scalar_bytes.data(),
                    cpu::CpuTarget::scalar);
      for (const cpu::CpuTarget target : vector_targets()) {
        SCOPED_TRACE(cpu::cpu_target_name(target));
        std::vector<std::byte> vector_bytes(size);
        quantize_rows(bound.type, x.data(), rows, cols, weighted ? weights.data() : nullptr, vector_bytes.data(),
                      target);
        EXPECT_EQ(first_difference(vector_bytes, scalar_bytes), -1);
      }
    }
  }
}

// Beyond the golden files: heavy-tailed random rows, including tiny and huge scales, give the same bytes
// through the vector and the scalar kernels.
TEST(GgmlCodecs, VectorAndScalarKernelsAgree) {
  if (vector_targets().empty()) GTEST_SKIP() << "no vector kernels on this CPU";
  const int64_t rows = 24, cols = 2048;
  std::mt19937 rng(7);
  std::student_t_distribution<float> heavy(3.f);
  std::uniform_real_distribution<float> uniform(0.f, 2.f);
  std::vector<float> x(static_cast<size_t>(rows * cols)), weights(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    const float row_scale = std::pow(10.f, float(r % 8) - 5.f);  // 1e-5 ... 1e2
    for (int64_t c = 0; c < cols; ++c) x[size_t(r * cols + c)] = r % 5 == 4 ? std::fabs(heavy(rng)) * row_scale : heavy(rng) * row_scale;
  }
  for (float& w : weights) w = uniform(rng) < 0.1f ? 0.f : uniform(rng);
  expect_vector_kernels_match_scalar(x, rows, cols, weights);
}

// Where a vector reduction could pick a different element than ggml's first-wins loops: signed zeros,
// ties between +a and -a, blocks of one repeated value, few distinct values. 768 columns = 3 super-blocks
// and 24 legacy blocks, so the runs of 2 super-blocks / 16 blocks end in partial runs.
TEST(GgmlCodecs, VectorAndScalarKernelsAgreeOnTiesAndSignedZeros) {
  if (vector_targets().empty()) GTEST_SKIP() << "no vector kernels on this CPU";
  const int64_t rows = 10, cols = 768;
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> pick(-3, 3);
  std::vector<float> x(static_cast<size_t>(rows * cols)), weights(static_cast<size_t>(cols), 1.f);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const int k = pick(rng);
      float v = 0;
      switch (r) {
        case 0: v = k < 0 ? -0.f : 0.f; break;                      // signed zeros only
        case 1: v = k < 0 ? -0.f : (k > 1 ? 0.25f : 0.f); break;    // zeros and one positive value
        case 2: v = k < 0 ? -0.5f : (k > 1 ? -0.f : 0.f); break;    // zeros and one negative value
        case 3: v = k > 0 ? 0.75f : -0.75f; break;                  // +a / -a ties
        case 4: v = float(k) * 0.125f; break;                       // few distinct values
        case 5: v = 1.5f; break;                                    // one value
        case 6: v = -2.f; break;
        case 7: v = c % 32 == 31 ? -1.f : (c % 32 == 0 ? 1.f : 0.01f * float(k)); break;  // extremes at block ends
        case 8: v = float(k) * 1e-6f; break;                        // scales near fp16's subnormals
        default: v = float(k) * 3.f + (k == 0 ? -0.f : 0.f); break;
      }
      x[size_t(r * cols + c)] = v;
    }
  }
  for (size_t c = 0; c < weights.size(); ++c) weights[c] = c % 7 == 3 ? 0.f : 0.5f + float(c % 5);
  expect_vector_kernels_match_scalar(x, rows, cols, weights);
}

// The vector dequantizers pick their store width by the output's alignment, and stream where told to: every
// offset within a 64-byte line gives the scalar loops' bits, under every vector target, with either stores.
TEST(GgmlCodecs, VectorDequantizersMatchScalarAtEveryAlignment) {
  const int64_t cols = 512;
  std::mt19937 rng(5);
  std::student_t_distribution<float> heavy(3.f);
  std::vector<float> x(static_cast<size_t>(cols));
  for (float& v : x) v = 0.02f * heavy(rng);
  for (const ErrorBound& bound : kBounds) {
    SCOPED_TRACE(std::string(ggml_type_name(bound.type)));
    std::vector<std::byte> blocks(ggml_row_bytes(bound.type, cols));
    quantize_rows(bound.type, x.data(), 1, cols, nullptr, blocks.data());
    std::vector<float> expected(static_cast<size_t>(cols));
    dequantize_rows(bound.type, blocks.data(), 1, cols, expected.data(), cpu::CpuTarget::scalar);
    for (const cpu::CpuTarget target : vector_targets()) {
      alignas(64) static float buffer[512 + 16];
      for (const cpu::OutputStores stores : {cpu::OutputStores::cached, cpu::OutputStores::streaming}) {
        for (int offset = 0; offset < 16; ++offset) {
          ggml_codec(bound.type)->dequantize_row(blocks.data(), buffer + offset, cols, target, stores);
          EXPECT_EQ(std::memcmp(buffer + offset, expected.data(), sizeof(float) * size_t(cols)), 0)
              << cpu::cpu_target_name(target) << " offset " << offset << " streaming "
              << (stores == cpu::OutputStores::streaming);
        }
      }
    }
  }
}

// Blocks of random bytes reach what no quantizer writes: NaN, infinite and subnormal scales, every E8M0
// and UE4M3 byte (0x7F and the top bit included), q2_0's code 3, tq1_0 bytes past 243. An odd number of
// blocks, into outputs at every 4-byte offset of a 64-byte line: the vector dequantizers must give the
// scalar loops' bits.
TEST(GgmlCodecs, VectorDequantizersMatchScalarOnRandomBlocks) {
  if (vector_targets().empty()) GTEST_SKIP() << "no vector kernels on this CPU";
  std::mt19937 rng(23);
  std::uniform_int_distribution<int> byte(0, 255);
  for (const GgmlType type : {GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::Q1_0, GgmlType::Q2_0, GgmlType::MXFP4,
                              GgmlType::NVFP4}) {
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    const FormatInfo& info = ggml_type_info(type);
    const int64_t blocks = 257, cols = blocks * info.block_elements;
    std::vector<uint8_t> bytes(size_t(blocks) * info.block_bytes);
    for (uint8_t& b : bytes) b = uint8_t(byte(rng));
    std::vector<float> expected(static_cast<size_t>(cols));
    ggml_codec(type)->dequantize_row(bytes.data(), expected.data(), cols, cpu::CpuTarget::scalar,
                                     cpu::OutputStores::cached);
    std::vector<float> buffer(static_cast<size_t>(cols) + 32);
    float* line = buffer.data() + (64 - reinterpret_cast<uintptr_t>(buffer.data()) % 64) / sizeof(float);
    for (const cpu::CpuTarget target : vector_targets()) {
      for (const cpu::OutputStores stores : {cpu::OutputStores::cached, cpu::OutputStores::streaming}) {
        for (int offset = 0; offset < 16; ++offset) {
          ggml_codec(type)->dequantize_row(bytes.data(), line + offset, cols, target, stores);
          EXPECT_EQ(std::memcmp(line + offset, expected.data(), sizeof(float) * size_t(cols)), 0)
              << cpu::cpu_target_name(target) << " offset " << offset << " streaming "
              << (stores == cpu::OutputStores::streaming);
        }
      }
    }
  }
}

TEST(GgmlCodecs, ZeroRowsStayZero) {
  const int64_t cols = 512;
  const std::vector<float> x(size_t(cols), 0.f);
  for (const ErrorBound& bound : kBounds) {
    SCOPED_TRACE(std::string(ggml_type_name(bound.type)));
    std::vector<std::byte> bytes(ggml_row_bytes(bound.type, cols));
    quantize_rows(bound.type, x.data(), 1, cols, nullptr, bytes.data());
    std::vector<float> y(size_t(cols), 1.f);
    dequantize_rows(bound.type, bytes.data(), 1, cols, y.data());
    for (float v : y) ASSERT_EQ(v, 0.f);
  }
}

// ---- rejection ----

TEST(GgmlCodecs, RejectsRowsThatAreNotWholeBlocks) {
  const std::vector<float> x(300, 1.f);
  std::vector<std::byte> bytes(4096);
  std::vector<float> y(300);
  for (const GgmlType type : {GgmlType::Q4_0, GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::IQ4_XS}) {
    const int64_t cols = type == GgmlType::Q4_0 || type == GgmlType::Q8_0 ? 33 : 300;
    SCOPED_TRACE(std::string(ggml_type_name(type)));
    try {
      quantize_rows(type, x.data(), 1, cols, nullptr, bytes.data());
      ADD_FAILURE() << "no error for a row of " << cols;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("not a whole number"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(std::string(ggml_type_name(type))), std::string::npos) << e.what();
    }
    EXPECT_THROW(dequantize_rows(type, bytes.data(), 1, cols, y.data()), Error);
    EXPECT_THROW(ggml_codec(type)->quantize_row(x.data(), bytes.data(), cols, nullptr, cpu::best_cpu_target()), Error);
    EXPECT_THROW(ggml_codec(type)->dequantize_row(bytes.data(), y.data(), cols, cpu::best_cpu_target(),
                                                  cpu::OutputStores::cached),
                 Error);
  }
}

// A codec with SIMD kernels refuses a target this CPU cannot run rather than run instructions it lacks.
TEST(GgmlCodecs, RejectsACpuTargetThisCpuLacks) {
  const std::vector<float> x(256, 1.f);
  std::vector<std::byte> bytes(ggml_row_bytes(GgmlType::Q4_K, 256));
  std::vector<float> y(256);
  int checked = 0;
  for (const cpu::CpuTarget target : {cpu::CpuTarget::avx2, cpu::CpuTarget::avx512}) {
    if (cpu::cpu_supports(target)) continue;
    SCOPED_TRACE(cpu::cpu_target_name(target));
    EXPECT_THROW(quantize_rows(GgmlType::Q4_K, x.data(), 1, 256, nullptr, bytes.data(), target), Error);
    EXPECT_THROW(dequantize_rows(GgmlType::Q4_K, bytes.data(), 1, 256, y.data(), target), Error);
    ++checked;
  }
  if (!checked) GTEST_SKIP() << "this CPU runs every target";
}

TEST(GgmlCodecs, RejectsTypesWithoutCodec) {
  EXPECT_EQ(ggml_codec(GgmlType::Q8_1), nullptr);  // ggml's dot-product helper type: never written to files
  const std::vector<float> x(256, 1.f);
  std::vector<std::byte> bytes(1024);
  EXPECT_THROW(quantize_rows(GgmlType::Q8_1, x.data(), 1, 256, nullptr, bytes.data()), Error);
}

}  // namespace
}  // namespace lowbit
