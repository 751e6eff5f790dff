// The forward pass as the measuring code (perplexity, KL-divergence, importance matrices, the probe)
// sees it, whichever device computes it: LlamaModel itself on the CPU, or a CUDA backend built over a
// loaded LlamaModel (model/cuda_runtime.h). Hidden states and logits cross this interface as host
// floats, so the measuring code is the same for every device.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/model/llama_config.h"

namespace lowbit {

enum class Device { cpu, cuda };
inline const char* device_name(Device device) { return device == Device::cpu ? "cpu" : "cuda"; }

class LlamaRuntime {
 public:
  virtual ~LlamaRuntime() = default;
  virtual const LlamaConfig& config() const = 0;

  // Logits ((windows × len) × n_vocab, row-major) of `windows` windows of equal length `len` laid end to
  // end in `tokens`, each starting at position 0.
  virtual std::vector<float> forward(std::span<const int32_t> tokens, int windows = 1,
                                     const ActivationObserver& observer = nullptr) const = 0;

  // The log-probability of each window's next token at every row but the window's last (there: NaN),
  // (windows × len) values laid out as forward()'s rows: what perplexity needs, without the logits
  // leaving the device. The default takes forward()'s logits through log_softmax (model/perplexity.h).
  virtual std::vector<float> next_token_log_probs(std::span<const int32_t> tokens, int windows = 1) const;

  // The probe's reference (model/kld_probe.h): log-probabilities (rows.size() × n_vocab) at chosen rows
  // of a forward pass, kept where this runtime computes (a GPU keeps its copy on the device).
  class LogProbReference {
   public:
    virtual ~LogProbReference() = default;
    std::vector<int64_t> rows;
    std::vector<float> log_probs;
  };
  virtual std::unique_ptr<LogProbReference> keep_log_probs(std::vector<int64_t> rows, std::vector<float> log_probs) const;
  // KL(reference ‖ this model) at each of the reference's rows of the output of `hidden` (the state
  // entering the output head): output_logits and log_softmax, without the logits leaving the device.
  virtual std::vector<double> output_klds(const std::vector<float>& hidden, const LogProbReference& reference) const;

  // forward() in its three steps, so a probe that changes one weight reruns only what follows it:
  // the tokens' embedding rows (tokens × n_embd), one block applied in place to `windows` windows of
  // equal length, the logits of the last state.
  virtual std::vector<float> embed(std::span<const int32_t> tokens) const = 0;
  virtual void apply_layer(int layer, std::vector<float>& hidden, int windows = 1,
                           const ActivationObserver& observer = nullptr) const = 0;
  virtual std::vector<float> output_logits(const std::vector<float>& hidden, const ActivationObserver& observer = nullptr) const = 0;

  // Makes later passes use `weight` for the matrix named `name` (GGUF name; its bytes must stay alive
  // while it is in use) and returns the matrix it replaces, to swap back. A tied output layer follows
  // token_embd.weight. Throws for a name the forward pass does not use or a weight of another shape.
  virtual QuantizedMatrix swap_weight(const std::string& name, const QuantizedMatrix& weight) = 0;

  // How many windows of n_ctx one forward() call should take to keep this device busy (1 on the CPU,
  // whose threads already split one window's work).
  virtual int batch_windows(int n_ctx) const { (void)n_ctx; return 1; }

  virtual Device device() const = 0;
};

}  // namespace lowbit
