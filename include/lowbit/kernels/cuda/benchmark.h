// The GPU kernels timed beside references measured in the same run: the codecs against a 16-byte
// vector copy kernel (GB/s moved), the matmuls against cuBLAS with a 16-bit weight (time).
//
// Method: every call is captured once into a CUDA graph per input set; a row's time is the median of
// 30 graph replays (after 5 warm-ups), each between two CUDA events, so it is device time without
// host launch gaps. Sets rotate so that the data of consecutive replays exceeds twice the L2: a
// kernel never finds its input already cached. Data: device-generated random codes, positive scales,
// heavy-tailed activations. Declared only when lowbit was built with LOWBIT_CUDA.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace lowbit::cuda {

struct BenchRow {
  std::string kernel;    // what was timed, e.g. "dequant nf4+dq -> bf16", "matmul nf4+dq bf16"
  std::string shape;     // the weight, rows x cols
  int64_t tokens = 0;    // matmuls: activation rows; 0 for the codecs
  double us = 0;         // median device time
  double gbps = 0;       // bytes the kernel must move (read + written) per second, 1e9
  std::string reference; // "copy" (same bytes moved) or "cuBLAS bf16" / "cuBLAS f16" (same product)
  double reference_us = 0, reference_gbps = 0;
  double ratio = 0;      // codecs: gbps / reference_gbps; matmuls: reference_us / us (> 1: faster)
};

struct BenchOptions {
  bool codecs = true;
  bool matmul = true;
  bool quick = false;  // one size each, for a smoke run
  bool large = false;  // the codecs' 4096x14336 rows alone (past L2: what a profiler should see)
  // Which products: all; decoding's alone (1-8 tokens: the matvec and fused 4-bit kernels); the 4-bit
  // products (nf4+dq, q4_K) beside cuBLAS bf16 at 1-512 tokens alone; LLM.int8 beside cuBLAS f16 alone.
  enum class Products { all, decode, four_bit, int8 } products = Products::all;
  std::vector<int64_t> tokens;  // the 4-bit products' token counts, if not the default list
};

// The device's name, SM count and L2 size in one line.
std::string bench_device_description();
// Runs the benchmarks on device 0, calling `on_row` as each row is measured.
void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row);

}  // namespace lowbit::cuda
