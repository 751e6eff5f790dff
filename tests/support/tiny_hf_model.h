// A small Hugging Face Llama directory made from the golden tiny GGUF model (tests only): names
// mapped back, Q/K rows un-permuted to HF's rotate-half layout, float32 weights, a byte-level BPE
// tokenizer.json. Converting it to GGUF must give back the GGUF's tensors.
#pragma once

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lowbit/io/gguf.h"
#include "lowbit/io/safetensors.h"
#include "support/paths.h"

namespace lowbit::test {

inline void write_tiny_hf_model(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  const gguf::File g(golden_ggml_dir() / "model" / "tiny-llama-f32.gguf");
  const std::map<std::string, std::string> names = {
      {"token_embd.weight", "model.embed_tokens.weight"}, {"output_norm.weight", "model.norm.weight"}, {"output.weight", "lm_head.weight"}};
  const std::map<std::string, std::string> layer_names = {
      {"attn_norm.weight", "input_layernorm.weight"}, {"ffn_norm.weight", "post_attention_layernorm.weight"},
      {"attn_q.weight", "self_attn.q_proj.weight"},   {"attn_k.weight", "self_attn.k_proj.weight"},
      {"attn_v.weight", "self_attn.v_proj.weight"},   {"attn_output.weight", "self_attn.o_proj.weight"},
      {"ffn_gate.weight", "mlp.gate_proj.weight"},    {"ffn_up.weight", "mlp.up_proj.weight"},
      {"ffn_down.weight", "mlp.down_proj.weight"}};
  std::vector<std::vector<float>> storage;
  std::vector<std::pair<std::string, TensorView>> tensors;
  storage.reserve(g.tensors().size());
  for (const auto& t : g.tensors()) {
    std::string hf;
    int heads = 0;
    if (names.count(t.name)) {
      hf = names.at(t.name);
    } else {
      const auto dot = t.name.find('.', 4);
      const std::string layer = t.name.substr(4, dot - 4), rest = t.name.substr(dot + 1);
      hf = "model.layers." + layer + "." + layer_names.at(rest);
      heads = rest == "attn_q.weight" ? 4 : rest == "attn_k.weight" ? 2 : 0;
    }
    const auto* src = reinterpret_cast<const float*>(g.data(t).data());
    const int64_t cols = t.ne[0], rows = t.elements() / cols;
    std::vector<float> values(src, src + t.elements());
    if (heads) {  // GGUF row r holds HF row (head, within%2 * half + within/2)
      const int64_t per_head = rows / heads, half = per_head / 2;
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t head = r / per_head, within = r % per_head;
        std::copy_n(src + r * cols, cols, values.begin() + (head * per_head + (within % 2) * half + within / 2) * cols);
      }
    }
    storage.push_back(std::move(values));
    tensors.push_back({hf, TensorView::make(DType::f32, Shape(t.ne.rbegin(), t.ne.rend()), std::as_bytes(std::span(storage.back())))});
  }
  safetensors::Writer::write_file(dir / "model.safetensors", tensors);
  std::ofstream(dir / "config.json") << R"({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 256,
    "num_attention_heads": 4, "num_key_value_heads": 2, "num_hidden_layers": 2, "max_position_embeddings": 256,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "vocab_size": 259})";
  nlohmann::json vocab = nlohmann::json::object();
  for (int i = 1; i < 258; ++i) vocab["t" + std::to_string(i)] = i;
  nlohmann::json tok = {{"model", {{"type", "BPE"}, {"vocab", vocab}, {"merges", {"t 1", nlohmann::json::array({"t", "2"})}}}},
                        {"added_tokens", {{{"id", 0}, {"content", "<|endoftext|>"}, {"special", true}}}},
                        {"pre_tokenizer", {{"type", "ByteLevel"}}}};
  std::ofstream(dir / "tokenizer.json") << tok.dump();
  std::ofstream(dir / "tokenizer_config.json") << R"({"eos_token": "<|endoftext|>", "chat_template": "{{ messages }}"})";
}

}  // namespace lowbit::test
