// libFuzzer target: the GGUF parser must reject any malformed input with lowbit::Error, never crash,
// hang, read out of bounds or allocate what the input merely claims. Built with ASan and UBSan.
#include <cstddef>
#include <cstdint>
#include <span>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const auto file = lowbit::gguf::File::parse({reinterpret_cast<const std::byte*>(data), size}, "fuzz");
    for (const auto& t : file.tensors()) {
      const auto bytes = file.data(t);
      volatile std::byte sink{};
      if (!bytes.empty()) {  // every tensor must lie inside the input
        sink = bytes.front();
        sink = bytes.back();
      }
      (void)sink;
      (void)lowbit::gguf::tensor_bytes(t.type, t.ne);
    }
    for (const auto& kv : file.metadata()) (void)kv.value.as_int();
  } catch (const lowbit::Error&) {
  }
  return 0;
}
