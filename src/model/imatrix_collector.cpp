#include "lowbit/model/imatrix_collector.h"

#include <fmt/format.h>

#include <map>

#include "lowbit/core/error.h"

namespace lowbit {

ImatrixRun collect_imatrix(const LlamaModel& model, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
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
  progress.begin("imatrix", chunks, 0);
  for (int64_t c = 0; c < chunks; ++c) {
    std::vector<int32_t> window(tokens.begin() + c * n_ctx, tokens.begin() + (c + 1) * n_ctx);
    if (bos) window[0] = *bos;
    model.forward(window, observe);
    progress.advance(fmt::format("window {}", c + 1), 0);
  }
  progress.end();
  ImatrixRun run{.chunks = chunks};
  for (auto& [name, e] : sums) run.entries.push_back(std::move(e));
  return run;
}

}  // namespace lowbit
