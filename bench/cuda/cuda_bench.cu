// lowbit_cuda_bench [--quick | --large] [--codecs-only | --matmul-only | --decode-only | --4bit-only | --int8-only]
//                   [--tokens N,N,...]: the GPU benchmarks (include/lowbit/kernels/cuda/benchmark.h) as one markdown
// table, for docs/benchmarks.md. --tokens: the 4-bit products at these token counts only (a profiler's run).
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <string>

#include "lowbit/kernels/cuda/benchmark.h"

int main(int argc, char** argv) {
  lowbit::cuda::BenchOptions options;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--quick") options.quick = true;
    else if (arg == "--large") options.large = true;
    else if (arg == "--codecs-only") options.matmul = false;
    else if (arg == "--matmul-only") options.codecs = false;
    else if (arg == "--decode-only") options.codecs = false, options.products = lowbit::cuda::BenchOptions::Products::decode;
    else if (arg == "--4bit-only") options.codecs = false, options.products = lowbit::cuda::BenchOptions::Products::four_bit;
    else if (arg == "--int8-only") options.codecs = false, options.products = lowbit::cuda::BenchOptions::Products::int8;
    else if (arg == "--tokens" && i + 1 < argc) {
      std::istringstream list(argv[++i]);
      for (std::string count; std::getline(list, count, ',');) {
        const long long tokens = std::atoll(count.c_str());
        if (tokens < 1 || tokens > 4096) {
          std::fprintf(stderr, "lowbit_cuda_bench: --tokens takes counts from 1 to 4096, got '%s'\n", count.c_str());
          return 2;
        }
        options.tokens.push_back(tokens);
      }
    } else {
      std::fprintf(stderr, "usage: lowbit_cuda_bench [--quick | --large] [--codecs-only | --matmul-only | --decode-only | --4bit-only | "
                           "--int8-only] [--tokens N,N,...]\n");
      return 2;
    }
  }
  std::printf("device: %s\n\n", lowbit::cuda::bench_device_description().c_str());
  std::printf("| %-26s | %-11s | %6s | %8s | %7s | %-11s | %8s | %7s | %5s |\n", "kernel", "weight", "tokens", "us",
              "GB/s", "reference", "ref us", "ref GB/s", "ratio");
  std::printf("|---|---|--:|--:|--:|---|--:|--:|--:|\n");
  lowbit::cuda::run_benchmarks(options, [](const lowbit::cuda::BenchRow& r) {
    std::printf("| %-26s | %-11s | %6s | %8.1f | %7.0f | %-11s | %8.1f | %7.0f | %5.2f |\n", r.kernel.c_str(),
                r.shape.c_str(), r.tokens ? std::to_string(r.tokens).c_str() : "-", r.us, r.gbps, r.reference.c_str(),
                r.reference_us, r.reference_gbps, r.ratio);
    std::fflush(stdout);
  });
  return 0;
}
