// Opening any model lowbit writes for evaluation: a GGUF directly; a Hugging Face directory or a
// bitsandbytes checkpoint through a temporary float32 GGUF (dequantized first), which the runtime maps.
#pragma once

#include <filesystem>
#include <memory>

#include "lowbit/model/llama.h"

namespace lowbit {

class EvalModel {
 public:
  explicit EvalModel(const std::filesystem::path& path);
  ~EvalModel();
  EvalModel(const EvalModel&) = delete;
  EvalModel& operator=(const EvalModel&) = delete;

  const LlamaModel& model() const { return *model_; }
  LlamaModel& model() { return *model_; }  // for probes that swap one weight at a time
  // The GGUF metadata the tokenizer is built from (the converted one for non-GGUF inputs).
  const std::vector<gguf::KeyValue>& metadata() const { return model_->file().metadata(); }

 private:
  std::filesystem::path scratch_;  // temporary conversions, removed with the object
  std::unique_ptr<LlamaModel> model_;
};

}  // namespace lowbit
