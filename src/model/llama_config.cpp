#include <fmt/format.h>

#include <climits>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "lowbit/model/llama.h"

namespace lowbit {
namespace {

// Far above any real model, low enough that products of two of them stay far from overflow.
constexpr int64_t kMaxWidth = int64_t(1) << 20, kMaxLayers = 10'000;

}  // namespace

LlamaConfig LlamaConfig::from_gguf(const gguf::File& file) {
  LlamaConfig c;
  const auto* arch = file.find("general.architecture");
  if (!arch || !arch->get_if<std::string>()) throw Error("no general.architecture", {.file = file.label()});
  c.arch = *arch->get_if<std::string>();
  if (c.arch != "llama" && c.arch != "qwen2" && c.arch != "qwen3")
    throw Error(fmt::format("architecture '{}' is not supported by the evaluation runtime", c.arch),
                {.file = file.label(), .expected = "llama, qwen2 or qwen3"});
  // Every size is range-checked here, once: the forward pass divides by head counts, loops over
  // layers and allocates by widths, and a NaN or non-positive epsilon or RoPE base gives NaN logits.
  auto key_of = [&](const std::string& key) { return c.arch + "." + key; };
  auto integer = [&](const std::string& key, int64_t min, int64_t max, std::optional<int64_t> fallback = std::nullopt) {
    const auto* v = file.find(key_of(key));
    if (!v && fallback) return int(*fallback);
    if (!v) throw key_error(file.label(), key_of(key), "missing integer");
    const auto n = v->as_int();
    if (!n) throw key_error(file.label(), key_of(key), fmt::format("is of type {}", gguf::value_type_name(v->type())), "an integer");
    if (*n < min || *n > max)
      throw key_error(file.label(), key_of(key), fmt::format("{} is out of range", *n), fmt::format("{} to {}", min, max));
    return int(*n);
  };
  auto positive_real = [&](const std::string& key, float fallback) {
    const auto* v = file.find(key_of(key));
    if (!v) return fallback;
    const auto* f = v->get_if<float>();
    if (!f) throw key_error(file.label(), key_of(key), fmt::format("is of type {}", gguf::value_type_name(v->type())), "f32");
    if (!(*f > 0) || !std::isfinite(*f)) throw key_error(file.label(), key_of(key), fmt::format("{} is not a positive finite number", *f), "a finite f32 > 0");
    return *f;
  };
  auto fail = [&](const std::string& key, std::string problem, std::string expected) {
    throw key_error(file.label(), key_of(key), std::move(problem), std::move(expected));
  };
  c.n_embd = integer("embedding_length", 1, kMaxWidth);
  c.n_layer = integer("block_count", 1, kMaxLayers);
  c.n_head = integer("attention.head_count", 1, c.n_embd);
  c.n_head_kv = integer("attention.head_count_kv", 1, c.n_head, c.n_head);
  if (c.n_head % c.n_head_kv != 0)
    fail("attention.head_count_kv", fmt::format("{} does not divide the head count {}", c.n_head_kv, c.n_head), "a divisor of the head count");
  if (!file.find(key_of("attention.key_length")) && c.n_embd % c.n_head != 0)
    fail("attention.head_count", fmt::format("{} does not divide the width {}", c.n_head, c.n_embd), "a divisor of embedding_length");
  c.head_dim = integer("attention.key_length", 2, kMaxWidth, c.n_embd / c.n_head);
  if (c.head_dim % 2 != 0) fail("attention.key_length", fmt::format("head size {} is odd", c.head_dim), "an even size: RoPE rotates pairs");
  c.n_ff = integer("feed_forward_length", 1, kMaxWidth);
  c.rms_eps = positive_real("attention.layer_norm_rms_epsilon", 1e-5f);
  c.rope_base = positive_real("rope.freq_base", 10000.0f);
  c.rope_neox = c.arch != "llama";
  const auto* embd = file.find_tensor("token_embd.weight");
  if (!embd) throw Error("no token_embd.weight", {.file = file.label()});
  if (embd->ne.size() != 2 || embd->ne[1] < 1 || embd->ne[1] > INT32_MAX)
    throw Error(fmt::format("shape {}", shape_to_string(embd->ne)), {.file = file.label(), .tensor = embd->name, .expected = "[n_embd, n_vocab]"});
  c.n_vocab = int(embd->ne[1]);
  return c;
}

std::vector<float> rope_inv_freq(const LlamaConfig& c) {
  std::vector<float> inv_freq(size_t(c.head_dim / 2));
  for (int i = 0; i < c.head_dim / 2; ++i) inv_freq[size_t(i)] = std::pow(c.rope_base, -2.0f * float(i) / float(c.head_dim));
  return inv_freq;
}

}  // namespace lowbit
