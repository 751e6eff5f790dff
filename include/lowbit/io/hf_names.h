// The correspondence between Hugging Face and llama.cpp (GGUF) names for the Llama family: model
// classes, tensor names, and whether Q/K rows are permuted. The dense names are used both ways:
// converting a Hugging Face directory to GGUF and exporting a GGUF as a Hugging Face directory. The
// mixture-of-experts names (Mixtral, Qwen2-MoE, Qwen3-MoE; DeepSeek's for the planner only) one way.
#pragma once

#include <fmt/format.h>

#include <optional>
#include <regex>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

// The llama.cpp architecture of a Hugging Face model class, whether its converter permutes the Q/K
// rows (llama.cpp's "normal" RoPE rotates adjacent pairs; HF Llama rotates halves), and whether its
// feed-forward blocks are mixtures of experts (converted, not exported back).
struct Architecture {
  std::string_view hf_class;
  std::string_view gguf_arch;
  bool permute_qk;
  bool moe = false;
};
inline constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", true},
    {"MistralForCausalLM", "llama", true},
    {"Qwen2ForCausalLM", "qwen2", false},
    {"Qwen3ForCausalLM", "qwen3", false},
    {"MixtralForCausalLM", "llama", true, true},  // llama.cpp runs Mixtral as a Llama with experts
    {"Qwen2MoeForCausalLM", "qwen2moe", false, true},
    {"Qwen3MoeForCausalLM", "qwen3moe", false, true},
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

// Names of mixture-of-experts and multi-head-latent-attention layers, Hugging Face -> GGUF only (several
// Hugging Face spellings share one GGUF name). The planner reads roles and rules through these names;
// Mixtral and Qwen-MoE checkpoints convert to GGUF through them (DeepSeek's do not: lowbit refuses its class).
inline constexpr NameRule kMoeLayerNames[] = {
    {"mlp.gate.weight", "ffn_gate_inp.weight"},                       // Qwen-MoE, DeepSeek router
    {"block_sparse_moe.gate.weight", "ffn_gate_inp.weight"},          // Mixtral router
    {"mlp.gate.e_score_correction_bias", "exp_probs_b.bias"},         // DeepSeek-V3 routing bias
    {"mlp.shared_expert_gate.weight", "ffn_gate_inp_shexp.weight"},   // Qwen2-MoE shared-expert gate
    {"mlp.shared_expert.gate_proj.weight", "ffn_gate_shexp.weight"},  // Qwen2-MoE shared expert
    {"mlp.shared_expert.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_expert.down_proj.weight", "ffn_down_shexp.weight"},
    {"mlp.shared_experts.gate_proj.weight", "ffn_gate_shexp.weight"},  // DeepSeek shared experts
    {"mlp.shared_experts.up_proj.weight", "ffn_up_shexp.weight"},
    {"mlp.shared_experts.down_proj.weight", "ffn_down_shexp.weight"},
    {"self_attn.q_a_proj.weight", "attn_q_a.weight"},                 // DeepSeek latent attention
    {"self_attn.q_a_layernorm.weight", "attn_q_a_norm.weight"},
    {"self_attn.q_b_proj.weight", "attn_q_b.weight"},
    {"self_attn.kv_a_proj_with_mqa.weight", "attn_kv_a_mqa.weight"},
    {"self_attn.kv_a_layernorm.weight", "attn_kv_a_norm.weight"},
    {"self_attn.kv_b_proj.weight", "attn_kv_b.weight"},
};

// One expert's projection, "<container>.<E>.<projection>.weight": llama.cpp's converter stacks the
// experts of a layer into one 3-D tensor, expert E at index E of the outermost dimension.
struct ExpertNameRule {
  std::string_view container;
  std::string_view projection;
  std::string_view gguf;
};
inline constexpr ExpertNameRule kExpertNames[] = {
    {"mlp.experts", "gate_proj", "ffn_gate_exps.weight"},  // Qwen-MoE, DeepSeek
    {"mlp.experts", "up_proj", "ffn_up_exps.weight"},
    {"mlp.experts", "down_proj", "ffn_down_exps.weight"},
    {"block_sparse_moe.experts", "w1", "ffn_gate_exps.weight"},  // Mixtral: w1 gate, w3 up, w2 down
    {"block_sparse_moe.experts", "w3", "ffn_up_exps.weight"},
    {"block_sparse_moe.experts", "w2", "ffn_down_exps.weight"},
};

// transformers 5 holds a layer's experts fused, and saves them so when asked
// (save_pretrained(save_original_format=False); by default it writes the per-expert names above):
// "mlp.experts.gate_up_proj" [experts, 2 * ff, hidden], each expert's gate rows then its up rows, and
// "mlp.experts.down_proj" [experts, hidden, ff]; Mixtral's too (under mlp., as its router mlp.gate).
// A fused tensor is split into `parts` equal runs of rows per expert; this GGUF tensor is run `part`.
struct FusedExpertRule {
  std::string_view projection;
  std::string_view gguf;
  int part, parts;
};
inline constexpr FusedExpertRule kFusedExpertNames[] = {
    {"mlp.experts.gate_up_proj", "ffn_gate_exps.weight", 0, 2},
    {"mlp.experts.gate_up_proj", "ffn_up_exps.weight", 1, 2},
    {"mlp.experts.down_proj", "ffn_down_exps.weight", 0, 1},
};

// Where a Hugging Face tensor lands in llama.cpp's naming: the GGUF name and, for one expert's
// projection, which expert of the merged tensor it is; for a fused tensor, which run of each
// expert's rows.
struct GgufPlace {
  std::string name;
  int expert = -1;  // -1: the whole tensor
  int part = 0, parts = 1;
};

// Dense, MoE and latent-attention names; nullopt for a name llama.cpp does not know.
inline std::optional<GgufPlace> gguf_place_of(const std::string& hf) {
  if (auto name = gguf_name_of(hf)) return GgufPlace{*name};
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  static const std::regex expert(R"((.+)\.(\d+)\.(\w+)\.weight)");
  std::smatch m, e;
  if (!std::regex_match(hf, m, layer)) return std::nullopt;
  const std::string rest = m[2].str();
  for (const auto& rule : kMoeLayerNames)
    if (rest == rule.hf) return GgufPlace{fmt::format("blk.{}.{}", m[1].str(), rule.gguf)};
  if (!std::regex_match(rest, e, expert)) return std::nullopt;
  for (const auto& rule : kExpertNames)
    if (e[1].str() == rule.container && e[3].str() == rule.projection)
      return GgufPlace{fmt::format("blk.{}.{}", m[1].str(), rule.gguf), std::stoi(e[2].str())};
  return std::nullopt;
}

// Every GGUF tensor a Hugging Face tensor of a mixture-of-experts model feeds: one, or two for a
// fused gate_up_proj; none for a name llama.cpp does not know.
inline std::vector<GgufPlace> gguf_places_of(const std::string& hf) {
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  std::vector<GgufPlace> places;
  if (std::regex_match(hf, m, layer))
    for (const auto& rule : kFusedExpertNames)
      if (m[2].str() == rule.projection) places.push_back({fmt::format("blk.{}.{}", m[1].str(), rule.gguf), -1, rule.part, rule.parts});
  if (places.empty())
    if (auto place = gguf_place_of(hf)) places.push_back(std::move(*place));
  return places;
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
