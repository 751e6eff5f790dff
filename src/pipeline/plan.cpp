#include "lowbit/pipeline/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint_output.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/plan/allocate.h"
#include "lowbit/plan/llama_cpp_mix.h"

namespace lowbit {
namespace {

// The formats the planner weighs, from 2.6 to 16 bits per weight.
constexpr GgmlType kCandidates[] = {GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_XS, GgmlType::Q4_K, GgmlType::Q4_0,
                                    GgmlType::IQ4_NL, GgmlType::Q5_0, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::Q8_0,
                                    GgmlType::F16};
constexpr int64_t kSampledRows = 256;

double bpw_of(GgmlType type) {
  const auto& info = ggml_type_info(type);
  return 8.0 * double(info.block_bytes) / double(info.block_elements);
}

bool allowed(const std::vector<PlanRule>& rules, const std::string& name, GgmlType type) {
  for (const auto& r : rules) {
    if (!glob_match(r.match, name)) continue;
    if (!r.allow.empty() && std::ranges::find(r.allow, type) == r.allow.end()) return false;
    if (r.min_bpw && bpw_of(type) < *r.min_bpw - 1e-9) return false;
    if (r.max_bpw && bpw_of(type) > *r.max_bpw + 1e-9) return false;
  }
  return true;
}

// Relative squared error of `type` on (a sample of) the tensor's rows, weighted per column.
double measure_loss(const std::vector<float>& values, int64_t cols, GgmlType type, const float* importance) {
  const int64_t rows = int64_t(values.size()) / cols;
  const int64_t step = std::max<int64_t>(1, rows / kSampledRows);
  std::vector<float> sample;
  for (int64_t r = 0; r < rows; r += step) sample.insert(sample.end(), values.begin() + r * cols, values.begin() + (r + 1) * cols);
  const int64_t n = int64_t(sample.size()) / cols;
  std::vector<std::byte> blocks(ggml_row_bytes(type, cols) * size_t(n));
  std::vector<float> back(sample.size());
  quantize_rows(type, sample.data(), n, cols, importance, blocks.data());
  dequantize_rows(type, blocks.data(), n, cols, back.data());
  double err = 0, ref = 0;
  for (size_t i = 0; i < sample.size(); ++i) {
    const double w = importance ? importance[i % size_t(cols)] : 1.0;
    err += w * double(sample[i] - back[i]) * double(sample[i] - back[i]);
    ref += w * double(sample[i]) * double(sample[i]);
  }
  return ref > 0 ? err / ref : 0.0;
}

std::vector<PlanRule> parse_rules(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("rules") || !j["rules"].is_array()) throw Error("no \"rules\" list", {.file = file});
  std::vector<PlanRule> rules;
  for (const auto& r : j["rules"]) {
    if (!r.contains("match") || !r["match"].is_string()) throw Error("a rule has no \"match\" glob", {.file = file});
    PlanRule rule{.match = r["match"].get<std::string>()};
    if (r.contains("allow"))
      for (const auto& name : r["allow"]) {
        const auto type = ggml_type_from_name(name.get<std::string>());
        if (!type) throw Error(fmt::format("unknown format '{}'", name.get<std::string>()), {.file = file, .tensor = rule.match});
        rule.allow.push_back(*type);
      }
    if (r.contains("min_bpw")) rule.min_bpw = r["min_bpw"].get<double>();
    if (r.contains("max_bpw")) rule.max_bpw = r["max_bpw"].get<double>();
    rules.push_back(std::move(rule));
  }
  return rules;
}

}  // namespace

std::vector<PlanRule> default_plan_rules() {
  return {{.match = "token_embd.weight", .min_bpw = 4.5}, {.match = "output.weight", .min_bpw = 4.5}};
}

std::vector<PlanRule> load_plan_rules(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open", {.file = path.string()});
  try {
    return parse_rules(nlohmann::json::parse(in), path.string());
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = path.string()});
  }
}

Plan make_plan(const ModelSource& source, const PlanOptions& options, Progress& progress) {
  Plan plan{.model = source.label(), .target_bpw = options.target_bpw};
  std::vector<std::vector<Option>> items;
  std::vector<size_t> item_tensor;
  double fixed_bits = 0;
  progress.begin("measure", int64_t(source.tensors().size()), 0);
  for (const auto& t : source.tensors()) {
    const auto role = classify_tensor(t.name);
    PlannedTensor p{.name = t.name, .role = role.role, .layer = role.layer, .params = t.elements()};
    plan.params += p.params;
    if (!tensor_allows_quantization(t.name, t.ne)) {
      p.format = source.unquantized_type(t);
      p.bytes = gguf::tensor_bytes(p.format, t.ne);
      fixed_bits += 8.0 * double(p.bytes);
    } else {
      const ImatrixEntry* entry = options.imatrix ? options.imatrix->find(t.name) : nullptr;
      const float* importance = entry && entry->columns == t.ne[0] && entry->experts == 1 ? entry->weights.data() : nullptr;
      const auto values = source.load_f32(t);
      std::vector<Option> item;
      for (GgmlType type : kCandidates) {
        if (t.ne[0] % ggml_type_info(type).block_elements != 0 || !allowed(options.rules, t.name, type)) continue;
        const double loss = measure_loss(values, t.ne[0], type, importance);
        p.options.emplace_back(type, loss);
        item.push_back({8.0 * double(gguf::tensor_bytes(type, t.ne)), loss});
      }
      if (item.empty()) throw Error("no candidate format is allowed for this tensor by the rules", {.file = source.label(), .tensor = t.name});
      p.quantized = true;
      items.push_back(std::move(item));
      item_tensor.push_back(plan.tensors.size());
    }
    plan.tensors.push_back(std::move(p));
    progress.advance(t.name, 0);
  }
  progress.end();

  const double budget = options.target_bpw * double(plan.params) - fixed_bits;
  double smallest = 0;
  for (const auto& item : items) smallest += std::ranges::min(item, {}, &Option::bits).bits;
  if (smallest > budget)
    throw Error(fmt::format("{:.3f} bits per weight is below what the allowed formats can reach ({:.3f})", options.target_bpw,
                            (smallest + fixed_bits) / double(plan.params)));
  const auto choice = allocate(items, budget);
  for (size_t i = 0; i < items.size(); ++i) {
    auto& p = plan.tensors[item_tensor[i]];
    p.format = p.options[size_t(choice[i])].first;
    p.loss = p.options[size_t(choice[i])].second;
  }
  for (size_t i = 0; i < plan.tensors.size(); ++i) {  // plan.tensors follow source.tensors()
    auto& p = plan.tensors[i];
    if (p.quantized) p.bytes = gguf::tensor_bytes(p.format, source.tensors()[i].ne);
    plan.bytes += p.bytes;
  }
  plan.achieved_bpw = 8.0 * double(plan.bytes) / double(plan.params);
  return plan;
}

void write_plan(const std::filesystem::path& path, const Plan& plan) {
  nlohmann::ordered_json j{{"model", plan.model}, {"target", "gguf"}, {"target_bpw", plan.target_bpw},
                           {"achieved_bpw", plan.achieved_bpw}, {"params", plan.params}, {"bytes", plan.bytes}};
  j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& p : plan.tensors) {
    nlohmann::ordered_json t{{"name", p.name}, {"role", std::string(role_name(p.role))}, {"layer", p.layer},
                             {"format", std::string(ggml_type_name(p.format))}, {"params", p.params},
                             {"bpw", 8.0 * double(p.bytes) / double(p.params)}, {"quantized", p.quantized}};
    if (p.quantized) {
      t["loss"] = p.loss;
      nlohmann::ordered_json losses = nlohmann::ordered_json::object();
      for (const auto& [type, loss] : p.options) losses[std::string(ggml_type_name(type))] = loss;
      t["losses"] = losses;
    }
    j["tensors"].push_back(t);
  }
  write_json_file(path, j);
}

Plan read_plan(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open", {.file = path.string()});
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = path.string()});
  }
  if (!j.contains("tensors") || !j["tensors"].is_array()) throw Error("no \"tensors\" list", {.file = path.string()});
  Plan plan{.model = j.value("model", ""), .target_bpw = j.value("target_bpw", 0.0), .achieved_bpw = j.value("achieved_bpw", 0.0)};
  for (const auto& t : j["tensors"]) {
    if (!t.contains("name") || !t.contains("format")) throw Error("a tensor entry needs \"name\" and \"format\"", {.file = path.string()});
    const auto type = ggml_type_from_name(t["format"].get<std::string>());
    const std::string name = t["name"].get<std::string>();
    if (!type) throw Error(fmt::format("unknown format '{}'", t["format"].get<std::string>()), {.file = path.string(), .tensor = name});
    const auto role = classify_tensor(name);
    plan.tensors.push_back({.name = name, .role = role.role, .layer = role.layer, .format = *type, .quantized = t.value("quantized", true)});
  }
  return plan;
}

}  // namespace lowbit
