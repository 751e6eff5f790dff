// bitsandbytes codecs on the CPU: quantize from bf16 and dequantize to bf16, for NF4 and FP4
// (blocksize 64, with and without double quantization) and LLM.int8 row-wise, on a 4096×14336 bf16
// weight (a Llama-3-8B MLP projection, 117 MB), beside memcpy (memcpy_bench.cpp) in the same run.
//
// Bytes per iteration = bytes read + bytes written, as memcpy counts them: the bf16 tensor, the
// packed codes and the scales (absmax, or the 8-bit codes + nested absmax + offset of double quant).
//
// Threads: the codecs run on lowbit's global pool, which reads LOWBIT_THREADS once at start, so
// one run measures one thread count (the "threads" counter). docs/benchmarks.md runs the program
// twice, LOWBIT_THREADS=1 and unset (all cores); BM_memcpy_1thread and BM_memcpy_all_threads in
// the same runs give the reference.
#include <benchmark/benchmark.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "lowbit/core/tensor.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"

namespace {

using lowbit::DType;
using lowbit::Tensor;
namespace bnb = lowbit::bnb;

constexpr int64_t kRows = 4096, kCols = 14336;
constexpr int64_t kElements = kRows * kCols;

// splitmix64: fast, and the same data on every machine.
uint64_t next_random(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double uniform_open(uint64_t& state) { return (double(next_random(state) >> 11) + 0.5) * 0x1.0p-53; }

// Heavy-tailed like trained weights: a Gaussian whose scale is log-normal per element (a scale
// mixture, kurtosis ~ 3·e^1), so blocks hold occasional outliers that set their absmax.
const Tensor& heavy_tailed_weight() {
  static const Tensor weight = [] {
    Tensor t(DType::bf16, {kRows, kCols});
    std::span<uint16_t> bits = t.as<uint16_t>();
    lowbit::parallel_for(kRows, 0, [&](int64_t first, int64_t last) {
      for (int64_t r = first; r < last; ++r) {
        uint64_t state = uint64_t(r) * 0x2545f4914f6cdd1dull + 1;
        for (int64_t c = 0; c < kCols; ++c) {
          const double gaussian = std::sqrt(-2.0 * std::log(uniform_open(state))) * std::cos(6.283185307179586 * uniform_open(state));
          const double log_scale = std::sqrt(-2.0 * std::log(uniform_open(state))) * std::cos(6.283185307179586 * uniform_open(state));
          const float value = float(0.02 * gaussian * std::exp(0.7 * log_scale));
          bits[size_t(r * kCols + c)] = uint16_t(std::bit_cast<uint32_t>(value) >> 16);  // truncation is fine for data
        }
      }
    });
    return t;
  }();
  return weight;
}

struct FourBitCase {
  bnb::QuantType type;
  bool double_quant;
};

int64_t scale_bytes(const bnb::Bnb4bitState& state) {
  if (!state.nested) return int64_t(state.absmax.size() * sizeof(float));
  return int64_t(state.nested->codes.size() + state.nested->nested_absmax.size() * sizeof(float) + sizeof(float));
}

void report(benchmark::State& state, int64_t bytes_per_iteration) {
  state.SetBytesProcessed(int64_t(state.iterations()) * bytes_per_iteration);
  state.counters["threads"] = double(lowbit::ThreadPool::global().size());
}

void BM_bnb_quantize_4bit(benchmark::State& state, FourBitCase c) {
  const Tensor& weight = heavy_tailed_weight();
  const bnb::Bnb4bitOptions options{.quant_type = c.type, .blocksize = 64, .double_quant = c.double_quant};
  int64_t written = 0;
  for (auto _ : state) {
    const bnb::Bnb4bitQuantized q = bnb::quantize_4bit(weight.view(), options);
    benchmark::DoNotOptimize(q.packed.data());
    written = int64_t(q.packed.size()) + scale_bytes(q.state);
  }
  report(state, kElements * 2 + written);
}

void BM_bnb_dequantize_4bit(benchmark::State& state, FourBitCase c) {
  const bnb::Bnb4bitOptions options{.quant_type = c.type, .blocksize = 64, .double_quant = c.double_quant};
  const bnb::Bnb4bitQuantized q = bnb::quantize_4bit(heavy_tailed_weight().view(), options);
  Tensor out(DType::bf16, {kRows, kCols});  // reused, as memcpy reuses its destination
  for (auto _ : state) {
    bnb::dequantize_4bit_into(q.packed, q.state, DType::bf16, out.buffer.span());
    benchmark::DoNotOptimize(out.buffer.data());
    benchmark::ClobberMemory();
  }
  report(state, int64_t(q.packed.size()) + scale_bytes(q.state) + kElements * 2);
}

// The allocating API (a fresh 117 MB tensor per call): the difference is the page faults.
void BM_bnb_dequantize_4bit_allocating(benchmark::State& state, FourBitCase c) {
  const bnb::Bnb4bitOptions options{.quant_type = c.type, .blocksize = 64, .double_quant = c.double_quant};
  const bnb::Bnb4bitQuantized q = bnb::quantize_4bit(heavy_tailed_weight().view(), options);
  for (auto _ : state) {
    const Tensor out = bnb::dequantize_4bit(q.packed, q.state, DType::bf16);
    benchmark::DoNotOptimize(out.buffer.data());
  }
  report(state, int64_t(q.packed.size()) + scale_bytes(q.state) + kElements * 2);
}

void BM_bnb_quantize_int8(benchmark::State& state) {
  const Tensor& weight = heavy_tailed_weight();
  for (auto _ : state) {
    const bnb::Int8RowwiseQuantized q = bnb::quantize_int8_rowwise(weight.view(), 0.0f);
    benchmark::DoNotOptimize(q.cb.data());
  }
  report(state, kElements * 2 + kElements + kRows * int64_t(sizeof(float)));
}

void BM_bnb_dequantize_int8(benchmark::State& state) {
  const bnb::Int8RowwiseQuantized q = bnb::quantize_int8_rowwise(heavy_tailed_weight().view(), 0.0f);
  Tensor out(DType::bf16, {kRows, kCols});
  for (auto _ : state) {
    bnb::dequantize_int8_rowwise_into(q, DType::bf16, out.buffer.span());
    benchmark::DoNotOptimize(out.buffer.data());
    benchmark::ClobberMemory();
  }
  report(state, kElements + kRows * int64_t(sizeof(float)) + kElements * 2);
}

// Registered in a loop rather than by macro: one line per format, named BM_bnb_<op>/<format>.
const bool kRegistered = [] {
  struct Named {
    std::string name;
    FourBitCase c;
  };
  std::vector<Named> four_bit;  // nf4, nf4_dq, fp4, fp4_dq
  for (const bnb::QuantType type : bnb::kQuantTypes)
    for (const bool double_quant : {false, true})
      four_bit.push_back({std::string(bnb::quant_type_name(type)) + (double_quant ? "_dq" : ""), {type, double_quant}});
  for (const auto& [name, c] : four_bit)
    benchmark::RegisterBenchmark((std::string("BM_bnb_quantize/") + name).c_str(), BM_bnb_quantize_4bit, c)
        ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("BM_bnb_quantize/int8", BM_bnb_quantize_int8)->Unit(benchmark::kMillisecond)->UseRealTime();
  for (const auto& [name, c] : four_bit)
    benchmark::RegisterBenchmark((std::string("BM_bnb_dequantize/") + name).c_str(), BM_bnb_dequantize_4bit, c)
        ->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("BM_bnb_dequantize/int8", BM_bnb_dequantize_int8)->Unit(benchmark::kMillisecond)->UseRealTime();
  benchmark::RegisterBenchmark("BM_bnb_dequantize_allocating/nf4", BM_bnb_dequantize_4bit_allocating,
                               FourBitCase{bnb::QuantType::nf4, false})->Unit(benchmark::kMillisecond)->UseRealTime();
  return true;
}();

}  // namespace
