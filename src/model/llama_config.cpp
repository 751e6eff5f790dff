#include <fmt/format.h>

#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/model/llama.h"

namespace lowbit {
namespace {

// rope.* keys and rope_freqs.weight, as llama.cpp's llama_model::load_hparams reads them.
template <class Real, class Integer>
RopeParams rope_params_of(const gguf::File& file, const LlamaConfig& c, const Real& real, const Integer& integer) {
  RopeParams p;
  p.n_rot = integer("rope.dimension_count", c.head_dim);
  p.freq_base = c.rope_base;
  const std::string type_key = c.arch + ".rope.scaling.type";
  const auto* type = file.find(type_key);
  const std::string name = type && type->get_if<std::string>() ? *type->get_if<std::string>() : "none";
  if (name == "none") p.scaling = RopeScaling::none;
  else if (name == "linear") p.scaling = RopeScaling::linear;
  else if (name == "yarn") p.scaling = RopeScaling::yarn;
  else throw Error(fmt::format("RoPE scaling '{}' is not supported by the evaluation runtime", name), {.file = file.label(), .tensor = type_key, .expected = "none, linear or yarn"});
  p.factor = real("rope.scaling.factor", 0.0f);
  if (p.factor == 0.0f) p.factor = real("rope.scale_linear", 1.0f);  // the older key llama.cpp still reads
  if (p.scaling != RopeScaling::none && p.factor == 1.0f) p.scaling = RopeScaling::none;
  p.original_context = integer("rope.scaling.original_context_length", integer("context_length", 0));
  // YaRN's extrapolation factor and betas stay at llama.cpp's defaults (1, 32, 1): it reads no keys for
  // them in these architectures.
  p.attn_factor = real("rope.scaling.attn_factor", 1.0f);
  if (const auto* freqs = file.find_tensor("rope_freqs.weight")) {
    if (freqs->type != GgmlType::F32 || freqs->elements() != p.n_rot / 2)
      throw Error(fmt::format("{} {}", ggml_type_name(freqs->type), shape_to_string(freqs->ne)),
                  {.file = file.label(), .tensor = "rope_freqs.weight", .expected = fmt::format("f32 [{}]", p.n_rot / 2)});
    const auto bytes = file.data(*freqs);
    const auto* values = reinterpret_cast<const float*>(bytes.data());
    p.freq_factors.assign(values, values + p.n_rot / 2);
  }
  return p;
}

}  // namespace

LlamaConfig LlamaConfig::from_gguf(const gguf::File& file) {
  LlamaConfig c;
  const auto* arch = file.find("general.architecture");
  if (!arch || !arch->get_if<std::string>()) throw Error("no general.architecture", {.file = file.label()});
  c.arch = *arch->get_if<std::string>();
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3")
    throw Error(fmt::format("architecture '{}' is not supported by the evaluation runtime", c.arch),
                {.file = file.label(), .expected = "llama, qwen2 or qwen3"});
  auto integer = [&](const std::string& key, std::optional<int64_t> fallback = std::nullopt) {
    const auto* v = file.find(c.arch + "." + key);
    if (v && v->as_int()) return int(*v->as_int());
    if (fallback) return int(*fallback);
    throw Error(fmt::format("missing integer {}.{}", c.arch, key), {.file = file.label()});
  };
  auto real = [&](const std::string& key, float fallback) {
    const auto* v = file.find(c.arch + "." + key);
    return v && v->get_if<float>() ? *v->get_if<float>() : fallback;
  };
  c.n_embd = integer("embedding_length");
  c.n_layer = integer("block_count");
  c.n_head = integer("attention.head_count");
  c.n_head_kv = integer("attention.head_count_kv", c.n_head);
  c.head_dim = integer("attention.key_length", c.n_embd / c.n_head);
  c.n_ff = integer("feed_forward_length");
  c.rms_eps = real("attention.layer_norm_rms_epsilon", 1e-5f);
  c.rope_base = real("rope.freq_base", 10000.0f);
  c.rope_neox = c.arch != "llama";
  c.rope_params = rope_params_of(file, c, real, integer);
  c.rope = rope_table(c.rope_params);
  const auto* embd = file.find_tensor("token_embd.weight");
  if (!embd) throw Error("no token_embd.weight", {.file = file.label()});
  c.n_vocab = int(embd->ne[1]);
  return c;
}

}  // namespace lowbit
