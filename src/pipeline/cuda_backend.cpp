#include "lowbit/pipeline/cuda_backend.h"

#include <mutex>

#include "lowbit/core/error.h"
#include "lowbit/core/shared_module.h"

namespace lowbit::cuda {

const Backend& backend() {
#ifndef LOWBIT_CUDA_MODULE
  throw Error("this lowbit was built without CUDA (configure with -DLOWBIT_CUDA=ON)");
#else
  static std::once_flag once;
  static const Backend* loaded = nullptr;
  static std::string why_not;
  std::call_once(once, [] {
    using Entry = const Backend* (*)(int);
    if (auto* entry = reinterpret_cast<Entry>(open_module_entry(LOWBIT_CUDA_MODULE, kBackendEntry, why_not))) {
      loaded = entry(kBackendAbi);
      if (!loaded) why_not = std::string(LOWBIT_CUDA_MODULE) + " was built for another version of lowbit";
    }
  });
  if (!loaded) throw Error("the CUDA backend is not available: " + why_not);
  return *loaded;
#endif
}

}  // namespace lowbit::cuda
