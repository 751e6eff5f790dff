// What the runtime loads a model from: GGUF metadata and tensors under llama.cpp's names, each as a
// ggml type and its bytes. A GGUF file is read in place (memory-mapped). A converted model — a
// Hugging Face or bitsandbytes directory, see pipeline/eval_model.h — is read in place where a
// tensor's bytes already are GGUF's, and converted into memory where they are not (permuted Q/K rows,
// dequantized bitsandbytes weights, float norms): no copy of the model is written to disk. A
// bitsandbytes 4-bit weight keeps a view of its stored bytes beside its dequantized ones, for a
// backend that multiplies by it packed (the GPU's).
#pragma once

#include <deque>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowbit/formats/bnb_4bit_packed.h"
#include "lowbit/formats/ggml_types.h"
#include "lowbit/io/gguf.h"

namespace lowbit {

class ModelWeights {
 public:
  struct Tensor {
    std::string name;
    GgmlType type = GgmlType::F32;
    Shape ne;  // innermost first, as GGUF stores it
    std::span<const std::byte> bytes;
    std::optional<bnb::Packed4bitView> packed_4bit;  // the same weight as a bitsandbytes checkpoint stores it
    int64_t elements() const { return shape_elements(ne); }
  };

  // A GGUF file, memory-mapped; tensors and metadata as the file holds them.
  static ModelWeights from_gguf(const std::filesystem::path& path);
  // An empty set: `label` names it in errors (the user's path).
  ModelWeights(std::string label, std::vector<gguf::KeyValue> metadata);

  // A tensor whose bytes live in memory that `owner` keeps alive (a mapping, a checkpoint).
  void add_view(Tensor tensor, std::shared_ptr<const void> owner);
  // A tensor whose bytes this object keeps; `packed_4bit`, if any, views memory that `owner` keeps alive.
  void add_owned(std::string name, GgmlType type, Shape ne, std::vector<std::byte> bytes,
                 std::optional<bnb::Packed4bitView> packed_4bit = std::nullopt, std::shared_ptr<const void> owner = nullptr);

  const std::string& label() const { return label_; }
  const std::vector<gguf::KeyValue>& metadata() const { return metadata_; }
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const gguf::Value* find(std::string_view key) const;
  const Tensor* find_tensor(std::string_view name) const;

 private:
  std::string label_;
  std::vector<gguf::KeyValue> metadata_;
  std::vector<Tensor> tensors_;
  std::unordered_map<std::string, size_t> index_;
  std::vector<std::shared_ptr<const void>> owners_;  // what the views point into
  std::deque<std::vector<std::byte>> owned_;         // a deque: the bytes never move once added
};

}  // namespace lowbit
