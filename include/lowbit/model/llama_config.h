// The configuration and weight views of a Llama-family model, shared by the CPU runtime and the GPU one.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowbit/formats/format.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/model_weights.h"
#include "lowbit/model/rope.h"

namespace lowbit {

struct LlamaConfig {
  std::string arch;          // "llama" (Mixtral too), "qwen2", "qwen3", "qwen2moe", "qwen3moe"
  int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
  // Mixture of experts (0 experts: every layer dense). A layer with a router (ffn_gate_inp) sends each
  // token to the n_expert_used experts of highest softmax probability, weighted by those probabilities,
  // renormalised to sum 1 where expert_weights_norm (Mixtral, Qwen3-MoE; not Qwen2-MoE, as in llama.cpp).
  int n_expert = 0, n_expert_used = 0;
  bool expert_weights_norm = false;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  bool rope_neox = false;    // rotate (i, i + n_rot/2) pairs (Qwen); else adjacent pairs (llama.cpp's "normal")
  RopeParams rope_params;    // everything the GGUF says about RoPE (scaling, rope_freqs.weight)
  // The per-pair frequencies and magnitude computed once from rope_params (rope_table). Every backend
  // takes its angles from here, so they rotate alike.
  RopeTable rope;

  // Reads <arch>.* and rope_freqs.weight. Throws lowbit::Error naming the key for an unsupported
  // architecture or RoPE scaling type (supported: none, linear, yarn; Llama 3's through rope_freqs).
  static LlamaConfig from_weights(const ModelWeights& weights);
};

// A weight matrix of `rows` × `cols` in a ggml type, over bytes that outlive it.
struct QuantizedMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  std::span<const std::byte> data;
  // A bitsandbytes 4-bit weight as its checkpoint stores it, where the model was read from one: `data`
  // holds it dequantized (what the CPU multiplies by); a backend may multiply by these bytes instead.
  std::optional<bnb::Packed4bitView> packed_4bit;
};

// Called for every matrix product with its weight's name and its input rows (tokens × cols): how an
// importance matrix collects the squared activations. `expert` is -1 for a whole weight and, for a
// layer's stacked experts ("ffn_*_exps"), the expert whose rows multiplied these inputs (the tokens
// routed to it), as llama-imatrix counts them.
using ActivationObserver = std::function<void(const std::string& weight, int expert, const float* x, int64_t tokens, int64_t cols)>;

}  // namespace lowbit
