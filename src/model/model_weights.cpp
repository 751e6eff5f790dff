#include "lowbit/model/model_weights.h"

#include <algorithm>

#include "lowbit/core/error.h"

namespace lowbit {

ModelWeights ModelWeights::from_gguf(const std::filesystem::path& path) {
  auto file = std::make_shared<const gguf::File>(path);
  ModelWeights weights(file->label(), file->metadata());
  for (const auto& t : file->tensors()) weights.add_view({t.name, t.type, t.ne, file->data(t)}, file);
  return weights;
}

ModelWeights::ModelWeights(std::string label, std::vector<gguf::KeyValue> metadata)
    : label_(std::move(label)), metadata_(std::move(metadata)) {}

void ModelWeights::add_view(Tensor tensor, std::shared_ptr<const void> owner) {
  if (!index_.emplace(tensor.name, tensors_.size()).second) throw Error("tensor is listed twice", {.file = label_, .tensor = tensor.name});
  tensors_.push_back(std::move(tensor));
  if (owner && (owners_.empty() || owners_.back() != owner)) owners_.push_back(std::move(owner));
}

void ModelWeights::add_owned(std::string name, GgmlType type, Shape ne, std::vector<std::byte> bytes,
                             std::optional<bnb::Packed4bitView> packed_4bit, std::shared_ptr<const void> owner) {
  const auto& kept = owned_.emplace_back(std::move(bytes));
  add_view({std::move(name), type, std::move(ne), kept, packed_4bit}, std::move(owner));
}

const gguf::Value* ModelWeights::find(std::string_view key) const {
  const auto it = std::ranges::find(metadata_, key, &gguf::KeyValue::key);
  return it == metadata_.end() ? nullptr : &it->value;
}

const ModelWeights::Tensor* ModelWeights::find_tensor(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace lowbit
