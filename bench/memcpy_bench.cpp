// The reference every CPU figure is compared with: memcpy bandwidth, counted as bytes read + written,
// on one thread and on all threads, measured in the same run as the codecs.
#include <benchmark/benchmark.h>

#include <cstring>
#include <vector>

#include "lowbit/core/thread_pool.h"

namespace {

constexpr size_t kBytes = size_t(4096) * 14336 * 2;  // a 4096×14336 bf16 weight: 117 MB

void BM_memcpy_1thread(benchmark::State& state) {
  std::vector<char> src(kBytes, 1), dst(kBytes);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), kBytes);
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * kBytes));
}
BENCHMARK(BM_memcpy_1thread)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_memcpy_all_threads(benchmark::State& state) {
  std::vector<char> src(kBytes, 1), dst(kBytes);
  constexpr int64_t kChunk = 1 << 20;
  for (auto _ : state) {
    lowbit::parallel_for(int64_t(kBytes / kChunk), 1, [&](int64_t b, int64_t e) {
      std::memcpy(dst.data() + b * kChunk, src.data() + b * kChunk, size_t(e - b) * kChunk);
    });
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(int64_t(state.iterations()) * int64_t(2 * kBytes));
}
BENCHMARK(BM_memcpy_all_threads)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
