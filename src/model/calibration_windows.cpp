#include "model/calibration_windows.h"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {

int64_t observe_windows(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                        const ActivationObserver& observe, Progress& progress, const char* stage) {
  if (n_ctx < 16) throw Error(fmt::format("context {} is too small: llama.cpp ignores batches under 16 tokens", n_ctx));
  const int64_t chunks = int64_t(tokens.size()) / n_ctx;
  if (chunks < 1) throw Error(fmt::format("{} tokens: fewer than one window of {}", tokens.size(), n_ctx));
  // Windows go through the model in batches; the observer still sees their rows in order.
  const int64_t batch = std::max(1, runtime.batch_windows(n_ctx));
  progress.begin(stage, chunks, 0);
  for (int64_t c0 = 0; c0 < chunks; c0 += batch) {
    const int64_t windows = std::min(batch, chunks - c0);
    std::vector<int32_t> batch_tokens(tokens.begin() + c0 * n_ctx, tokens.begin() + (c0 + windows) * n_ctx);
    if (bos)
      for (int64_t w = 0; w < windows; ++w) batch_tokens[size_t(w * n_ctx)] = *bos;
    runtime.forward(batch_tokens, int(windows), observe);
    progress.advance(fmt::format("window {}", c0 + windows), 0, windows);
  }
  progress.end();
  return chunks;
}

}  // namespace lowbit
