// Perplexity and KL-divergence measured the way llama.cpp's llama-perplexity measures them:
// consecutive windows of n_ctx tokens, each window's first token replaced by BOS, and the second half
// of each window scored (n_ctx - 1 - n_ctx/2 predictions per window).
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <span>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/model/runtime.h"

namespace lowbit {

struct KldStats {
  double mean = 0, median = 0, p99 = 0, max = 0;
};

struct EvalResult {
  double ppl = 0;                 // exp(mean negative log-likelihood)
  double nll = 0;                 // mean negative log-likelihood, nats per token
  int64_t tokens = 0;             // predictions scored
  int64_t chunks = 0;
  std::optional<double> base_ppl; // with a base: its perplexity on the same predictions
  std::optional<KldStats> kld;    // KL(base || model) per prediction
  std::optional<double> top1;     // fraction of predictions whose argmax agrees with the base's
};

// Log-probabilities of a base model at the scored positions of every window, kept as llama.cpp's
// --kl-divergence-base file keeps them (per prediction: a scale and offset, then one uint16 per token
// of the vocabulary), so a base is run once and reused: `lowbit eval --save-logits` / `--kld-base`.
class BaseLogits {
 public:
  BaseLogits(int n_ctx, int n_vocab, std::vector<int32_t> tokens);
  static BaseLogits load(const std::filesystem::path& path);
  void save(const std::filesystem::path& path) const;

  // Appends the scored positions of one window from its logits (n_ctx × n_vocab).
  void add_window(std::span<const float> logits);
  // The log-probabilities of prediction `index` (in scoring order) into `out` (n_vocab values).
  void log_probs(int64_t index, std::span<float> out) const;

  int n_ctx() const { return n_ctx_; }
  int n_vocab() const { return n_vocab_; }
  const std::vector<int32_t>& tokens() const { return tokens_; }
  int64_t predictions() const { return int64_t(records_.size() / record_size()); }

 private:
  size_t record_size() const { return size_t(2 * ((n_vocab_ + 1) / 2) + 4); }
  int n_ctx_, n_vocab_;
  std::vector<int32_t> tokens_;   // the windows' tokens as llama.cpp stores them (n_chunk × n_ctx)
  std::vector<uint16_t> records_;
};

// Scores `tokens` (BOS first when the model adds one) in windows of n_ctx. With `base`, also the
// KL-divergence from the base's distribution and top-1 agreement; `save_base` receives the model's
// own log-probabilities (to reuse this model as a base later). Throws if fewer than 2 × n_ctx tokens.
EvalResult evaluate(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                    const BaseLogits* base = nullptr, BaseLogits* save_base = nullptr, Progress& progress = Progress::none());

// log_softmax as llama-perplexity computes it: float logits, a double sum of exp(l - max); every KL
// divergence lowbit reports goes through this one function, so an unchanged model gives exactly 0.
void log_softmax(const float* logits, int n, float* out);

}  // namespace lowbit
