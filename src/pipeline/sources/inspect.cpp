#include "lowbit/pipeline/inspect.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/io/bnb_checkpoint.h"
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

// The bitsandbytes layouts a weight can have in a safetensors checkpoint.
class BnbLayout {
 public:
  explicit BnbLayout(const Checkpoint& ckpt) : ckpt_(ckpt) {
    for (const auto& e : ckpt.tensors()) by_name_[e.info->name] = &e;
  }

  const Checkpoint::Entry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }

  // Fills `s` and returns the companion tensors when `weight` is a bitsandbytes-quantized weight.
  std::vector<std::string> describe(const Checkpoint::Entry& weight, TensorSummary& s) const {
    const std::string& name = weight.info->name;
    for (const bnb::QuantType quant_type : bnb::kQuantTypes) {
      const std::string state_name = name + bnb::quant_state_key(bnb::quant_type_name(quant_type));
      if (const auto* state = find(state_name)) {
        s.format = bnb::quant_type_name(quant_type);
        s.shape = shape_from_quant_state(*state);
        std::vector<std::string> companions{state_name};
        for (const char* aux : {".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map"})
          if (find(name + aux)) companions.push_back(name + aux);
        return companions;
      }
    }
    // LLM.int8: an int8 "<m>.weight" with "<m>.SCB" (transformers' naming) or "<m>.weight.SCB".
    if (weight.info->dtype == DType::i8) {
      const std::string module = bnb::module_of(name);
      for (const std::string& scb : {module + ".SCB", name + ".SCB"}) {
        if (!find(scb)) continue;
        s.format = format_name(FormatId::int8);
        std::vector<std::string> companions{scb};
        if (find(module + ".weight_format")) companions.push_back(module + ".weight_format");
        return companions;
      }
    }
    return {};
  }

 private:
  // The quant state is a uint8 tensor holding bitsandbytes' JSON, e.g. {"quant_type": "nf4", ..., "shape": [4096, 4096]}.
  Shape shape_from_quant_state(const Checkpoint::Entry& state) const {
    const auto view = state.shard->view(*state.info);
    const ErrorContext where{.file = state.shard->label(), .tensor = state.info->name};
    if (view.dtype != DType::u8) throw Error("quant state is not a uint8 tensor", where);
    const std::string_view text(reinterpret_cast<const char*>(view.bytes.data()), view.bytes.size());
    return bnb::parse_quant_state(text, where).shape;  // the one quant state parser, with its checks
  }

  const Checkpoint& ckpt_;
  std::unordered_map<std::string, const Checkpoint::Entry*> by_name_;
};

ModelSummary inspect_safetensors(const std::filesystem::path& path) {
  const Checkpoint ckpt(path);
  const BnbLayout bnb(ckpt);
  ModelSummary summary{.path = path.string(), .container = "safetensors"};

  std::unordered_map<std::string, size_t> owner;  // companion tensor -> index of its weight's summary
  for (const auto& e : ckpt.tensors()) {
    TensorSummary s{.name = e.info->name, .format = std::string(dtype_name(e.info->dtype)), .shape = e.info->shape};
    const auto companions = bnb.describe(e, s);
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
