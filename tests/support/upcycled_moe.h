// A real model turned into a mixture of experts (tests only): each layer's feed-forward block becomes
// `experts` experts, each the dense weights with its own multiplicative noise, and a random router —
// "sparse upcycling". The result still predicts text, so perplexities mean something, and it has the
// tensor names and metadata llama.cpp's MoE architectures load: Mixtral's ("llama" with experts) or
// Qwen3-MoE's (unit q/k norms added).
#pragma once

#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"

namespace lowbit::test {

inline void write_upcycled_moe(const std::filesystem::path& from, const std::filesystem::path& to, const std::string& arch,
                               int experts = 4, int used = 2) {
  const gguf::File in(from);
  const std::string old_arch = *in.find("general.architecture")->get_if<std::string>();
  gguf::Writer w(to);
  int64_t n_ff = 0;
  for (const auto& kv : in.metadata()) {
    std::string key = kv.key;
    if (key.starts_with(old_arch + ".")) key = arch + key.substr(old_arch.size());
    w.set(key, key == "general.architecture" ? gguf::Value{arch} : kv.value);
    if (key == arch + ".feed_forward_length") n_ff = *kv.value.as_int();
  }
  const int64_t n_embd = *in.find(old_arch + ".embedding_length")->as_int();
  const int64_t head_dim = n_embd / *in.find(old_arch + ".attention.head_count")->as_int();
  w.set(arch + ".expert_count", gguf::Value{uint32_t(experts)});
  w.set(arch + ".expert_used_count", gguf::Value{uint32_t(used)});
  w.set(arch + ".expert_feed_forward_length", gguf::Value{uint32_t(n_ff)});

  std::mt19937 rng(17);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<std::pair<std::string, std::vector<std::byte>>> data;
  auto add = [&](const std::string& name, GgmlType type, Shape ne, std::vector<std::byte> bytes) {
    w.add_tensor(name, type, std::move(ne));
    data.emplace_back(name, std::move(bytes));
  };
  auto f32_bytes = [](const std::vector<float>& v) {
    std::vector<std::byte> b(v.size() * 4);
    std::memcpy(b.data(), v.data(), b.size());
    return b;
  };
  for (const auto& t : in.tensors()) {
    const auto bytes = in.data(t);
    const std::string suffix = t.name.substr(t.name.find('.', 4) + 1);  // after "blk.N."
    const bool ffn = t.name.starts_with("blk.") && (suffix == "ffn_gate.weight" || suffix == "ffn_up.weight" || suffix == "ffn_down.weight");
    if (!ffn) {
      add(t.name, t.type, t.ne, std::vector<std::byte>(bytes.begin(), bytes.end()));
      continue;
    }
    const std::string layer = t.name.substr(0, t.name.size() - suffix.size());
    std::vector<float> dense(size_t(t.ne[0] * t.ne[1]));
    dequantize_rows(t.type, bytes.data(), t.ne[1], t.ne[0], dense.data());
    std::vector<float> stacked;
    for (int e = 0; e < experts; ++e)
      for (float v : dense) stacked.push_back(v * (1 + 0.2f * normal(rng)));
    std::vector<std::byte> f16(stacked.size() * 2);
    convert_from_f32(stacked.data(), DType::f16, f16.data(), stacked.size());
    add(layer + suffix.substr(0, suffix.size() - 7) + "_exps.weight", GgmlType::F16, {t.ne[0], t.ne[1], experts}, std::move(f16));
    if (suffix == "ffn_gate.weight") {
      std::vector<float> router(size_t(n_embd * experts));
      for (float& v : router) v = 0.1f * normal(rng);
      add(layer + "ffn_gate_inp.weight", GgmlType::F32, {n_embd, experts}, f32_bytes(router));
      if (arch == "qwen3moe") {
        add(layer + "attn_q_norm.weight", GgmlType::F32, {head_dim}, f32_bytes(std::vector<float>(size_t(head_dim), 1.0f)));
        add(layer + "attn_k_norm.weight", GgmlType::F32, {head_dim}, f32_bytes(std::vector<float>(size_t(head_dim), 1.0f)));
      }
    }
  }
  for (const auto& [name, bytes] : data) w.write_data(name, bytes);
  w.finish();
}

}  // namespace lowbit::test
