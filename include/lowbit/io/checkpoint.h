// A Hugging Face model directory: config.json plus one safetensors file or shards listed in
// model.safetensors.index.json. Tensors from every shard are served as zero-copy views.
#pragma once

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/io/safetensors.h"

namespace lowbit {

class Checkpoint {
 public:
  struct Entry {
    const safetensors::TensorInfo* info;
    const safetensors::File* shard;
  };

  // Opens a directory (sharded or not) or a single .safetensors file. Throws lowbit::Error.
  explicit Checkpoint(const std::filesystem::path& path);

  // Tensors in shard order, then data order within each shard.
  const std::vector<Entry>& tensors() const { return entries_; }
  const Entry* find(std::string_view name) const;
  TensorView view(std::string_view name) const;
  // config.json, or an empty object when there is none (a bare .safetensors file).
  const nlohmann::json& config() const { return config_; }
  // The model's own float dtype as config.json records it ("torch_dtype" or "dtype"), if any.
  std::optional<DType> torch_dtype() const;
  const std::filesystem::path& path() const { return path_; }
  const std::vector<std::unique_ptr<safetensors::File>>& shards() const { return shards_; }

 private:
  std::filesystem::path path_;
  std::vector<std::unique_ptr<safetensors::File>> shards_;
  std::vector<Entry> entries_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in entries_
  nlohmann::json config_ = nlohmann::json::object();
};

}  // namespace lowbit
