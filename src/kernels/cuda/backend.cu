// The entry point liblowbit_cuda.so exports: the Backend interface over this module's kernels.
#include "lowbit/kernels/cuda/backend.h"

namespace lowbit::cuda {
namespace {

class ModuleBackend final : public Backend {
 public:
  std::vector<DeviceInfo> devices() const override { return cuda::devices(); }
  std::string bench_device_description() const override { return cuda::bench_device_description(); }
  void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row) const override {
    cuda::run_benchmarks(options, on_row);
  }
};

}  // namespace
}  // namespace lowbit::cuda

// nullptr when the caller was built against another version of the interface.
extern "C" __attribute__((visibility("default"))) const lowbit::cuda::Backend* lowbit_cuda_backend(int abi) {
  static const lowbit::cuda::ModuleBackend backend;
  return abi == lowbit::cuda::kBackendAbi ? &backend : nullptr;
}
