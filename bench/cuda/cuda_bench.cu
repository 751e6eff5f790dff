// lowbit_cuda_bench [--quick | --large] [--codecs-only | --matmul-only | --decode-only | --4bit-only | --int8-only]: the GPU benchmarks
// (include/lowbit/kernels/cuda/benchmark.h) as one markdown table, for docs/benchmarks.md.
#include <cstdio>
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
    else {
      std::fprintf(stderr, "usage: lowbit_cuda_bench [--quick | --large] [--codecs-only | --matmul-only | --decode-only | --4bit-only | --int8-only]\n");
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
