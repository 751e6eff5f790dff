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
  // GPU backend uploads. The tied output layer is not listed separately.
  std::vector<std::pair<std::string, QuantizedMatrix>> matrices() const;
  bool output_tied() const { return output_tied_; }
  // The float vectors (norm weights, biases) of block `layer`, empty where the model has none.
  struct LayerVectors {
    std::span<const float> attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
  };
  LayerVectors layer_vectors(int layer) const;
  std::span<const float> output_norm() const { return output_norm_; }

 private:
  explicit LlamaModel(ModelWeights weights) : weights_(std::move(weights)) {}
  struct Layer {
    std::span<const float> attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
    QuantizedMatrix q, k, v, o, gate, up, down;
    std::string prefix;  // "blk.N."
  };
  QuantizedMatrix matrix(const std::string& name, int64_t rows, int64_t cols) const;
  std::span<const float> vector(const std::string& name, int64_t size, bool optional = false) const;

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
