// libFuzzer target: the JSON quant state of a bitsandbytes 4-bit weight (the bytes of its
// "<w>.quant_state.bitsandbytes__nf4" tensor).
#include <string_view>

#include "lowbit/core/error.h"
#include "lowbit/io/bnb_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  try {
    const auto s = bnb::parse_quant_state({reinterpret_cast<const char*>(data), size}, {.file = "fuzz", .tensor = "w"});
    (void)shape_elements(s.shape);
    (void)bnb::pack_quant_state(s);
  } catch (const Error&) {
  }
  return 0;
}
