// What quantizing one weight costs at the output: the KL-divergence of the model's next-token
// distributions, with only that weight replaced, from the unchanged model's, on a few calibration
// windows. The planner uses it as the loss of a candidate format in place of the weight's relative
// reconstruction error, which does not know how much each tensor's error matters downstream.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowbit/model/runtime.h"

namespace lowbit {

class KldProbe {
 public:
  // Runs `model` as it is on `windows` consecutive windows of n_ctx tokens of `tokens` (each window's
  // first token replaced by `bos` when given) and keeps, per window, the hidden state entering every
  // block and the log-probabilities of the second half of the window (the positions llama-perplexity
  // scores). Throws when `tokens` holds fewer than `windows` windows.
  KldProbe(LlamaRuntime& model, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos, int windows);

  KldProbe(const KldProbe&) = delete;
  KldProbe& operator=(const KldProbe&) = delete;
  ~KldProbe();  // the model's weights as loaded again

  // Mean KL(base || model) over the scored positions when the weight `name` (a GGUF name) is `weight`
  // and every other weight is as loaded (or, after set_background, as there). Reruns only the blocks
  // from the weight's own on. Deterministic; exactly 0 for the loaded weight itself.
  double kld_with(const std::string& name, const QuantizedMatrix& weight);

  // A weight the probe holds for the model, its bytes with it.
  struct HeldWeight {
    std::string name;
    GgmlType type = GgmlType::F32;
    int64_t rows = 0, cols = 0;
    std::vector<std::byte> data;
  };
  // Puts `weights` in the model in place of the loaded ones for every later kld_with, which then
  // measures a weight among them, and returns their joint KLD (the base stays the unchanged model).
  // An empty list puts the loaded weights back.
  double set_background(std::vector<HeldWeight> weights);

  int64_t positions() const;  // scored positions per call

 private:
  void restore_loaded();
  // The states entering each block with the weights the model has now; returns the last (entering the head).
  const std::vector<float>& run_states();
  double mean_kld(const std::vector<float>& hidden) const;  // over the scored positions, from the head's input

  LlamaRuntime& model_;
  int n_ctx_, windows_;
  std::vector<int32_t> tokens_;                // the windows' tokens end to end, BOS in place
  std::vector<std::vector<float>> states_;     // [layer]: the hidden state of all windows entering block `layer`
  std::unique_ptr<LlamaRuntime::LogProbReference> base_;  // the scored positions' n_vocab log-probabilities
  std::vector<HeldWeight> background_;                        // in the model in place of...
  std::vector<std::pair<std::string, QuantizedMatrix>> loaded_;  // ...these, as loaded
};

}  // namespace lowbit
