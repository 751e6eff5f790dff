// libFuzzer target: importance matrices, both forms (chosen by content: the GGUF form by its magic,
// else llama.cpp's legacy .dat), seeded with both.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/imatrix.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto path = fuzz::scratch_dir() / "imatrix";
  fuzz::write_file(path, data, size);
  try {
    const auto m = ImportanceMatrix::load(path);
    for (const auto& e : m.entries()) {
      volatile float sink = 0;
      // Every entry holds the columns × experts weights the quantizers will read.
      if (e.columns < 1 || e.experts < 1 || e.weights.size() != size_t(e.columns * e.experts)) __builtin_trap();
      sink = e.weights.back();
      (void)sink;
      (void)m.find(e.name);
    }
  } catch (const Error&) {
  }
  return 0;
}
