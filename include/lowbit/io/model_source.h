// A model's tensors under llama.cpp's names and GGUF layout, whether the model is a GGUF file or a
// Hugging Face directory: what quantization to GGUF reads from.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "lowbit/formats/bnb_4bit_packed.h"
#include "lowbit/io/gguf.h"

namespace lowbit {

class ModelSource {
 public:
  struct Tensor {
    std::string name;          // GGUF name: "blk.0.attn_q.weight"
    Shape ne;                  // GGUF dimensions, innermost first
    GgmlType stored_type;      // how the source stores it
    int64_t elements() const { return shape_elements(ne); }
  };

  // Opens a .gguf file or a Hugging Face model directory (Llama, Mistral, Qwen2, Qwen3; Mixtral, Qwen2-MoE, Qwen3-MoE).
  static std::unique_ptr<ModelSource> open(const std::filesystem::path& path);
  virtual ~ModelSource() = default;

  // GGUF metadata describing the model (architecture hyperparameters, tokenizer...), in file order.
  virtual const std::vector<gguf::KeyValue>& metadata() const = 0;
  // Tensors in the order llama-quantize writes them: by layer (non-layer tensors first), then name.
  virtual const std::vector<Tensor>& tensors() const = 0;
  // The stored bytes when they are the tensor's GGUF bytes as they are (empty when the source must
  // transform them, e.g. a Hugging Face Q/K weight that needs llama.cpp's row permutation).
  virtual std::span<const std::byte> raw(const Tensor& tensor) const = 0;
  // The tensor as float32 rows of ne[0] values: converted, dequantized or permuted as needed.
  virtual std::vector<float> load_f32(const Tensor& tensor) const = 0;
  // A bitsandbytes 4-bit weight's stored bytes, viewed in the source, when the tensor is one such weight
  // (whole, its rows perhaps in another order: Packed4bitView::row_order); nullopt for any other tensor,
  // stacked experts included. They live as long as the source.
  virtual std::optional<bnb::Packed4bitView> packed_4bit(const Tensor&) const { return std::nullopt; }
  virtual std::string label() const = 0;
  // The type a tensor keeps when it is not quantized: a GGUF's own, F32 for a converted model
  // (as llama.cpp's converter stores norms, biases and routers).
  virtual GgmlType unquantized_type(const Tensor& tensor) const = 0;

  const gguf::Value* find(std::string_view key) const;
};

// llama-quantize's tensor order (weight_name_comparer): layer number (-1 outside blocks), then name.
bool gguf_tensor_order(const std::string& a, const std::string& b);

}  // namespace lowbit
