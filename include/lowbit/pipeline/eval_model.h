// Opening any model lowbit writes for evaluation: a GGUF directly; a Hugging Face directory or a
// bitsandbytes checkpoint through its ModelSource, read in place where its bytes serve as they are
// and converted into memory where not (lowbit/model/model_weights.h) — nothing is written to disk;
// run on the CPU or, with Device::cuda, by the runtime's CUDA backend (opened from liblowbit_cuda.so)
// over the same loaded weights.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "lowbit/core/dtype.h"
#include "lowbit/model/llama.h"
#include "lowbit/pipeline/lora_merge.h"

namespace lowbit {

// "cpu", "cuda" or "auto" (cuda when this lowbit was built with CUDA and a GPU is visible). Throws for
// another name, or "cuda" without CUDA.
Device resolve_device(const std::string& name);
// Whether the NVIDIA kernel driver is installed: without it `auto` is the CPU, decided without loading
// the CUDA module.
bool nvidia_driver_present();

class EvalModel {
 public:
  // On the GPU the matmul inputs are rounded to `gpu_activations` (bf16 or f16).
  explicit EvalModel(const std::filesystem::path& path, Device device = Device::cpu, DType gpu_activations = DType::bf16);
  // The model with LoRA adapters applied to the weights it computes with (quantized weights
  // dequantized, float weights as they are): "base + adapter" as training ran it, unmerged up to float
  // rounding. Adapted weights are held as float32.
  EvalModel(const std::filesystem::path& path, const std::vector<ScaledAdapter>& adapters, Device device = Device::cpu,
            DType gpu_activations = DType::bf16);
  ~EvalModel();
  EvalModel(const EvalModel&) = delete;
  EvalModel& operator=(const EvalModel&) = delete;

  const LlamaModel& model() const { return *model_; }
  LlamaModel& model() { return *model_; }
  // What runs the model: the loaded model itself on the CPU, or its GPU backend.
  const LlamaRuntime& runtime() const { return gpu_ ? *gpu_ : *model_; }
  LlamaRuntime& runtime() { return gpu_ ? *gpu_ : *model_; }  // for probes that swap one weight at a time
  // The GGUF metadata the tokenizer is built from (the converted one for non-GGUF inputs).
  const std::vector<gguf::KeyValue>& metadata() const { return model_->weights().metadata(); }

 private:
  void load(const std::filesystem::path& path);
  void apply(const std::vector<ScaledAdapter>& adapters);

  std::filesystem::path path_;
  std::shared_ptr<const ModelSource> source_;  // a converted model's tensors (null for a GGUF); outlives the model
  std::unique_ptr<LlamaModel> model_;
  std::vector<std::vector<float>> adapted_;  // float32 weights swapped in for the adapted ones
  std::unique_ptr<LlamaRuntime> gpu_;  // null on the CPU
};

}  // namespace lowbit
