#include "lowbit/io/checkpoint.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"

namespace lowbit {
namespace {

// Shards named by model.safetensors.index.json, in first-appearance order, checked against the map.
std::vector<std::string> shards_from_index(const std::filesystem::path& index_path, std::map<std::string, std::string>& weight_map) {
  const auto index = read_json_file(index_path);
  std::vector<std::string> shards;
  for (const auto& [name, shard] : JsonField(index, index_path.string())["weight_map"].members()) {
    const auto file = shard.string();
    if (file.empty() || file.find('/') != std::string::npos || file == "..")
      throw Error(fmt::format("shard name '{}' is not a plain file name", file), {.file = index_path.string(), .tensor = name});
    weight_map[name] = file;
    if (std::ranges::find(shards, file) == shards.end()) shards.push_back(file);
  }
  return shards;
}

}  // namespace

Checkpoint::Checkpoint(const std::filesystem::path& path) : path_(path) {
  if (!std::filesystem::is_directory(path)) {
    shards_.push_back(std::make_unique<safetensors::File>(path));
  } else {
    if (std::filesystem::exists(path / "config.json")) {
      config_ = read_json_file(path / "config.json");
      if (!config_.is_object()) throw Error("config.json is not a JSON object", {.file = (path / "config.json").string()});
    }
    std::map<std::string, std::string> weight_map;
    std::vector<std::string> files;
    const auto index_path = path / "model.safetensors.index.json";
    if (std::filesystem::exists(index_path)) {
      files = shards_from_index(index_path, weight_map);
    } else {
      for (const auto& e : std::filesystem::directory_iterator(path))
        if (e.path().extension() == ".safetensors") files.push_back(e.path().filename().string());
      std::ranges::sort(files);
      if (files.empty()) throw Error("no .safetensors file and no model.safetensors.index.json", {.file = path.string()});
    }
    for (const auto& f : files) shards_.push_back(std::make_unique<safetensors::File>(path / f));

    if (!weight_map.empty()) {
      // Every indexed tensor must be in the shard the index names, and every shard tensor indexed.
      for (const auto& shard : shards_) {
        const auto shard_name = std::filesystem::path(shard->label()).filename().string();
        for (const auto& t : shard->tensors()) {
          auto it = weight_map.find(t.name);
          if (it == weight_map.end() || it->second != shard_name)
            throw Error("tensor is not listed for this shard in model.safetensors.index.json", {.file = shard->label(), .tensor = t.name});
        }
      }
      for (const auto& [name, file] : weight_map) {
        const auto& shard = *shards_[std::ranges::find(files, file) - files.begin()];
        if (!shard.find(name)) throw Error("indexed tensor is missing from its shard", {.file = shard.label(), .tensor = name});
      }
    }
  }

  for (const auto& shard : shards_)
    for (const auto& t : shard->tensors()) {
      if (!index_.emplace(t.name, entries_.size()).second)
        throw Error("tensor appears in more than one shard", {.file = shard->label(), .tensor = t.name});
      entries_.push_back({&t, shard.get()});
    }
}

std::optional<DType> Checkpoint::torch_dtype() const {
  for (const char* key : {"torch_dtype", "dtype"})
    if (config_.contains(key) && config_[key].is_string())
      if (auto d = dtype_from_name(config_[key].get<std::string>()); d && dtype_is_float(*d)) return d;
  return std::nullopt;
}

const Checkpoint::Entry* Checkpoint::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

TensorView Checkpoint::view(std::string_view name) const {
  const Entry* e = find(name);
  if (!e) throw Error("no such tensor", {.file = path_.string(), .tensor = std::string(name)});
  return e->shard->view(*e->info);
}

}  // namespace lowbit
