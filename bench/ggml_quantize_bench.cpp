// Single-thread throughput of the ggml codecs, in million values per second, on a 4096x4096 f32 matrix
// of heavy-tailed values (the golden README's "heavy" recipe, seed 103) and its importance weights.
// Rows are passed to the codec's row functions one after another on the calling thread, as one thread
// of ggml_quantize_chunk does, so the figures compare directly with ggml's test-quantize-perf -t 1.
//
//   build/bench/lowbit_bench --benchmark_filter='BM_ggml_'
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "lowbit/formats/ggml_codecs.h"

namespace {

constexpr int64_t kRows = 4096, kCols = 4096;

// splitmix64 and the uniform / Gaussian draws of the golden README.
struct GoldenRandom {
  uint64_t state;
  uint64_t next() {
    state += 0x9E3779B97F4A7C15ull;
    uint64_t z = state;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return (double(next() >> 11) + 0.5) / 9007199254740992.0; }
  double gaussian() {
    const double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2 * std::log(u1)) * std::cos(2 * M_PI * u2);
  }
};

struct HeavyMatrix {
  std::vector<float> values, importance;  // kRows*kCols values; kCols weights shared by every row
};

// Student-t-like (4 degrees of freedom), a scale per row, rare 20x outliers: what LLM weights look like.
const HeavyMatrix& heavy_matrix() {
  static const HeavyMatrix matrix = [] {
    HeavyMatrix m;
    GoldenRandom rng{103};
    m.values.resize(size_t(kRows * kCols));
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t c = 0; c < kCols; ++c) {
        const double z = rng.gaussian();
        double chi = 0;
        for (int k = 0; k < 4; ++k) chi += std::pow(rng.gaussian(), 2);
        double v = 0.02 * (0.5 + 0.5 * double(r % 3)) * z / std::max(std::sqrt(chi / 4), 0.05);
        if (rng.uniform() < 0.001) v *= 20;
        m.values[size_t(r * kCols + c)] = float(v);
      }
    }
    m.importance.resize(size_t(kCols));
    for (auto& w : m.importance) w = float(3 * std::pow(0.1 + rng.uniform(), 2));
    return m;
  }();
  return matrix;
}

void set_rate(benchmark::State& state, int64_t rows = kRows) {
  state.counters["Mvalues/s"] =
      benchmark::Counter(double(state.iterations()) * double(rows * kCols) / 1e6, benchmark::Counter::kIsRate);
}

// The i-quants search grids and run at a few million values per second: they quantize the first
// kSlowRows rows (as the golden README's speed table: 256 x 4096), the other types all kRows.
constexpr int64_t kSlowRows = 256;
bool is_grid_search_type(lowbit::GgmlType type) {
  using lowbit::FormatFamily;
  const FormatFamily family = lowbit::ggml_type_info(type).family;
  return family == FormatFamily::ggml_iq1 || family == FormatFamily::ggml_iq2 || family == FormatFamily::ggml_iq3;
}

void BM_ggml_quantize(benchmark::State& state, lowbit::GgmlType type, bool with_weights) {
  const HeavyMatrix& m = heavy_matrix();
  const int64_t rows = is_grid_search_type(type) ? kSlowRows : kRows;
  const lowbit::GgmlCodec* codec = lowbit::ggml_codec(type);
  const size_t row_bytes = lowbit::ggml_row_bytes(type, kCols);
  std::vector<uint8_t> out(row_bytes * size_t(rows));
  const float* weights = with_weights ? m.importance.data() : nullptr;
  // The first row builds the search tables of the grid types (once per process), outside the timing.
  codec->quantize_row(m.values.data(), out.data(), kCols, m.importance.data(), lowbit::cpu::best_cpu_target());
  for (auto _ : state) {
    for (int64_t r = 0; r < rows; ++r)
      codec->quantize_row(m.values.data() + r * kCols, out.data() + size_t(r) * row_bytes, kCols, weights,
                          lowbit::cpu::best_cpu_target());
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state, rows);
}

// Dequantize writes 4 bytes per value, so over a 64 MB output it mostly measures memory bandwidth, which
// other work on the machine shares; it streams the output, as dequantize_rows does past cpu::kStreamingBytes.
// `to_row_buffer` writes every row into the same 16 KB buffer (it stays in cache, normal stores) and so
// measures the dequantizer itself.
void BM_ggml_dequantize(benchmark::State& state, lowbit::GgmlType type, bool to_row_buffer) {
  const HeavyMatrix& m = heavy_matrix();
  const lowbit::GgmlCodec* codec = lowbit::ggml_codec(type);
  const size_t row_bytes = lowbit::ggml_row_bytes(type, kCols);
  std::vector<uint8_t> blocks(row_bytes * kRows);
  for (int64_t r = 0; r < kRows; ++r)
    codec->quantize_row(m.values.data() + r * kCols, blocks.data() + size_t(r) * row_bytes, kCols,
                        lowbit::ggml_requires_imatrix(type) ? m.importance.data() : nullptr,
                        lowbit::cpu::best_cpu_target());
  std::vector<float> out(size_t(to_row_buffer ? kCols : kRows * kCols));
  const lowbit::cpu::OutputStores stores =
      to_row_buffer ? lowbit::cpu::OutputStores::cached : lowbit::cpu::OutputStores::streaming;
  for (auto _ : state) {
    for (int64_t r = 0; r < kRows; ++r)
      codec->dequantize_row(blocks.data() + size_t(r) * row_bytes, out.data() + (to_row_buffer ? 0 : r * kCols), kCols,
                            lowbit::cpu::best_cpu_target(), stores);
    benchmark::DoNotOptimize(out.data());
    benchmark::ClobberMemory();
  }
  set_rate(state);
}

// Registered at start-up for every quantized ggml type lowbit writes, in the registry's order: quantize
// without weights, with weights (where the type uses them), dequantize (into the matrix, and row after
// row into one buffer).
const bool registered = [] {
  for (const lowbit::FormatInfo& format : lowbit::kFormats) {
    if (!format.ggml || !format.quantized || !lowbit::ggml_codec(*format.ggml)) continue;
    const lowbit::GgmlType type = *format.ggml;
    const std::string name(format.name);
    if (!lowbit::ggml_requires_imatrix(type))
      benchmark::RegisterBenchmark(("BM_ggml_quantize/" + name).c_str(), BM_ggml_quantize, type, false)
          ->Unit(benchmark::kMillisecond)->MinTime(0.5);
    if (lowbit::ggml_codec(type)->uses_weights)
      benchmark::RegisterBenchmark(("BM_ggml_quantize_weighted/" + name).c_str(), BM_ggml_quantize, type, true)
          ->Unit(benchmark::kMillisecond)->MinTime(0.5);
    benchmark::RegisterBenchmark(("BM_ggml_dequantize/" + name).c_str(), BM_ggml_dequantize, type, false)
        ->Unit(benchmark::kMillisecond)->MinTime(0.5);
    benchmark::RegisterBenchmark(("BM_ggml_dequantize_to_row_buffer/" + name).c_str(), BM_ggml_dequantize, type, true)
        ->Unit(benchmark::kMillisecond)->MinTime(0.5);
  }
  return true;
}();

}  // namespace
