// libFuzzer target: a bitsandbytes checkpoint (one safetensors file: 4-bit weights with their quant
// state, absmax, quant_map and nested companions, or int8 weights with SCB), dequantized as
// `lowbit dequantize` does. Sizes claimed by the quant state must be checked before anything is
// allocated by them.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto dir = fuzz::scratch_dir() / "bnb";
  const auto out = fuzz::scratch_dir() / "bnb-out";
  std::error_code ec;
  std::filesystem::remove_all(out, ec);
  std::filesystem::create_directories(dir);
  fuzz::write_file(dir / "model.safetensors", data, size);
  try {
    (void)dequantize_bnb(dir, out, std::nullopt);
  } catch (const Error&) {
  }
  return 0;
}
