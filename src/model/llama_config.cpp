#include <fmt/format.h>

#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/model/llama.h"

namespace lowbit {

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
  const auto* embd = file.find_tensor("token_embd.weight");
  if (!embd) throw Error("no token_embd.weight", {.file = file.label()});
  c.n_vocab = int(embd->ne[1]);
  return c;
}

std::vector<float> rope_inv_freq(const LlamaConfig& c) {
  std::vector<float> inv_freq(size_t(c.head_dim / 2));
  for (int i = 0; i < c.head_dim / 2; ++i) inv_freq[size_t(i)] = std::pow(c.rope_base, -2.0f * float(i) / float(c.head_dim));
  return inv_freq;
}

}  // namespace lowbit
