// libFuzzer target: GPTQ's Hessian files (lowbit hessian's GGUF container), seeded with a small one.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/hessian.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto path = fuzz::scratch_dir() / "hessian";
  fuzz::write_file(path, data, size);
  try {
    const HessianFile h(path);
    if (h.tokens() < 1) __builtin_trap();
    for (const char* weight : {"blk.0.attn_q.weight", "blk.0.attn_k.weight", "blk.0.ffn_down.weight", "output.weight"}) {
      const HessianFile::Input* in = h.find(weight);
      if (!in) continue;
      // Every input GPTQ factors holds columns × columns values.
      if (in->columns < 1 || in->xtx.size() != size_t(in->columns * in->columns)) __builtin_trap();
      volatile float sink = in->xtx.back();
      (void)sink;
    }
  } catch (const Error&) {
  }
  return 0;
}
