// A Llama-family forward pass on the CPU (Llama, Mistral, Qwen2, Qwen3, SmolLM): RMSNorm,
// grouped-query attention with RoPE, SwiGLU. Weights stay in their stored format (any ggml type lowbit
// reads, f16, bf16, f32) and are dequantized a few rows at a time as the matrix products need them.
// It computes whole windows at once (no KV cache): what perplexity, KL-divergence and importance
// matrices need.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "lowbit/formats/ggml_types.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/rope.h"

namespace lowbit {

struct LlamaConfig {
  std::string arch;          // "llama", "qwen2", "qwen3"
  int n_embd = 0, n_layer = 0, n_head = 0, n_head_kv = 0, head_dim = 0, n_ff = 0, n_vocab = 0;
  float rms_eps = 1e-5f;
  float rope_base = 10000.0f;
  bool rope_neox = false;    // rotate (i, i + d/2) pairs (Qwen); else adjacent pairs (llama.cpp's "normal")
  RopeParams rope_params;    // everything the GGUF says about RoPE (scaling, rope_freqs.weight)
  RopeTable rope;            // the per-pair frequencies computed once from rope_params: apply_rope's input

  // Reads <arch>.* and rope_freqs.weight. Throws lowbit::Error naming the key for an unsupported
  // architecture or RoPE scaling type (supported: none, linear, yarn; Llama 3's through rope_freqs).

  static LlamaConfig from_gguf(const gguf::File& file);
};

// A weight matrix of `rows` × `cols` in a ggml type, over bytes that outlive it.
struct QuantizedMatrix {
  GgmlType type = GgmlType::F32;
  int64_t rows = 0, cols = 0;
  std::span<const std::byte> data;
};

// Called for every matrix product with its weight's name and its input rows (tokens × cols):
// how an importance matrix collects the squared activations.
using ActivationObserver = std::function<void(const std::string& weight, const float* x, int64_t tokens, int64_t cols)>;

class LlamaModel {
 public:
  // Loads a GGUF file (kept memory-mapped). Throws lowbit::Error for an unsupported architecture,
  // a missing tensor or a type lowbit cannot dequantize.
  static std::unique_ptr<LlamaModel> load(const std::filesystem::path& path);

  const LlamaConfig& config() const { return config_; }
  const gguf::File& file() const { return *file_; }

  // Logits (tokens.size() × n_vocab, row-major) for a window starting at position 0.
  std::vector<float> forward(std::span<const int32_t> tokens, const ActivationObserver& observer = nullptr) const;

  // forward() in its three steps, so a probe that changes one weight reruns only what follows it:
  // the tokens' embedding rows (tokens × n_embd), one block applied in place, the logits of the last state.
  std::vector<float> embed(std::span<const int32_t> tokens) const;
  void apply_layer(int layer, std::vector<float>& hidden, const ActivationObserver& observer = nullptr) const;
  std::vector<float> output_logits(const std::vector<float>& hidden, const ActivationObserver& observer = nullptr) const;

  // Makes later passes use `weight` for the matrix named `name` (GGUF name; its bytes must stay alive
  // while it is in use) and returns the matrix it replaces, to swap back. A tied output layer follows
  // token_embd.weight. Throws for a name the forward pass does not use.
  QuantizedMatrix swap_weight(const std::string& name, const QuantizedMatrix& weight);

 private:
  struct Layer {
    std::span<const float> attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
    QuantizedMatrix q, k, v, o, gate, up, down;
    std::string prefix;  // "blk.N."
  };
  QuantizedMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const;
  std::span<const float> vector(const std::string& name, int64_t size, bool optional = false) const;

  std::unique_ptr<gguf::File> file_;
  LlamaConfig config_;
  QuantizedMatrix token_embd_, output_;
  bool output_tied_ = false;  // no output.weight: the embedding matrix doubles as the output layer
  std::span<const float> output_norm_;
  std::vector<Layer> layers_;
};

// y[t, r] = Σ_c x[t, c] · W[r, c] for t < tokens, r < W.rows: W dequantized a few rows at a time.
void matmul_quantized(const QuantizedMatrix& w, const float* x, int64_t tokens, float* y);
// y[r] = Σ_c x[c] · rows[r · cols + c] for r < n_rows: float rows, one vector (attention's scores).
void dot_rows(const float* rows, int64_t n_rows, int64_t cols, const float* x, float* y);

}  // namespace lowbit
