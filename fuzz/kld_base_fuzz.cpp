// libFuzzer target: a --kld-base file (llama.cpp's --kl-divergence-base logits: header, tokens and
// one quantized log-probability record per scored position).
#include <vector>

#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/model/perplexity.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto path = fuzz::scratch_dir() / "base.logits";
  fuzz::write_file(path, data, size);
  try {
    const auto base = BaseLogits::load(path);
    std::vector<float> out(size_t(base.n_vocab()));
    for (int64_t i = 0; i < base.predictions(); ++i) base.log_probs(i, out);
  } catch (const Error&) {
  }
  return 0;
}
