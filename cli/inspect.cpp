// lowbit inspect PATH [--json]: per-tensor and total parameters, stored elements, bytes and bpw.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <nlohmann/json.hpp>
#include <string>

#include "command.h"
#include "format_numbers.h"
#include "lowbit/pipeline/inspect.h"

namespace lowbit::cli {
namespace {

nlohmann::ordered_json to_json(const ModelSummary& m) {
  nlohmann::ordered_json out;
  out["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : m.tensors)
    out["tensors"].push_back({{"name", t.name}, {"format", t.format}, {"shape", t.shape}, {"params", t.params},
                              {"stored_elements", t.stored_elements}, {"bytes", t.bytes}, {"bpw", t.bpw()}});
  out["total"] = {{"params", m.params}, {"stored_elements", m.stored_elements}, {"bytes", m.bytes}, {"bpw", m.bpw()}};
  return out;
}

void print_table(const ModelSummary& m) {
  size_t name_width = 4;
  for (const auto& t : m.tensors) name_width = std::max(name_width, t.name.size());
  fmt::print("{:<{}}  {:<8} {:>20} {:>14} {:>14} {:>14} {:>7}\n", "name", name_width, "format", "shape", "params",
             "stored elems", "bytes", "bpw");
  for (const auto& t : m.tensors)
    fmt::print("{:<{}}  {:<8} {:>20} {:>14} {:>14} {:>14} {:>7.3f}\n", t.name, name_width, t.format,
               fmt::format("[{}]", fmt::join(t.shape, ", ")), t.params, t.stored_elements, t.bytes, t.bpw());
  fmt::print("\n{} tensors in {} ({})\n", m.tensors.size(), m.path, m.container);
  fmt::print("parameters:      {:>16} ({})\n", m.params, human_count(double(m.params)));
  fmt::print("stored elements: {:>16} ({})\n", m.stored_elements, human_count(double(m.stored_elements)));
  fmt::print("bytes:           {:>16} ({})\n", m.bytes, human_bytes(double(m.bytes)));
  fmt::print("bits per weight: {:>16.4f}\n", m.bpw());
  if (m.stored_elements < m.params)
    fmt::print("note: packed storage: numel() of the stored tensors totals {} while the model has {} parameters\n",
               human_count(double(m.stored_elements)), human_count(double(m.params)));
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("inspect", "Show each tensor's format, shape, parameters, stored elements, bytes and bits per weight");
  struct Options {
    CommonOptions common;
    std::string path;
  };
  auto options = std::make_shared<Options>();
  cmd->add_option("PATH", options->path, "A .gguf file, a .safetensors file, or a Hugging Face model directory")->required();
  add_common_options(*cmd, options->common);
  cmd->callback([options] {
    const ModelSummary summary = inspect(options->path);
    if (options->common.json)
      fmt::print("{}\n", to_json(summary).dump(2));
    else
      print_table(summary);
  });
}

}  // namespace lowbit::cli
