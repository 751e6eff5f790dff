#include "lowbit/model/imatrix_collector.h"

#include <algorithm>
#include <map>

#include "model/calibration_windows.h"

namespace lowbit {

ImatrixRun collect_imatrix(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                           Progress& progress) {
  std::map<std::string, ImatrixSums> sums;
  const ActivationObserver observe = [&](const std::string& weight, int expert, const float* x, int64_t rows, int64_t cols) {
    if (!weight.starts_with("blk.")) return;
    auto& e = sums[weight];
    if (e.sums.empty()) {
      const int experts = expert < 0 ? 1 : runtime.config().n_expert;
      e.name = weight;
      e.sums.assign(size_t(cols * experts), 0.0f);
      e.counts.assign(size_t(experts), 0.0f);
    }
    const int slot = std::max(expert, 0);
    float* s = e.sums.data() + int64_t(slot) * cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) s[c] += x[r * cols + c] * x[r * cols + c];
    e.counts[size_t(slot)] += float(rows);
  };
  ImatrixRun run{.chunks = observe_windows(runtime, tokens, n_ctx, bos, observe, progress, "imatrix")};
  for (auto& [name, e] : sums) run.entries.push_back(std::move(e));
  return run;
}

}  // namespace lowbit
