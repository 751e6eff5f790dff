#include "pipeline/outputs/checkpoint_output.h"

#include <fmt/format.h>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"

namespace lowbit {

int write_sharded(const std::filesystem::path& dir, const std::vector<TensorGroup>& groups, uint64_t max_shard_bytes,
                  const GroupWriter& write_group, uint64_t& bytes_out) {
  // Greedy in order, as save_pretrained does: a new shard when the next group would overflow this one.
  std::vector<std::vector<size_t>> shards(1);
  uint64_t shard_bytes = 0;
  for (size_t g = 0; g < groups.size(); ++g) {
    if (!shards.back().empty() && shard_bytes + groups[g].bytes > max_shard_bytes) {
      shards.emplace_back();
      shard_bytes = 0;
    }
    shards.back().push_back(g);
    shard_bytes += groups[g].bytes;
  }
  const int count = int(shards.size());
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  uint64_t total = 0;
  for (int s = 0; s < count; ++s) {
    const std::string file = count == 1 ? "model.safetensors" : fmt::format("model-{:05d}-of-{:05d}.safetensors", s + 1, count);
    std::vector<std::string> names;
    for (size_t g : shards[size_t(s)]) names.insert(names.end(), groups[g].names.begin(), groups[g].names.end());
    safetensors::Writer writer(dir / file, names, {{"format", "pt"}});
    for (size_t g : shards[size_t(s)])
      write_group(g, [&](const std::string& name, const TensorView& view) {
        writer.write(name, view);
        weight_map[name] = file;
        total += view.bytes.size();
      });
    writer.finish();
  }
  if (count > 1) write_json_file(dir / "model.safetensors.index.json", {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}});
  bytes_out += total;
  return count;
}

int write_checkpoint(const std::filesystem::path& input, const std::filesystem::path& output, const std::vector<TensorGroup>& groups,
                     const GroupWriter& write_group, const std::map<std::string, std::string>& file_metadata,
                     const nlohmann::ordered_json& config, uint64_t max_shard_bytes, uint64_t& bytes_out, bool overwrite) {
  // The output's name must say what it holds: a file named .gguf holding safetensors misleads every tool.
  const auto ext = output.extension();
  const bool file_input = !std::filesystem::is_directory(input);
  if (file_input && ext != ".safetensors")
    throw Error("the output of a .safetensors input is a .safetensors file", {.file = output.string(), .expected = "OUT.safetensors"});
  if (!file_input && (ext == ".safetensors" || ext == ".gguf"))
    throw Error("the output of a model directory is a directory (a checkpoint of shards and config.json), not a " + ext.string() + " file",
                {.file = output.string(), .expected = "a directory path"});
  if (file_input) {
    std::vector<std::string> names;
    for (const auto& g : groups) names.insert(names.end(), g.names.begin(), g.names.end());
    safetensors::Writer writer(output, names, file_metadata);
    for (size_t g = 0; g < groups.size(); ++g)
      write_group(g, [&](const std::string& name, const TensorView& t) {
        writer.write(name, t);
        bytes_out += t.bytes.size();
      });
    writer.finish();
    return 1;
  }
  AtomicDirectory out(output, overwrite);
  const int shards = write_sharded(out.path(), groups, max_shard_bytes, write_group, bytes_out);
  write_json_file(out.path() / "config.json", config);
  copy_side_files(input, out.path());
  out.commit();
  return shards;
}

void copy_side_files(const std::filesystem::path& from, const std::filesystem::path& to) {
  for (const auto& entry : std::filesystem::directory_iterator(from)) {
    const auto name = entry.path().filename().string();
    if (!entry.is_regular_file() || entry.path().extension() == ".safetensors" || name == "model.safetensors.index.json" ||
        name == "config.json" || name.starts_with("."))
      continue;
    std::filesystem::copy_file(entry.path(), to / name);
  }
}

void write_json_file(const std::filesystem::path& path, const nlohmann::ordered_json& json) {
  AtomicFile file(path);
  const std::string text = json.dump(2) + "\n";
  file.write(text.data(), text.size());
  file.commit();
}

}  // namespace lowbit
