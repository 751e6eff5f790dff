#include "lowbit/pipeline/cuda_backend.h"

#include <mutex>

#include "lowbit/core/error.h"
#include "lowbit/core/shared_module.h"

namespace lowbit::cuda {
namespace {

// One of the module's entry points, looked up once: `Interface* entry(int abi)`.
template <class Interface>
const Interface& module_entry([[maybe_unused]] const char* entry_name, [[maybe_unused]] int abi) {
#ifndef LOWBIT_CUDA_MODULE
  throw Error("this lowbit was built without CUDA (configure with -DLOWBIT_CUDA=ON)");
#else
  static std::once_flag once;
  static const Interface* loaded = nullptr;
  static std::string why_not;
  std::call_once(once, [&] {
    using Entry = const Interface* (*)(int);
    if (auto* entry = reinterpret_cast<Entry>(open_module_entry(LOWBIT_CUDA_MODULE, entry_name, why_not))) {
      loaded = entry(abi);
      if (!loaded) why_not = std::string(LOWBIT_CUDA_MODULE) + " was built for another version of lowbit";
    }
  });
  if (!loaded) throw Error("the CUDA backend is not available: " + why_not);
  return *loaded;
#endif
}

}  // namespace

const Backend& backend() { return module_entry<Backend>(kBackendEntry, kBackendAbi); }

const RuntimeBackend& runtime_backend() { return module_entry<RuntimeBackend>(kRuntimeEntry, kRuntimeAbi); }

}  // namespace lowbit::cuda
