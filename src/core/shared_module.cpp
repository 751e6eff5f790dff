#include "lowbit/core/shared_module.h"

#include <dlfcn.h>

#include <filesystem>
#include <vector>

namespace lowbit {

void* open_module_entry(const std::string& library, const std::string& entry, std::string& why_not) {
  std::vector<std::string> candidates;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    candidates.push_back((exe.parent_path() / library).string());
    candidates.push_back((exe.parent_path().parent_path() / "lib" / library).string());
  }
  // Beside the shared object that holds lowbit, when that is not the executable: the Python
  // extension lowbit/_lowbit.so finds lowbit/liblowbit_cuda.so.
  Dl_info self{};
  if (::dladdr(reinterpret_cast<void*>(&open_module_entry), &self) && self.dli_fname) {
    const auto holder = std::filesystem::path(self.dli_fname);
    if (holder.has_parent_path() && holder != exe) candidates.push_back((holder.parent_path() / library).string());
  }
  candidates.push_back(library);  // LD_LIBRARY_PATH, the cache, the system directories
  why_not.clear();
  for (const auto& candidate : candidates) {
    if (candidate.find('/') != std::string::npos && !std::filesystem::exists(candidate, ec)) continue;
    void* handle = ::dlopen(candidate.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
      const char* error = ::dlerror();
      why_not = "cannot load " + candidate + ": " + (error ? error : "unknown error");
      continue;
    }
    if (void* symbol = ::dlsym(handle, entry.c_str())) return symbol;
    why_not = candidate + " has no entry point " + entry;
    ::dlclose(handle);
  }
  if (why_not.empty()) why_not = library + " was not found beside the executable or on the library path";
  return nullptr;
}

}  // namespace lowbit
