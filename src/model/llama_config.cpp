#include <fmt/format.h>

#include <climits>
#include <cmath>
#include <optional>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "lowbit/model/llama.h"

namespace lowbit {
namespace {

// Far above any real model, low enough that products of two of them stay far from overflow.
constexpr int64_t kMaxWidth = int64_t(1) << 20, kMaxLayers = 10'000, kMaxContextLength = int64_t(1) << 30;

// rope.* keys and rope_freqs.weight, as llama.cpp's llama_model::load_hparams reads them.
template <class Real, class Integer>
RopeParams rope_params_of(const ModelWeights& weights, const LlamaConfig& c, const Real& positive_real, const Integer& integer) {
  RopeParams p;
  p.n_rot = integer("rope.dimension_count", 2, c.head_dim, c.head_dim);
  if (p.n_rot % 2 != 0) throw key_error(weights.label(), c.arch + ".rope.dimension_count", fmt::format("{} is odd", p.n_rot), "an even count: RoPE rotates pairs");
  p.freq_base = c.rope_base;
  const std::string type_key = c.arch + ".rope.scaling.type";
  const auto* type = weights.find(type_key);
  const std::string name = type && type->get_if<std::string>() ? *type->get_if<std::string>() : "none";
  if (name == "none") p.scaling = RopeScaling::none;
  else if (name == "linear") p.scaling = RopeScaling::linear;
  else if (name == "yarn") p.scaling = RopeScaling::yarn;
  else throw Error(fmt::format("RoPE scaling '{}' is not supported by the evaluation runtime", name), {.file = weights.label(), .tensor = type_key, .expected = "none, linear or yarn"});
  // llama.cpp reads a factor of 0 as "no scaling", and the older rope.scale_linear key when the newer is absent.
  auto factor_key = [&](const std::string& key) -> std::optional<float> {
    const auto* v = weights.find(c.arch + "." + key);
    if (!v) return std::nullopt;
    const auto* f = v->get_if<float>();
    if (f && *f == 0.0f) return 1.0f;
    return positive_real(key, 1.0f);
  };
  p.factor = factor_key("rope.scaling.factor").value_or(factor_key("rope.scale_linear").value_or(1.0f));
  if (p.scaling != RopeScaling::none && p.factor == 1.0f) p.scaling = RopeScaling::none;
  p.original_context = integer("rope.scaling.original_context_length", 0, kMaxContextLength,
                               integer("context_length", 0, kMaxContextLength, 0));
  // YaRN's extrapolation factor and betas stay at llama.cpp's defaults (1, 32, 1): it reads no keys for
  // them in these architectures.
  p.attn_factor = positive_real("rope.scaling.attn_factor", 1.0f);
  if (const auto* freqs = weights.find_tensor("rope_freqs.weight")) {
    if (freqs->type != GgmlType::F32 || freqs->elements() != p.n_rot / 2)
      throw Error(fmt::format("{} {}", ggml_type_name(freqs->type), shape_to_string(freqs->ne)),
                  {.file = weights.label(), .tensor = "rope_freqs.weight", .expected = fmt::format("f32 [{}]", p.n_rot / 2)});
    const auto bytes = freqs->bytes;
    const auto* values = reinterpret_cast<const float*>(bytes.data());
    p.freq_factors.assign(values, values + p.n_rot / 2);
    for (size_t i = 0; i < p.freq_factors.size(); ++i)
      if (!(p.freq_factors[i] > 0) || !std::isfinite(p.freq_factors[i]))
        throw Error(fmt::format("element {} is {}", i, p.freq_factors[i]), {.file = weights.label(), .tensor = "rope_freqs.weight", .expected = "finite factors > 0"});
  }
  return p;
}

}  // namespace

LlamaConfig LlamaConfig::from_weights(const ModelWeights& weights) {
  LlamaConfig c;
  const auto* arch = weights.find("general.architecture");
  if (!arch || !arch->get_if<std::string>()) throw Error("no general.architecture", {.file = weights.label()});
  c.arch = *arch->get_if<std::string>();
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3" && c.arch != "qwen2moe" && c.arch != "qwen3moe")
    throw Error(fmt::format("architecture '{}' is not supported by the evaluation runtime", c.arch),
                {.file = weights.label(), .expected = "llama, qwen2, qwen3, qwen2moe or qwen3moe"});
  // Every size is range-checked here, once: the forward pass divides by head counts, loops over
  // layers and allocates by widths, and a NaN or non-positive epsilon or RoPE base gives NaN logits.
  auto key_of = [&](const std::string& key) { return c.arch + "." + key; };
  auto integer = [&](const std::string& key, int64_t min, int64_t max, std::optional<int64_t> fallback = std::nullopt) {
    const auto* v = weights.find(key_of(key));
    if (!v && fallback) return int(*fallback);
    if (!v) throw key_error(weights.label(), key_of(key), "missing integer");
    const auto n = v->as_int();
    if (!n) throw key_error(weights.label(), key_of(key), fmt::format("is of type {}", gguf::value_type_name(v->type())), "an integer");
    if (*n < min || *n > max)
      throw key_error(weights.label(), key_of(key), fmt::format("{} is out of range", *n), fmt::format("{} to {}", min, max));
    return int(*n);
  };
  auto positive_real = [&](const std::string& key, float fallback) {
    const auto* v = weights.find(key_of(key));
    if (!v) return fallback;
    const auto* f = v->get_if<float>();
    if (!f) throw key_error(weights.label(), key_of(key), fmt::format("is of type {}", gguf::value_type_name(v->type())), "f32");
    if (!(*f > 0) || !std::isfinite(*f)) throw key_error(weights.label(), key_of(key), fmt::format("{} is not a positive finite number", *f), "a finite f32 > 0");
    return *f;
  };
  auto fail = [&](const std::string& key, std::string problem, std::string expected) {
    throw key_error(weights.label(), key_of(key), std::move(problem), std::move(expected));
  };
  c.n_embd = integer("embedding_length", 1, kMaxWidth);
  c.n_layer = integer("block_count", 1, kMaxLayers);
  c.n_head = integer("attention.head_count", 1, c.n_embd);
  c.n_head_kv = integer("attention.head_count_kv", 1, c.n_head, c.n_head);
  if (c.n_head % c.n_head_kv != 0)
    fail("attention.head_count_kv", fmt::format("{} does not divide the head count {}", c.n_head_kv, c.n_head), "a divisor of the head count");
  if (!weights.find(key_of("attention.key_length")) && c.n_embd % c.n_head != 0)
    fail("attention.head_count", fmt::format("{} does not divide the width {}", c.n_head, c.n_embd), "a divisor of embedding_length");
  c.head_dim = integer("attention.key_length", 2, kMaxWidth, c.n_embd / c.n_head);
  if (c.head_dim % 2 != 0) fail("attention.key_length", fmt::format("head size {} is odd", c.head_dim), "an even size: RoPE rotates pairs");
  c.n_expert = integer("expert_count", 0, 1 << 16, 0);
  if (c.arch.ends_with("moe") && c.n_expert == 0) fail("expert_count", "missing or 0", "the number of experts of a mixture-of-experts model");
  c.n_expert_used = c.n_expert > 0 ? integer("expert_used_count", 1, c.n_expert) : 0;
  c.expert_weights_norm = c.arch != "qwen2moe";  // llama.cpp's fixed choice per architecture
  // Dense layers need it; a model whose every layer has experts may leave it out.
  c.n_ff = c.n_expert > 0 ? integer("feed_forward_length", 1, kMaxWidth, 0) : integer("feed_forward_length", 1, kMaxWidth);
  c.rms_eps = positive_real("attention.layer_norm_rms_epsilon", 1e-5f);
  c.rope_base = positive_real("rope.freq_base", 10000.0f);
  c.rope_neox = c.arch != "llama";
  c.rope_params = rope_params_of(weights, c, positive_real, integer);
  c.rope = rope_table(c.rope_params);
  const auto* embd = weights.find_tensor("token_embd.weight");
  if (!embd) throw Error("no token_embd.weight", {.file = weights.label()});
  if (embd->ne.size() != 2 || embd->ne[1] < 1 || embd->ne[1] > INT32_MAX)
    throw Error(fmt::format("shape {}", shape_to_string(embd->ne)), {.file = weights.label(), .tensor = embd->name, .expected = "[n_embd, n_vocab]"});
  c.n_vocab = int(embd->ne[1]);
  return c;
}

}  // namespace lowbit
