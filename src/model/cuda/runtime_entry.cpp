// The model runtime's entry point in liblowbit_cuda.so: RuntimeBackend over this module's functions.
#include "lowbit/model/cuda_runtime.h"

namespace lowbit::cuda {
namespace {

class ModuleRuntime final : public RuntimeBackend {
 public:
  std::unique_ptr<LlamaRuntime> make_llama_runtime(LlamaModel& model, const RuntimeOptions& options) const override {
    return cuda::make_llama_runtime(model, options);
  }
  std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, int count,
                                const RuntimeOptions& options) const override {
    return cuda::generate(model, prompt, count, options);
  }
  GenerationTiming time_generation(LlamaModel& model, int prompt, int generate, const RuntimeOptions& options) const override {
    return cuda::time_generation(model, prompt, generate, options);
  }
};

}  // namespace
}  // namespace lowbit::cuda

// nullptr when the caller was built against another version of the interface.
extern "C" __attribute__((visibility("default"))) const lowbit::cuda::RuntimeBackend* lowbit_cuda_runtime(int abi) {
  static const lowbit::cuda::ModuleRuntime runtime;
  return abi == lowbit::cuda::kRuntimeAbi ? &runtime : nullptr;
}
