// Running a model over a text, as the CLI's and the Python package's eval, imatrix and hessian do: the
// text's tokens as llama-perplexity takes them, perplexity and KL-divergence against a base model or a
// base logits file, importance matrices and GPTQ's Hessians written to a file.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/core/temporaries.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/model/perplexity.h"
#include "lowbit/pipeline/eval_model.h"

namespace lowbit {

std::string read_text_file(const std::filesystem::path& path);

// A text's tokens: BOS first when the vocabulary adds one, at most `chunks` windows of `ctx` (0: all).
struct TextTokens {
  std::vector<int32_t> ids;
  std::optional<int32_t> bos;
  // The tokens of the whole windows, as a logits file records them (each window's first token is BOS).
  std::vector<int32_t> windows(int ctx) const;
};
TextTokens tokenize_text(const EvalModel& model, const std::filesystem::path& model_path, const std::filesystem::path& text,
                         int ctx, int chunks = 0);

struct EvalRequest {
  std::string model, text;
  std::string base, kld_base;  // at most one: a base model, or a file of base log-probabilities
  std::string save_logits;     // empty: none; the base's log-probabilities when there is a base, else the model's
  std::vector<std::string> lora, base_lora;
  std::vector<double> lora_scale, base_lora_scale;
  int ctx = 512, chunks = 0;
  std::string device = "auto";
};

// The model's perplexity on the text; with a base, KL(base ‖ model) and top-1 agreement per prediction.
// A base model's perplexity is its own, exactly; a --kld-base file's is read back from its log-probabilities,
// which llama.cpp's format keeps only within 16 nats of the best token (so a text with tokens the model
// finds very unlikely reads lower there, as llama-perplexity reports it). Outputs are the caller's to check.
EvalResult evaluate_text(const EvalRequest& request, Progress& progress);
// {"ppl", "tokens", ["kld": {mean, median, p99, max}, "top1", "base_ppl", "delta_ppl"], "chunks", "ctx"}
nlohmann::ordered_json eval_result_json(const EvalResult& result, int ctx);

// What `lowbit imatrix` and `lowbit hessian` collect: the model over windows of `ctx` tokens of `text`
// (at most `chunks`; 0: all), written to `output`. Outputs are the caller's to check.
struct TextRunRequest {
  std::string model, text, output;
  int ctx = 512, chunks = 0;
  std::string device = "auto";  // where the model runs; Hessians' XᵀX is summed on the host either way
};
struct TextRunSummary {
  size_t tensors = 0;  // importance matrices: weights; Hessians: inputs (shared by q/k/v and by gate/up)
  size_t weights = 0;  // Hessians: the weights those inputs feed
  int64_t chunks = 0;
  uint64_t tokens = 0;
};
// An importance matrix, as llama-imatrix writes it: GGUF, or the legacy .dat form when `dat`.
TextRunSummary write_imatrix_from_text(const TextRunRequest& request, bool dat, Progress& progress);
// GPTQ's Hessians (XᵀX of every linear layer's input), for quantize --gptq.
TextRunSummary write_hessians_from_text(const TextRunRequest& request, Progress& progress);

// The Hessians a quantization collects itself (quantize --gptq-text): written as write_hessians_from_text
// writes them, over at most `chunks` windows of `ctx` tokens, into a scratch directory that lives (and is
// removed, also on an interruption) with this object.
class CollectedHessians {
 public:
  CollectedHessians(const std::string& model, const std::string& text, int ctx, int chunks, const std::string& device, Progress& progress);
  const std::string& path() const { return path_; }
  // What a quantized file records instead of the scratch path: "collected on TEXT".
  const std::string& label() const { return label_; }

 private:
  ScratchDirectory scratch_;
  std::string path_, label_;
};

// The importance matrix of at most 16 windows of 512 tokens of `text`, written to `path` (as
// llama-imatrix writes one) and read back, for a plan's weighting.
ImportanceMatrix imatrix_from_text(const std::string& model_path, const std::string& text, const std::filesystem::path& path,
                                   Device device);

}  // namespace lowbit
