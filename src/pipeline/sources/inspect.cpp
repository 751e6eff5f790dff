#include "lowbit/pipeline/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/io/gguf.h"

namespace lowbit {
namespace {

ModelSummary inspect_gguf(const std::filesystem::path& path) {
  const gguf::File file(path);
  ModelSummary summary{.path = path.string(), .container = "gguf"};
  for (const auto& t : file.tensors()) {
    const auto& type = ggml_type_info(t.type);
    TensorSummary s{.name = t.name, .format = std::string(type.name), .shape = {t.ne.rbegin(), t.ne.rend()}};
    s.params = t.elements();
    // Plain types read back as their own dtype; block-quantized data only as raw uint8 bytes.
    s.stored_elements = type.quantized ? int64_t(t.size) : s.params;
    s.bytes = t.size;
    summary.tensors.push_back(std::move(s));
  }
  return summary;
}

ModelSummary inspect_safetensors(const std::filesystem::path& path) {
  const Checkpoint ckpt(path);
  const BnbReader bnb(ckpt);
  ModelSummary summary{.path = path.string(), .container = "safetensors"};

  std::unordered_map<std::string, size_t> owner;  // companion tensor -> index of its weight's summary
  for (const auto& e : ckpt.tensors()) {
    TensorSummary s{.name = e.info->name, .format = std::string(dtype_name(e.info->dtype)), .shape = e.info->shape};
    // A bitsandbytes weight: its format, its logical shape (a 4-bit one's from its quant state) and
    // the companion tensors whose bytes it owns.
    const auto format = bnb.format(s.name);
    if (format) s.format = format_name(*format);
    if (format && *format != FormatId::int8) s.shape = bnb.quant_state_json(s.name).shape;
    const auto companions = format ? bnb.companions(s.name) : std::vector<std::string>{};
    s.params = shape_elements(s.shape);
    s.stored_elements = shape_elements(e.info->shape);
    s.bytes = e.info->size();
    for (const auto& c : companions) owner[c] = summary.tensors.size();
    summary.tensors.push_back(std::move(s));
  }
  // Fold companions into their weights and drop their own rows.
  std::vector<TensorSummary> kept;
  for (auto& s : summary.tensors) {
    auto it = owner.find(s.name);
    if (it == owner.end()) continue;
    summary.tensors[it->second].bytes += s.bytes;
    s.name.clear();
  }
  for (auto& s : summary.tensors)
    if (!s.name.empty()) kept.push_back(std::move(s));
  summary.tensors = std::move(kept);
  return summary;
}

}  // namespace

ModelSummary inspect(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) throw Error("no such file or directory", {.file = path.string()});
  ModelSummary summary = path.extension() == ".gguf" ? inspect_gguf(path) : inspect_safetensors(path);
  for (const auto& t : summary.tensors) {
    summary.params += t.params;
    summary.stored_elements += t.stored_elements;
    summary.bytes += t.bytes;
  }
  return summary;
}

}  // namespace lowbit
