#include "lowbit/io/lora_adapter.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <regex>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

using nlohmann::json;

constexpr std::string_view kPrefix = "base_model.model.";

json read_config(const std::filesystem::path& file) {
  std::ifstream in(file);
  if (!in) throw Error("cannot read the adapter's configuration", {.file = file.string(), .expected = "a PEFT adapter directory"});
  json config = json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object()) throw Error("not a JSON object", {.file = file.string()});
  return config;
}

// A number of the config (the key and what it must hold named in the error).
double config_number(const json& config, const char* key, const std::string& file) {
  const auto it = config.find(key);
  if (it == config.end() || !it->is_number()) throw Error(fmt::format("'{}' is missing or not a number", key), {.file = file, .tensor = key});
  const double value = it->get<double>();
  if (!std::isfinite(value) || value <= 0) throw Error(fmt::format("'{}' must be a positive number", key), {.file = file, .tensor = key});
  return value;
}

// rank_pattern / alpha_pattern: module pattern -> value; the first pattern that matches wins, as PEFT's
// get_pattern_key takes the first key that matches in the dict's order.
std::vector<std::pair<std::string, double>> pattern_map(const json& config, const char* key, const std::string& file) {
  std::vector<std::pair<std::string, double>> out;
  const auto it = config.find(key);
  if (it == config.end() || it->is_null()) return out;
  if (!it->is_object()) throw Error(fmt::format("'{}' must be an object of module pattern -> number", key), {.file = file, .tensor = key});
  for (const auto& [pattern, value] : it->items()) {
    if (!value.is_number() || !(value.get<double>() > 0))
      throw Error(fmt::format("'{}.{}' must be a positive number", key, pattern), {.file = file, .tensor = key});
    out.emplace_back(pattern, value.get<double>());
  }
  return out;
}

std::optional<double> lookup(const std::vector<std::pair<std::string, double>>& patterns, const std::string& module) {
  for (const auto& [pattern, value] : patterns)
    if (peft_pattern_matches(pattern, module)) return value;
  return std::nullopt;
}

void refuse_unsupported(const json& config, const std::string& file) {
  if (config.value("peft_type", std::string("LORA")) != "LORA")
    throw Error(fmt::format("a {} adapter cannot be merged", config.value("peft_type", std::string())),
                {.file = file, .tensor = "peft_type", .expected = "LORA"});
  if (config.value("use_dora", false))
    throw Error("DoRA adapters (use_dora) are not supported: their merge rescales each column by a learned magnitude",
                {.file = file, .tensor = "use_dora", .expected = "a plain LoRA adapter"});
  // PEFT turns fan_in_fan_out off for nn.Linear; it stays on only for GPT-2's transposed Conv1D weights.
  if (config.value("fan_in_fan_out", false))
    throw Error("fan_in_fan_out adapters are for transposed (Conv1D) weights, which the Llama family does not have",
                {.file = file, .tensor = "fan_in_fan_out", .expected = "false"});
  if (const auto bias = config.value("bias", std::string("none")); bias != "none")
    throw Error(fmt::format("adapters that train biases (bias = \"{}\") are not supported", bias), {.file = file, .tensor = "bias", .expected = "\"none\""});
}

}  // namespace

bool peft_pattern_matches(const std::string& pattern, const std::string& module) {
  if (module == pattern || module.ends_with("." + pattern)) return true;
  try {
    return std::regex_match(module, std::regex("(.*\\.)?(" + pattern + ")"));
  } catch (const std::regex_error&) {
    return false;  // not a regular expression: only the plain suffix match applies
  }
}

LoraAdapter::LoraAdapter(const std::filesystem::path& dir) : dir_(dir) {
  const auto config_path = dir / "adapter_config.json";
  const std::string config_file = config_path.string();
  const json config = read_config(config_path);
  refuse_unsupported(config, config_file);
  const double r = config_number(config, "r", config_file);
  const double alpha = config_number(config, "lora_alpha", config_file);
  const bool rslora = config.value("use_rslora", false);
  const auto rank_pattern = pattern_map(config, "rank_pattern", config_file);
  const auto alpha_pattern = pattern_map(config, "alpha_pattern", config_file);

  const auto weights = dir / "adapter_model.safetensors";
  if (!std::filesystem::exists(weights))
    throw Error("no adapter_model.safetensors (adapter_model.bin, a pickle, is not read)", {.file = weights.string()});
  file_ = std::make_unique<safetensors::File>(weights);
  const std::string file = file_->label();

  // Group the file's tensors by module.
  std::map<std::string, std::pair<const safetensors::TensorInfo*, const safetensors::TensorInfo*>> pairs;
  for (const auto& t : file_->tensors()) {
    if (!t.name.starts_with(kPrefix))
      throw Error("tensor name does not start with base_model.model.", {.file = file, .tensor = t.name, .expected = "PEFT's saved names"});
    const std::string rest = t.name.substr(kPrefix.size());
    if (rest.find("lora_magnitude_vector") != std::string::npos)
      throw Error("DoRA magnitude vectors are not supported", {.file = file, .tensor = t.name});
    if (rest.find("lora_embedding_") != std::string::npos)
      throw Error("adapters on embedding layers are not supported", {.file = file, .tensor = t.name, .expected = "LoRA on Linear layers"});
    if (rest.ends_with(".lora_A.weight")) {
      pairs[rest.substr(0, rest.size() - 14)].first = &t;
    } else if (rest.ends_with(".lora_B.weight")) {
      pairs[rest.substr(0, rest.size() - 14)].second = &t;
    } else if (rest.ends_with(".lora_A.bias") || rest.ends_with(".lora_B.bias")) {
      throw Error("LoRA biases (lora_bias) are not supported", {.file = file, .tensor = t.name});
    } else if (rest.ends_with(".weight") || rest.ends_with(".bias")) {
      replacements_.push_back({rest, file_->view(t)});  // modules_to_save, stored whole
    } else {
      throw Error("not a LoRA tensor", {.file = file, .tensor = t.name, .expected = "…lora_A.weight, …lora_B.weight or a saved module's weight"});
    }
  }

  for (const auto& [module, ab] : pairs) {
    const auto* a = ab.first;
    const auto* b = ab.second;
    if (!a || !b)
      throw Error(fmt::format("module {} has lora_{} but not lora_{}", module, a ? "A" : "B", a ? "B" : "A"), {.file = file, .tensor = module});
    for (const auto* t : {a, b})
      if (t->shape.size() != 2 || !dtype_is_float(t->dtype))
        throw Error("a LoRA matrix must be 2-D floats", {.file = file, .tensor = t->name, .expected = "[r, in] and [out, r]"});
    const int64_t rank = a->shape[0];
    if (b->shape[1] != rank)
      throw Error(fmt::format("lora_B has {} columns but lora_A {} rows", b->shape[1], rank), {.file = file, .tensor = b->name});
    const double module_r = lookup(rank_pattern, module).value_or(r);
    if (int64_t(module_r) != rank)
      throw Error(fmt::format("rank {} in the file but {} in the configuration", rank, module_r), {.file = file, .tensor = a->name});
    const double module_alpha = lookup(alpha_pattern, module).value_or(alpha);
    const double scale = rslora ? module_alpha / std::sqrt(module_r) : module_alpha / module_r;
    modules_.push_back({module + ".weight", file_->view(*a), file_->view(*b), scale});
  }
  if (modules_.empty() && replacements_.empty()) throw Error("the adapter holds no LoRA weights", {.file = file});
}

}  // namespace lowbit
