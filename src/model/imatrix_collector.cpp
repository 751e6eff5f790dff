#include "lowbit/model/imatrix_collector.h"

#include <map>

#include "model/calibration_windows.h"

namespace lowbit {

ImatrixRun collect_imatrix(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                           Progress& progress) {
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
  ImatrixRun run{.chunks = observe_windows(runtime, tokens, n_ctx, bos, observe, progress, "imatrix")};
  for (auto& [name, e] : sums) run.entries.push_back(std::move(e));
  return run;
}

}  // namespace lowbit
