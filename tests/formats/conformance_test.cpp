// Every ggml format of the registry, every way the CPU codecs can run it: each CPU target this CPU runs
// (the scalar references, then the AVX2 and AVX-512 kernels of kernels/cpu), each with one thread row by
// row and with the thread pool (quantize_rows / dequantize_rows). Each must give the scalar references'
// bytes and floats; a registry type with a codec must also have ggml's golden vectors
// (../shared/golden/ggml), which GgmlGoldenTest holds every codec to. The GPU's codecs are held to these
// CPU results by the CUDA tests (tests/kernels, for every type of the registry).
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_codecs.h"
#include "support/paths.h"

namespace lowbit {
namespace {

// The registry's ggml formats that lowbit quantizes (a codec, a GGUF target, not a plain float type).
std::vector<FormatInfo> quantized_ggml_formats() {
  std::vector<FormatInfo> formats;
  for (const FormatInfo& f : kFormats)
    if (f.ggml && f.quantized && f.held_by(FormatTarget::gguf) && ggml_codec(*f.ggml)) formats.push_back(f);
  return formats;
}

// Rows with what trips quantizers: heavy tails, an all-zero block, a constant block, one huge value.
struct Matrix {
  int64_t rows = 0, cols = 0;
  std::vector<float> values, weights;
};

Matrix test_matrix(int64_t rows, int64_t cols) {
  Matrix m{.rows = rows, .cols = cols, .values = std::vector<float>(size_t(rows * cols)), .weights = std::vector<float>(size_t(cols))};
  std::mt19937 rng(20261203);
  std::student_t_distribution<float> heavy(3.0f);
  std::uniform_real_distribution<float> positive(0.01f, 4.0f);
  for (auto& v : m.values) v = 0.05f * heavy(rng);
  for (int64_t c = 0; c < 32; ++c) m.values[size_t(cols + c)] = 0.0f;           // row 1: a zero block
  for (int64_t c = 0; c < 32; ++c) m.values[size_t(2 * cols + 32 + c)] = 0.25f;  // row 2: a constant block
  m.values[size_t(3 * cols + 7)] = 40.0f;                                        // row 3: an outlier
  for (auto& w : m.weights) w = positive(rng);
  return m;
}

std::vector<std::byte> quantize_one_thread(GgmlType type, const Matrix& m, const float* weights, cpu::CpuTarget target) {
  const GgmlCodec& codec = *ggml_codec(type);
  const size_t row_bytes = ggml_row_bytes(type, m.cols);
  std::vector<std::byte> out(row_bytes * size_t(m.rows));
  for (int64_t r = 0; r < m.rows; ++r)
    codec.quantize_row(m.values.data() + r * m.cols, out.data() + size_t(r) * row_bytes, m.cols, weights, target);
  return out;
}

std::vector<std::byte> quantize_pooled(GgmlType type, const Matrix& m, const float* weights, cpu::CpuTarget target) {
  std::vector<std::byte> out(ggml_row_bytes(type, m.cols) * size_t(m.rows));
  quantize_rows(type, m.values.data(), m.rows, m.cols, weights, out.data(), target);
  return out;
}

class Conformance : public testing::TestWithParam<FormatInfo> {};

TEST_P(Conformance, EveryBackendAndThreadCountGivesTheSameBytes) {
  const FormatInfo& f = GetParam();
  const GgmlType type = *f.ggml;
  const Matrix m = test_matrix(7, 1024);
  std::vector<const float*> weightings{m.weights.data()};
  if (!f.needs_imatrix) weightings.push_back(nullptr);
  const std::vector<cpu::CpuTarget> targets = cpu::supported_cpu_targets();  // scalar first: the reference
  std::cout << "[ conformance ] " << f.name << ": " << ThreadPool::global().size() << " threads against 1, CPU targets";
  for (const cpu::CpuTarget target : targets) std::cout << " " << cpu::cpu_target_name(target);
  std::cout << "\n";
  for (const float* weights : weightings) {
    SCOPED_TRACE(weights ? "with importance weights" : "without importance weights");
    std::vector<std::byte> reference_bytes;
    std::vector<float> reference_values;
    for (const cpu::CpuTarget target : targets) {
      SCOPED_TRACE(cpu::cpu_target_name(target));
      const auto pooled = quantize_pooled(type, m, weights, target);
      EXPECT_EQ(pooled, quantize_one_thread(type, m, weights, target)) << f.name << ": the thread pool changed the bytes";
      if (target == cpu::CpuTarget::scalar) reference_bytes = pooled;
      EXPECT_EQ(pooled, reference_bytes) << f.name << ": the target's kernels changed the bytes";
      // Dequantizing the scalar bytes: one row at a time with streaming stores against the pool (its output is
      // small: normal stores), bit for bit, and the scalar floats.
      std::vector<float> one(m.values.size()), pool(m.values.size());
      const size_t row_bytes = ggml_row_bytes(type, m.cols);
      for (int64_t r = 0; r < m.rows; ++r)
        ggml_codec(type)->dequantize_row(reference_bytes.data() + size_t(r) * row_bytes, one.data() + r * m.cols, m.cols,
                                         target, cpu::OutputStores::streaming);
      dequantize_rows(type, reference_bytes.data(), m.rows, m.cols, pool.data(), target);
      if (target == cpu::CpuTarget::scalar) reference_values = pool;
      for (size_t i = 0; i < one.size(); ++i) {
        ASSERT_EQ(std::bit_cast<uint32_t>(one[i]), std::bit_cast<uint32_t>(pool[i])) << f.name << " value " << i;
        ASSERT_EQ(std::bit_cast<uint32_t>(pool[i]), std::bit_cast<uint32_t>(reference_values[i])) << f.name << " value " << i;
        ASSERT_TRUE(std::isfinite(pool[i])) << f.name << " value " << i;
      }
    }
  }
}

// A format with a codec has ggml's own vectors to be held to: its matrix file, and where ggml uses
// importance weights, the weighted one too.
TEST_P(Conformance, HasGgmlsGoldenVectors) {
  const FormatInfo& f = GetParam();
  const auto dir = test::golden_ggml_dir();
  if (!std::filesystem::exists(dir)) GTEST_SKIP() << "no " << dir;
  bool plain = false, weighted = false;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with("mat512_" + std::string(f.name) + "_")) continue;
    const bool is_weighted = name.starts_with("mat512_" + std::string(f.name) + "_imatrix_");
    weighted |= is_weighted;
    plain |= !is_weighted;
  }
  EXPECT_TRUE(plain || f.needs_imatrix) << f.name << " has no mat512 golden vector without importance weights";
  EXPECT_TRUE(weighted || !ggml_codec(*f.ggml)->uses_weights) << f.name << " has no mat512 golden vector with importance weights";
}

INSTANTIATE_TEST_SUITE_P(Registry, Conformance, testing::ValuesIn(quantized_ggml_formats()),
                         [](const testing::TestParamInfo<FormatInfo>& p) { return std::string(p.param.name); });

}  // namespace
}  // namespace lowbit
