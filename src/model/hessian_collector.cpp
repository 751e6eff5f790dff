#include "lowbit/model/hessian_collector.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <map>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "model/calibration_windows.h"

namespace lowbit {
namespace {

// Adds XᵀX of `rows` × `cols` row-major x to the upper triangle of xtx (cols × cols). Four rows of xtx
// at a time, so each row of x is read once per four; the diagonal is summed row by row of x, in the
// order collect_imatrix sums its squares.
void add_upper_xtx(float* xtx, const float* x, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 4;
  parallel_for((cols + kTile - 1) / kTile, 1, [&](int64_t begin, int64_t end) {
    for (int64_t tile = begin; tile < end; ++tile) {
      const int64_t i0 = tile * kTile, n = std::min(kTile, cols - i0);
      for (int64_t r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        for (int64_t k = 0; k < n; ++k) {
          const float a = xr[i0 + k];
          float* out = xtx + (i0 + k) * cols;
          for (int64_t j = i0 + k; j < cols; ++j) out[j] += a * xr[j];
        }
      }
    }
  });
}

void mirror_upper(std::vector<float>& xtx, int64_t cols) {
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < i; ++j) xtx[size_t(i * cols + j)] = xtx[size_t(j * cols + i)];
}

}  // namespace

std::string hessian_input_of(std::string_view weight) {
  static constexpr std::array<std::pair<std::string_view, std::string_view>, 5> kShared{{
      {"attn_q.weight", "attn_qkv"}, {"attn_k.weight", "attn_qkv"}, {"attn_v.weight", "attn_qkv"},
      {"ffn_gate.weight", "ffn_gate_up"}, {"ffn_up.weight", "ffn_gate_up"},
  }};
  for (const auto& [suffix, input] : kShared)
    if (weight.ends_with(suffix)) return std::string(weight.substr(0, weight.size() - suffix.size())) + std::string(input);
  if (weight.ends_with(".weight")) return std::string(weight.substr(0, weight.size() - 7));
  return std::string(weight);
}

HessianRun collect_hessians(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                            Progress& progress) {
  std::map<std::string, HessianSums> sums;  // by input
  std::map<std::string, uint64_t> rows_seen;
  const ActivationObserver observe = [&](const std::string& weight, int expert, const float* x, int64_t rows, int64_t cols) {
    // GPTQ rounds 2-D weights: a stacked expert tensor would need one Hessian per expert (not collected).
    if (expert >= 0) return;
    HessianSums& s = sums[hessian_input_of(weight)];
    if (s.xtx.empty()) {
      s.input = hessian_input_of(weight);
      s.columns = cols;
      s.xtx.assign(size_t(cols * cols), 0.0f);
    }
    if (s.columns != cols) throw Error(fmt::format("{} reads {} columns, another weight of its input {}", weight, cols, s.columns));
    // Weights sharing an input see the same rows: they are added once, for the first weight.
    if (std::ranges::find(s.weights, weight) == s.weights.end()) s.weights.push_back(weight);
    if (s.weights.front() != weight) return;
    add_upper_xtx(s.xtx.data(), x, rows, cols);
    rows_seen[s.input] += uint64_t(rows);
  };
  HessianRun run{.chunks = observe_windows(runtime, tokens, n_ctx, bos, observe, progress, "hessian")};
  run.tokens = uint64_t(run.chunks) * uint64_t(n_ctx);
  for (auto& [name, s] : sums) {
    if (rows_seen[name] != run.tokens) throw Error(fmt::format("input {} saw {} rows of {}", name, rows_seen[name], run.tokens));
    mirror_upper(s.xtx, s.columns);
    run.inputs.push_back(std::move(s));
  }
  return run;
}

}  // namespace lowbit
