// The CPU codecs' throughput, as `lowbit bench` reports it: each format quantizes and dequantizes one
// heavy-tailed random bf16/f32 weight, timed beside memcpy of the same weight on the same threads in the
// same run (the ratio is what carries over between machines).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lowbit {

struct CodecTiming {
  std::string format;
  double quantize_gbs = 0, dequantize_gbs = 0;  // bytes read + written per second
};

struct CodecBenchmark {
  int64_t rows = 0, cols = 0;
  unsigned threads = 0;
  double memcpy_gbs = 0;  // the bf16 weight copied, read + written
  std::vector<CodecTiming> formats;
};

// A weight of at most 2^28 values and sides of at most 2^20; every ggml format's block must divide
// `cols`. Each time is the median of `repeats` runs after one warm-up.
CodecBenchmark bench_cpu_codecs(const std::vector<std::string>& formats, int64_t rows, int64_t cols, int repeats);

}  // namespace lowbit
