// Writing a Hugging Face style checkpoint: tensors grouped into safetensors shards of bounded size,
// the shard index, config.json, and the tokenizer and generation files copied along.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lowbit/core/tensor.h"

namespace lowbit {

// Tensors that belong together (a weight and its quantization state) and land in one shard.
struct TensorGroup {
  std::vector<std::string> names;  // output tensor names, in the order they are written
  uint64_t bytes = 0;              // estimated output size, for sharding
};

// Writes one group: calls `emit(name, view)` for each of group.names, in order.
using GroupWriter = std::function<void(size_t group, const std::function<void(const std::string&, const TensorView&)>& emit)>;

// Writes the groups into `dir` as model.safetensors, or as model-0000i-of-0000n.safetensors shards of
// at most max_shard_bytes (a larger group gets a shard of its own) plus model.safetensors.index.json.
// Returns the number of shards and adds the bytes written to `bytes_out`.
int write_sharded(const std::filesystem::path& dir, const std::vector<TensorGroup>& groups, uint64_t max_shard_bytes,
                  const GroupWriter& write_group, uint64_t& bytes_out);

// A checkpoint job's whole output: a single .safetensors file at `output` when `input` is a file;
// else a new directory (written beside it and renamed when complete) holding the shards, `config`
// as config.json and the other files of `input`. Returns the number of shards.
int write_checkpoint(const std::filesystem::path& input, const std::filesystem::path& output, const std::vector<TensorGroup>& groups,
                     const GroupWriter& write_group, const std::map<std::string, std::string>& file_metadata,
                     const nlohmann::ordered_json& config, uint64_t max_shard_bytes, uint64_t& bytes_out, bool overwrite = false);

// Copies the files of a model directory other than its weights, index and config.json.
void copy_side_files(const std::filesystem::path& from, const std::filesystem::path& to);

void write_json_file(const std::filesystem::path& path, const nlohmann::ordered_json& json);

}  // namespace lowbit
