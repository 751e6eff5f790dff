// config.json -> the <arch>.* metadata llama.cpp's convert_hf_to_gguf.py writes for Llama, Mistral,
// Qwen2, Qwen3, Mixtral, Qwen2-MoE and Qwen3-MoE, and the tensor it computes (Llama 3's
// rope_freqs.weight). Every field that changes the computation is read or refused with an error naming
// the file and the field.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/io/gguf.h"
#include "lowbit/io/json_file.h"
#include "lowbit/io/hf_names.h"

namespace lowbit {

struct HfModelConfig {
  std::vector<gguf::KeyValue> metadata;  // <arch>.* keys, in the converter's order
  std::vector<float> rope_freqs;         // rope_freqs.weight (Llama 3 scaling), else empty
  int64_t n_head = 0, n_head_kv = 0, head_dim = 0, vocab = 0;
  int64_t n_expert = 0;  // routed experts per MoE layer; 0 for a dense model
  bool tie_word_embeddings = false;
  // Special token ids config.json names ({bos,eos,pad}_token_id), then generation_config.json's
  // where config.json has none: the fallbacks after tokenizer_config.json's names.
  std::optional<int64_t> bos_id, eos_id, pad_id;
};

// Llama 3's per-pair divisors of the RoPE frequencies, as llama.cpp's converter computes
// rope_freqs.weight (LlamaModel.generate_extra_tensors): 1 for wavelengths under
// original_context / high, `factor` over original_context / low, a smooth mix between.
std::vector<float> llama3_rope_freqs(float base, int64_t head_dim, float factor, float low, float high, float original_context);

// `config` is config.json (its errors name the file and the key) of a model of class `arch`; `dir` is
// where generation_config.json may be.
HfModelConfig read_hf_model_config(const JsonField& config, const std::filesystem::path& dir, const Architecture& arch);

}  // namespace lowbit
