// libFuzzer target: the safetensors parser must reject any malformed input with lowbit::Error,
// never crash, hang or read out of bounds. Built by scripts/fuzz.sh with ASan and UBSan.
#include <cstddef>
#include <cstdint>
#include <span>

#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = lowbit::safetensors::File::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
    for (const auto& t : file.tensors()) {
      const auto view = file.view(t);
      volatile std::byte sink{};
      if (!view.bytes.empty()) sink = view.bytes.back();  // every view must lie inside the input
      (void)sink;
    }
  } catch (const lowbit::Error&) {
  }
  return 0;
}
