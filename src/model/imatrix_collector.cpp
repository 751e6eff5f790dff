#include "lowbit/model/imatrix_collector.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "lowbit/core/error.h"

namespace lowbit {

ImatrixRun collect_imatrix(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                           Progress& progress) {
  if (n_ctx < 16) throw Error(fmt::format("context {} is too small: llama.cpp ignores batches under 16 tokens", n_ctx));
  const int64_t chunks = int64_t(tokens.size()) / n_ctx;
  if (chunks < 1) throw Error(fmt::format("{} tokens: fewer than one window of {}", tokens.size(), n_ctx));
  std::map<std::string, ImatrixSums> sums;
  const ActivationObserver observe = [&](const std::string& weight, const float* x, int64_t rows, int64_t cols) {
    if (!weight.starts_with("blk.")) return;
    auto& e = sums[weight];
    if (e.sums.empty()) {
      e.name = weight;
      e.sums.assign(size_t(cols), 0.0f);
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) e.sums[size_t(c)] += x[r * cols + c] * x[r * cols + c];
    e.count += float(rows);
  };
  // Windows go through the model in batches; the observer still sees their rows in order.
  const int64_t batch = std::max(1, runtime.batch_windows(n_ctx));
  progress.begin("imatrix", chunks, 0);
  for (int64_t c0 = 0; c0 < chunks; c0 += batch) {
    const int64_t windows = std::min(batch, chunks - c0);
    std::vector<int32_t> batch_tokens(tokens.begin() + c0 * n_ctx, tokens.begin() + (c0 + windows) * n_ctx);
    if (bos)
      for (int64_t w = 0; w < windows; ++w) batch_tokens[size_t(w * n_ctx)] = *bos;
    runtime.forward(batch_tokens, int(windows), observe);
    progress.advance(fmt::format("window {}", c0 + windows), 0, windows);
  }
  progress.end();
  ImatrixRun run{.chunks = chunks};
  for (auto& [name, e] : sums) run.entries.push_back(std::move(e));
  return run;
}

}  // namespace lowbit
