// The correspondence between Hugging Face and llama.cpp (GGUF) names for the dense Llama family:
// model classes, tensor names, and whether Q/K rows are permuted. Used both ways: converting a
// Hugging Face directory to GGUF and exporting a GGUF as a Hugging Face directory.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <regex>
#include <string>
#include <string_view>

namespace lowbit {

// The llama.cpp architecture of a Hugging Face model class, and whether its converter permutes the
// Q/K rows (llama.cpp's "normal" RoPE rotates adjacent pairs; HF Llama rotates halves).
struct Architecture {
  std::string_view hf_class;
  std::string_view gguf_arch;
  bool permute_qk;
};
inline constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", true},
    {"MistralForCausalLM", "llama", true},
    {"Qwen2ForCausalLM", "qwen2", false},
    {"Qwen3ForCausalLM", "qwen3", false},
};

// HF tensor name pattern -> GGUF name; {} is the layer.
struct NameRule {
  std::string_view hf;
  std::string_view gguf;
};
inline constexpr NameRule kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
inline constexpr NameRule kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

inline std::optional<std::string> gguf_name_of(const std::string& hf) {
  for (const auto& rule : kGlobalNames)
    if (hf == rule.hf) return std::string(rule.gguf);
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, layer)) return std::nullopt;
  for (const auto& rule : kLayerNames)
    if (m[2].str() == rule.hf) return fmt::format("blk.{}.{}", m[1].str(), rule.gguf);
  return std::nullopt;
}

// GGUF name -> Hugging Face name (the inverse of gguf_name_of).
inline std::optional<std::string> hf_name_of(const std::string& gguf) {
  for (const auto& rule : kGlobalNames)
    if (gguf == rule.gguf) return std::string(rule.hf);
  static const std::regex layer(R"(blk\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(gguf, m, layer)) return std::nullopt;
  for (const auto& rule : kLayerNames)
    if (m[2].str() == rule.gguf) return fmt::format("model.layers.{}.{}", m[1].str(), rule.hf);
  return std::nullopt;
}

// Row r of a llama.cpp Q/K weight is row `hf_row_of(r)` of the Hugging Face one: within each head,
// HF's rotate-half layout [x0..x(d/2-1), y0..y(d/2-1)] becomes interleaved pairs [x0, y0, x1, y1, ...].
inline int64_t hf_row_of(int64_t r, int64_t rows_per_head) {
  const int64_t head = r / rows_per_head, within = r % rows_per_head, half = rows_per_head / 2;
  return head * rows_per_head + (within % 2) * half + within / 2;
}

}  // namespace lowbit
