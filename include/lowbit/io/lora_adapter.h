// A LoRA adapter as PEFT saves it: a directory with adapter_config.json and adapter_model.safetensors.
//
// For every adapted Linear module M (a Hugging Face module name such as
// "model.layers.0.self_attn.q_proj") the file holds
//   base_model.model.M.lora_A.weight   [r, in]
//   base_model.model.M.lora_B.weight   [out, r]
// and the module's weight becomes W + scale · B·A, scale = lora_alpha / r (lora_alpha / √r with
// use_rslora), r and lora_alpha overridable per module by rank_pattern / alpha_pattern.
// modules_to_save (typically lm_head or embed_tokens) are stored whole as base_model.model.M.weight and
// replace the base's. DoRA (lora_magnitude_vector), trained biases and embedding adapters are refused.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/io/safetensors.h"

namespace lowbit {

class LoraAdapter {
 public:
  struct Module {
    std::string weight;  // the base tensor it changes, Hugging Face name: "model.layers.0.self_attn.q_proj.weight"
    TensorView a;        // [r, in]
    TensorView b;        // [out, r]
    double scale;        // lora_alpha / r (or / √r with rslora), after the per-module patterns
  };
  struct Replacement {
    std::string weight;  // Hugging Face name of the base tensor it replaces
    TensorView value;
  };

  // Reads and checks the adapter. Throws lowbit::Error naming the file and key for anything it
  // cannot apply exactly (DoRA, trained biases, embedding adapters, shapes that disagree with r).
  explicit LoraAdapter(const std::filesystem::path& dir);

  const std::vector<Module>& modules() const { return modules_; }
  const std::vector<Replacement>& replacements() const { return replacements_; }
  const std::filesystem::path& path() const { return dir_; }
  std::string label() const { return file_->label(); }  // the weights file, which errors about modules name

 private:
  std::filesystem::path dir_;
  std::unique_ptr<safetensors::File> file_;
  std::vector<Module> modules_;
  std::vector<Replacement> replacements_;
};

// PEFT's rule for a pattern key of rank_pattern / alpha_pattern / target_modules (as a list entry):
// the module name ends with it at a dot boundary, the key read as a regular expression.
bool peft_pattern_matches(const std::string& pattern, const std::string& module);

}  // namespace lowbit
