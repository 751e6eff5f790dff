// Small synthetic mixture-of-experts checkpoints with the tensor names of Qwen2-MoE, Qwen3-MoE, Mixtral
// and DeepSeek-V3 (tests only): a Hugging Face directory (config.json, bf16 safetensors, per-expert
// names as transformers saves them by default) or a GGUF file with llama.cpp's names (a layer's experts
// stacked into one 3-D "ffn_*_exps" tensor). Both are written from one list of tensors, each with both
// of its names, so a test can check lowbit maps one onto the other. Random weights; every row 256 wide
// or a multiple, so every ggml type fits.
#pragma once

#include <fstream>
#include <map>
#include <numeric>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/safetensors.h"

namespace lowbit::test {

enum class MoeStyle { qwen2_moe, qwen3_moe, mixtral, deepseek };

struct TinyMoe {
  MoeStyle style = MoeStyle::qwen2_moe;
  int layers = 2;
  // The first layers have a dense feed-forward block (DeepSeek's first_k_dense_replace, Qwen's mlp_only_layers).
  int dense_layers = 0;
  int experts = 4;
  int64_t hidden = 256, ff = 256, vocab = 64;  // ff: the dense width, and Mixtral's experts'
  int64_t expert_ff = 0, shared_ff = 0;        // Qwen's and DeepSeek's expert and shared-expert widths (0: ff)
  bool attention_bias = false;                 // Qwen2-MoE's q/k/v biases (qkv_bias: the published models have them)
  bool tie_embeddings = false;
  int64_t expert_width() const { return style == MoeStyle::mixtral || !expert_ff ? ff : expert_ff; }
  int64_t shared_width() const { return shared_ff ? shared_ff : ff; }
};

// One tensor: its Hugging Face name and shape (PyTorch's order), and llama.cpp's name; for one
// expert's projection, its index in llama.cpp's merged tensor.
struct MoeTensor {
  std::string hf, gguf;
  std::vector<int64_t> shape;
  int expert = -1;
};

inline std::vector<MoeTensor> tiny_moe_tensors(const TinyMoe& m) {
  std::vector<MoeTensor> out;
  auto add = [&](std::string hf, std::string gguf, std::vector<int64_t> shape, int expert = -1) {
    out.push_back({std::move(hf), std::move(gguf), std::move(shape), expert});
  };
  const int64_t h = m.hidden, f = m.ff, fe = m.expert_width(), fs = m.shared_width(), e = m.experts;
  add("model.embed_tokens.weight", "token_embd.weight", {m.vocab, h});
  add("model.norm.weight", "output_norm.weight", {h});
  if (!m.tie_embeddings) add("lm_head.weight", "output.weight", {m.vocab, h});
  for (int i = 0; i < m.layers; ++i) {
    const std::string L = "model.layers." + std::to_string(i) + ".", B = "blk." + std::to_string(i) + ".";
    add(L + "input_layernorm.weight", B + "attn_norm.weight", {h});
    add(L + "post_attention_layernorm.weight", B + "ffn_norm.weight", {h});
    if (m.style == MoeStyle::deepseek) {
      // Latent attention: 2 heads, q_lora = kv_lora = 256, 64 + 64 query/key dims, 128 value dims.
      add(L + "self_attn.q_a_proj.weight", B + "attn_q_a.weight", {256, h});
      add(L + "self_attn.q_a_layernorm.weight", B + "attn_q_a_norm.weight", {256});
      add(L + "self_attn.q_b_proj.weight", B + "attn_q_b.weight", {256, 256});
      add(L + "self_attn.kv_a_proj_with_mqa.weight", B + "attn_kv_a_mqa.weight", {320, h});
      add(L + "self_attn.kv_a_layernorm.weight", B + "attn_kv_a_norm.weight", {256});
      add(L + "self_attn.kv_b_proj.weight", B + "attn_kv_b.weight", {384, 256});
      add(L + "self_attn.o_proj.weight", B + "attn_output.weight", {h, 256});
    } else {
      add(L + "self_attn.q_proj.weight", B + "attn_q.weight", {h, h});
      add(L + "self_attn.k_proj.weight", B + "attn_k.weight", {h / 2, h});
      add(L + "self_attn.v_proj.weight", B + "attn_v.weight", {h / 2, h});
      add(L + "self_attn.o_proj.weight", B + "attn_output.weight", {h, h});
      if (m.attention_bias) {
        add(L + "self_attn.q_proj.bias", B + "attn_q.bias", {h});
        add(L + "self_attn.k_proj.bias", B + "attn_k.bias", {h / 2});
        add(L + "self_attn.v_proj.bias", B + "attn_v.bias", {h / 2});
      }
      if (m.style == MoeStyle::qwen3_moe) {  // per-head RMS norms of Q and K (2 heads of h / 2)
        add(L + "self_attn.q_norm.weight", B + "attn_q_norm.weight", {h / 2});
        add(L + "self_attn.k_norm.weight", B + "attn_k_norm.weight", {h / 2});
      }
    }
    if (i < m.dense_layers) {
      add(L + "mlp.gate_proj.weight", B + "ffn_gate.weight", {f, h});
      add(L + "mlp.up_proj.weight", B + "ffn_up.weight", {f, h});
      add(L + "mlp.down_proj.weight", B + "ffn_down.weight", {h, f});
      continue;
    }
    if (m.style == MoeStyle::mixtral) {
      add(L + "block_sparse_moe.gate.weight", B + "ffn_gate_inp.weight", {e, h});
      for (int x = 0; x < e; ++x) {
        const std::string X = L + "block_sparse_moe.experts." + std::to_string(x) + ".";
        add(X + "w1.weight", B + "ffn_gate_exps.weight", {fe, h}, x);
        add(X + "w2.weight", B + "ffn_down_exps.weight", {h, fe}, x);
        add(X + "w3.weight", B + "ffn_up_exps.weight", {fe, h}, x);
      }
      continue;
    }
    add(L + "mlp.gate.weight", B + "ffn_gate_inp.weight", {e, h});
    if (m.style == MoeStyle::deepseek) add(L + "mlp.gate.e_score_correction_bias", B + "exp_probs_b.bias", {e});
    for (int x = 0; x < e; ++x) {
      const std::string X = L + "mlp.experts." + std::to_string(x) + ".";
      add(X + "gate_proj.weight", B + "ffn_gate_exps.weight", {fe, h}, x);
      add(X + "up_proj.weight", B + "ffn_up_exps.weight", {fe, h}, x);
      add(X + "down_proj.weight", B + "ffn_down_exps.weight", {h, fe}, x);
    }
    if (m.style == MoeStyle::qwen3_moe) continue;  // no shared expert
    const std::string S = L + (m.style == MoeStyle::deepseek ? "mlp.shared_experts." : "mlp.shared_expert.");
    add(S + "gate_proj.weight", B + "ffn_gate_shexp.weight", {fs, h});
    add(S + "up_proj.weight", B + "ffn_up_shexp.weight", {fs, h});
    add(S + "down_proj.weight", B + "ffn_down_shexp.weight", {h, fs});
    if (m.style == MoeStyle::qwen2_moe) add(L + "mlp.shared_expert_gate.weight", B + "ffn_gate_inp_shexp.weight", {1, h});
  }
  return out;
}

// The values of tensor `index`: norms near 1, weights ~ N(0, 0.02), a few outliers in every row.
inline std::vector<float> tiny_moe_values(const MoeTensor& t, size_t index) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  std::mt19937 rng(uint32_t(1000 + index));
  std::normal_distribution<float> normal(0.0f, 0.02f);
  std::vector<float> v(static_cast<size_t>(n));
  const bool norm = t.hf.find("norm") != std::string::npos;
  for (int64_t i = 0; i < n; ++i) v[size_t(i)] = norm ? 1.0f + normal(rng) : (i % 97 == 0 ? 8.0f : 1.0f) * normal(rng);
  return v;
}

inline const char* tiny_moe_class(MoeStyle style) {
  switch (style) {
    case MoeStyle::qwen2_moe: return "Qwen2MoeForCausalLM";
    case MoeStyle::qwen3_moe: return "Qwen3MoeForCausalLM";
    case MoeStyle::mixtral: return "MixtralForCausalLM";
    case MoeStyle::deepseek: return "DeepseekV3ForCausalLM";
  }
  return "";
}

// A Hugging Face directory: config.json and model.safetensors in bf16.
inline void write_tiny_moe_hf(const std::filesystem::path& dir, const TinyMoe& m) {
  std::filesystem::create_directories(dir);
  const auto tensors = tiny_moe_tensors(m);
  std::vector<std::vector<uint16_t>> storage;
  storage.reserve(tensors.size());
  std::vector<std::pair<std::string, TensorView>> views;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto values = tiny_moe_values(tensors[i], i);
    storage.emplace_back(values.size());
    convert_from_f32(values.data(), DType::bf16, storage.back().data(), values.size());
    views.push_back({tensors[i].hf, TensorView::make(DType::bf16, Shape(tensors[i].shape.begin(), tensors[i].shape.end()),
                                                     std::as_bytes(std::span(storage.back())))});
  }
  safetensors::Writer::write_file(dir / "model.safetensors", views);
  nlohmann::json config = {{"architectures", {tiny_moe_class(m.style)}}, {"hidden_size", m.hidden}, {"intermediate_size", m.ff},
                           {"num_hidden_layers", m.layers}, {"num_attention_heads", 2}, {"vocab_size", m.vocab},
                           {"max_position_embeddings", 256}, {"rms_norm_eps", 1e-6}, {"torch_dtype", "bfloat16"}, {"num_experts_per_tok", 2},
                           {"tie_word_embeddings", m.tie_embeddings}};
  if (m.style == MoeStyle::qwen2_moe || m.style == MoeStyle::qwen3_moe) {
    std::vector<int> dense(size_t(m.dense_layers));
    std::iota(dense.begin(), dense.end(), 0);
    config.update({{"num_experts", m.experts}, {"moe_intermediate_size", m.expert_width()}, {"num_key_value_heads", 1},
                   {"mlp_only_layers", dense}, {"decoder_sparse_step", 1}});
    if (m.style == MoeStyle::qwen2_moe)
      config.update({{"model_type", "qwen2_moe"}, {"shared_expert_intermediate_size", m.shared_width()}, {"qkv_bias", m.attention_bias}});
    else  // as Qwen3-30B-A3B's config.json: explicit head size, top-k weights renormalised
      config.update({{"model_type", "qwen3_moe"}, {"head_dim", m.hidden / 2}, {"norm_topk_prob", true}});
  } else if (m.style == MoeStyle::mixtral) {
    config.update({{"model_type", "mixtral"}, {"num_local_experts", m.experts}, {"num_key_value_heads", 1}});
  } else {
    config.update({{"model_type", "deepseek_v3"}, {"n_routed_experts", m.experts}, {"n_shared_experts", 1}, {"moe_intermediate_size", m.expert_width()},
                   {"first_k_dense_replace", m.dense_layers}, {"q_lora_rank", 256}, {"kv_lora_rank", 256}, {"qk_nope_head_dim", 64},
                   {"qk_rope_head_dim", 64}, {"v_head_dim", 128}});
  }
  std::ofstream(dir / "config.json") << config.dump(2);
}

// A GGUF with llama.cpp's names and layout: experts stacked (ne {cols, rows, experts}), 2-D weights in
// f16, vectors and routers in f32 as llama.cpp's converter keeps them, Qwen2-MoE's shared-expert gate
// as ne {n_embd, 1}.
inline void write_tiny_moe_gguf(const std::filesystem::path& path, const TinyMoe& m) {
  const auto tensors = tiny_moe_tensors(m);
  std::vector<std::string> order;
  std::map<std::string, std::vector<size_t>> parts;  // GGUF name -> tensors (experts in order)
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!parts.count(tensors[i].gguf)) order.push_back(tensors[i].gguf);
    parts[tensors[i].gguf].push_back(i);
  }
  const std::string arch = m.style == MoeStyle::qwen2_moe   ? "qwen2moe"
                           : m.style == MoeStyle::qwen3_moe ? "qwen3moe"
                           : m.style == MoeStyle::mixtral   ? "llama"
                                                            : "deepseek2";
  gguf::Writer w(path);
  w.set("general.architecture", gguf::Value{arch});
  w.set("general.name", gguf::Value{std::string("tiny-moe")});
  w.set(arch + ".block_count", gguf::Value{uint32_t(m.layers)});
  w.set(arch + ".embedding_length", gguf::Value{uint32_t(m.hidden)});
  w.set(arch + ".expert_count", gguf::Value{uint32_t(m.experts)});
  w.set(arch + ".expert_used_count", gguf::Value{uint32_t(2)});
  // What the runtime reads besides (the Hugging Face config's values: 2 query heads, 1 key/value head).
  w.set(arch + ".attention.head_count", gguf::Value{uint32_t(2)});
  w.set(arch + ".attention.head_count_kv", gguf::Value{uint32_t(1)});
  w.set(arch + ".attention.layer_norm_rms_epsilon", gguf::Value{1e-6f});
  w.set(arch + ".context_length", gguf::Value{uint32_t(256)});
  w.set(arch + ".feed_forward_length", gguf::Value{uint32_t(m.ff)});
  if (m.style != MoeStyle::mixtral) w.set(arch + ".expert_feed_forward_length", gguf::Value{uint32_t(m.expert_width())});
  if (m.style == MoeStyle::qwen2_moe) w.set(arch + ".expert_shared_feed_forward_length", gguf::Value{uint32_t(m.shared_width())});
  std::map<std::string, std::vector<std::byte>> data;
  for (const auto& name : order) {
    const auto& first = tensors[parts[name].front()];
    Shape ne(first.shape.rbegin(), first.shape.rend());
    if (first.expert >= 0) ne.push_back(int64_t(parts[name].size()));
    const bool keep_f32 = ne.size() == 1 || name.find("ffn_gate_inp") != std::string::npos;
    std::vector<float> values;
    for (size_t i : parts[name]) {
      const auto v = tiny_moe_values(tensors[i], i);
      values.insert(values.end(), v.begin(), v.end());
    }
    auto& bytes = data[name];
    bytes.resize(values.size() * (keep_f32 ? 4 : 2));
    convert_from_f32(values.data(), keep_f32 ? DType::f32 : DType::f16, bytes.data(), values.size());
    w.add_tensor(name, keep_f32 ? GgmlType::F32 : GgmlType::F16, ne);
  }
  for (const auto& name : order) w.write_data(name, data[name]);
  w.finish();
}

}  // namespace lowbit::test
