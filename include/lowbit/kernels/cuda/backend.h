// The CUDA backend as the rest of lowbit sees it: one interface, implemented inside
// liblowbit_cuda.so (src/kernels/cuda/backend.cu), which a program opens only when a GPU command
// runs (lowbit/pipeline/cuda_backend.h). The CUDA runtime, cuBLAS and cuBLASLt are linked into that
// module alone: a CPU command (inspect, quantize, eval on the CPU) never maps them, and a machine
// without them runs every CPU command. A new GPU entry point is a new virtual here, implemented in
// backend.cu; bump kBackendAbi when the interface changes, so that a stale module is refused.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "lowbit/kernels/cuda/benchmark.h"
#include "lowbit/kernels/cuda/device.h"

namespace lowbit::cuda {

inline constexpr int kBackendAbi = 1;
// The module's one exported symbol: extern "C" const Backend* lowbit_cuda_backend(int abi).
inline constexpr const char* kBackendEntry = "lowbit_cuda_backend";

class Backend {
 public:
  virtual ~Backend() = default;
  // The GPUs the CUDA runtime sees; empty without a device or a driver.
  virtual std::vector<DeviceInfo> devices() const = 0;
  // benchmark.h: the device in one line, and every kernel beside its reference.
  virtual std::string bench_device_description() const = 0;
  virtual void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row) const = 0;
};

}  // namespace lowbit::cuda
