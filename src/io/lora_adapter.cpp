#include "lowbit/io/lora_adapter.h"

#include <fmt/format.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cmath>
#include <map>
#include <optional>

#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"

namespace lowbit {
namespace {

constexpr std::string_view kPrefix = "base_model.model.";

// r, lora_alpha and the per-module patterns' values: positive and finite.
double positive(const JsonField& field) {
  const double value = field.number();
  if (!(value > 0)) throw field.error(fmt::format("{} is not positive", value), "a positive number");
  return value;
}

// rank_pattern / alpha_pattern: module pattern -> value; the first pattern that matches wins, as PEFT's
// get_pattern_key takes the first key that matches in the dict's order.
std::vector<std::pair<std::string, double>> pattern_map(const JsonField& config, std::string_view key) {
  std::vector<std::pair<std::string, double>> out;
  if (const auto patterns = config.find(key))
    for (const auto& [pattern, value] : patterns->members()) out.emplace_back(pattern, positive(value));
  return out;
}

std::optional<double> lookup(const std::vector<std::pair<std::string, double>>& patterns, const std::string& module) {
  for (const auto& [pattern, value] : patterns)
    if (peft_pattern_matches(pattern, module)) return value;
  return std::nullopt;
}

void refuse_unsupported(const JsonField& config) {
  if (const auto type = config.string_or("peft_type", "LORA"); type != "LORA")
    throw config["peft_type"].error(fmt::format("a {} adapter cannot be merged", type), "LORA");
  if (config.boolean_or("use_dora", false))
    throw config["use_dora"].error("DoRA adapters are not supported: their merge rescales each column by a learned magnitude",
                                   "a plain LoRA adapter");
  // PEFT turns fan_in_fan_out off for nn.Linear; it stays on only for GPT-2's transposed Conv1D weights.
  if (config.boolean_or("fan_in_fan_out", false))
    throw config["fan_in_fan_out"].error("fan_in_fan_out adapters are for transposed (Conv1D) weights, which the Llama family does not have",
                                         "false");
  if (const auto bias = config.string_or("bias", "none"); bias != "none")
    throw config["bias"].error(fmt::format("adapters that train biases (\"{}\") are not supported", bias), "\"none\"");
}

// A pattern as a regular expression matching a whole module name, compiled once per pattern. The
// pattern comes from the user's adapter_config.json: PCRE2 bounds the work and the recursion of a
// match, which std::regex does not.
class ModulePattern {
 public:
  explicit ModulePattern(const std::string& pattern) {
    const std::string anchored = "(?:.*\\.)?(?:" + pattern + ")";
    int error = 0;
    PCRE2_SIZE offset = 0;
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(anchored.data()), anchored.size(), PCRE2_ANCHORED | PCRE2_ENDANCHORED, &error,
                          &offset, nullptr);
    context_ = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(context_, 1'000'000);
    pcre2_set_depth_limit(context_, 10'000);
  }
  ~ModulePattern() {
    pcre2_code_free(code_);
    pcre2_match_context_free(context_);
  }
  ModulePattern(const ModulePattern&) = delete;
  ModulePattern& operator=(const ModulePattern&) = delete;

  // False when the pattern is not a regular expression (only the plain suffix rule applies then).
  bool matches(const std::string& pattern, const std::string& module) const {
    if (!code_) return false;
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(code_, nullptr);
    const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(module.data()), module.size(), 0, 0, match, context_);
    pcre2_match_data_free(match);
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)
      throw Error(fmt::format("the module pattern '{}' is too costly to match", pattern.substr(0, 60)), {.tensor = module});
    return rc >= 0;
  }

 private:
  pcre2_code* code_ = nullptr;
  pcre2_match_context* context_ = nullptr;
};

}  // namespace

bool peft_pattern_matches(const std::string& pattern, const std::string& module) {
  if (module == pattern || module.ends_with("." + pattern)) return true;
  // Patterns are few and modules many: each pattern compiled once per thread.
  thread_local std::map<std::string, std::unique_ptr<ModulePattern>> compiled;
  auto& regex = compiled[pattern];
  if (!regex) regex = std::make_unique<ModulePattern>(pattern);
  return regex->matches(pattern, module);
}

LoraAdapter::LoraAdapter(const std::filesystem::path& dir) : dir_(dir) {
  const auto config_path = dir / "adapter_config.json";
  if (!std::filesystem::is_regular_file(config_path))
    throw Error("cannot read the adapter's configuration", {.file = config_path.string(), .expected = "a PEFT adapter directory"});
  const nlohmann::json document = read_json_file(config_path);
  const JsonField config(document, config_path.string());
  refuse_unsupported(config);
  const double r = positive(config["r"]);
  const double alpha = positive(config["lora_alpha"]);
  const bool rslora = config.boolean_or("use_rslora", false);
  const auto rank_pattern = pattern_map(config, "rank_pattern");
  const auto alpha_pattern = pattern_map(config, "alpha_pattern");

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
    if (module_r != double(rank))
      throw Error(fmt::format("rank {} in the file but {} in the configuration", rank, module_r), {.file = file, .tensor = a->name});
    const double module_alpha = lookup(alpha_pattern, module).value_or(alpha);
    const double scale = rslora ? module_alpha / std::sqrt(module_r) : module_alpha / module_r;
    modules_.push_back({module + ".weight", file_->view(*a), file_->view(*b), scale});
  }
  if (modules_.empty() && replacements_.empty()) throw Error("the adapter holds no LoRA weights", {.file = file});
}

}  // namespace lowbit
