// A Llama-family forward pass on the CPU (Llama, Mistral, Qwen2, Qwen3, SmolLM, and the mixtures of
// experts Mixtral, Qwen2-MoE, Qwen3-MoE): RMSNorm, grouped-query attention with RoPE, SwiGLU, routed
// and shared experts. Weights stay in their stored format (any ggml type lowbit
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

#include "lowbit/formats/format.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/llama_config.h"
#include "lowbit/model/model_weights.h"
#include "lowbit/model/runtime.h"

namespace lowbit {

// The CPU backend of LlamaRuntime, and the loaded model any other backend is built over.
class LlamaModel final : public LlamaRuntime {
 public:
  // Loads a GGUF file (kept memory-mapped). Throws lowbit::Error for an unsupported architecture,
  // a missing tensor or a type lowbit cannot dequantize.
  static std::unique_ptr<LlamaModel> load(const std::filesystem::path& path);
  // The same over weights from anywhere (a converted Hugging Face or bitsandbytes model).
  static std::unique_ptr<LlamaModel> load(ModelWeights weights);

  const LlamaConfig& config() const override { return config_; }
  const ModelWeights& weights() const { return weights_; }

  // LlamaRuntime on the CPU, in float32 (see runtime.h).
  std::vector<float> forward(std::span<const int32_t> tokens, int windows = 1, const ActivationObserver& observer = nullptr) const override;
  std::vector<float> embed(std::span<const int32_t> tokens) const override;
  void apply_layer(int layer, std::vector<float>& hidden, int windows = 1, const ActivationObserver& observer = nullptr) const override;
  std::vector<float> output_logits(const std::vector<float>& hidden, const ActivationObserver& observer = nullptr) const override;
  QuantizedMatrix swap_weight(const std::string& name, const QuantizedMatrix& weight) override;
  Device device() const override { return Device::cpu; }

  // Every matrix of the forward pass by its GGUF name, as currently in use (swaps included): what a
  // GPU backend uploads. The tied output layer is not listed separately. A layer's stacked experts are
  // one matrix of n_expert × rows-per-expert rows, expert e's rows at e × rows-per-expert.
  std::vector<std::pair<std::string, QuantizedMatrix>> matrices() const;
  bool output_tied() const { return output_tied_; }
  // The float vectors (norm weights, biases) of block `layer`, empty where the model has none.
  struct LayerVectors {
    std::span<const float> attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
  };
  LayerVectors layer_vectors(int layer) const;
  std::span<const float> output_norm() const { return output_norm_; }
  // Whether any layer routes its tokens to experts.
  bool has_experts() const;

 private:
  explicit LlamaModel(ModelWeights weights) : weights_(std::move(weights)) {}
  struct Layer {
    std::span<const float> attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
    QuantizedMatrix q, k, v, o;
    QuantizedMatrix gate, up, down;  // a dense layer's feed-forward block
    // A mixture-of-experts layer's router (n_expert rows), stacked experts, and the optional shared
    // expert with its optional gate (one row: a sigmoid weight per token, Qwen2-MoE).
    QuantizedMatrix router, gate_exps, up_exps, down_exps, gate_shexp, up_shexp, down_shexp, shexp_gate;
    std::string prefix;  // "blk.N."
    bool moe() const { return router.rows > 0; }
    bool shared_expert() const { return up_shexp.rows > 0; }
  };
  // Every matrix a layer may have, by its name after the layer prefix (absent ones have 0 rows).
  using MatrixSlot = std::pair<const char*, QuantizedMatrix Layer::*>;
  static std::span<const MatrixSlot> matrix_slots();
  QuantizedMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const;
  // A layer's experts stacked in one 3-D tensor (GGUF ne {cols, rows per expert, n_expert}), with the
  // rows per expert taken from it; `rows` checks them where known (> 0).
  QuantizedMatrix experts_matrix(const std::string& name, int64_t rows, int64_t cols) const;
  std::span<const float> vector(const std::string& name, int64_t size, bool optional = false) const;
  // down(silu(gate(x)) ⊙ up(x)) for `tokens` rows of x into y: a dense block, the shared expert or one
  // routed expert (`expert` ≥ 0, its rows of the stacked matrices); the observer sees the weights as
  // "ffn_gate<suffix>.weight" and so on.
  void feed_forward(const Layer& layer, const QuantizedMatrix& gate, const QuantizedMatrix& up, const QuantizedMatrix& down,
                    const char* suffix, int expert, const float* x, int64_t tokens, float* y, const ActivationObserver& observer) const;
  // The mixture-of-experts block: routed experts weighted by the router, plus the shared expert.
  void mixture_of_experts(const Layer& layer, const float* x, int64_t tokens, float* y, const ActivationObserver& observer) const;

  ModelWeights weights_;
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
