// plan.json: the plan as a readable file a user can edit, and back.
//
// {"model", "target": "gguf"|"bnb", "target_bpw", "achieved_bpw", "params", "bytes",
//  "predicted_loss" (the chosen losses summed), "loss_measure": {"kind": "relative_error"|"output_kld", "imatrix_weighted",
//                   "probe_positions" and "calibration" (output_kld only)},
//  "tensors": [{"name", "role", "layer", "format": "q4_K" | "nf4" | "fp4" | "bf16" ...,
//               "blocksize" and "double_quant" (4-bit bitsandbytes formats only),
//               "params", "bpw", "quantized", "loss", "losses": {"q2_K": ..., "nf4-b64-dq": ...}}]}
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "checkpoint_output.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/plan.h"

namespace lowbit {
namespace {

TensorFormat read_format(const nlohmann::json& t, const std::string& file, const std::string& name) {
  const std::string format = t["format"].get<std::string>();
  if (format == "nf4" || format == "fp4") {
    Bnb4bitFormat b{.quant_type = format == "nf4" ? bnb::QuantType::nf4 : bnb::QuantType::fp4,
                    .blocksize = t.value("blocksize", int64_t(64)), .double_quant = t.value("double_quant", false)};
    bnb::check_blocksize_4bit(b.blocksize, name);
    return b;
  }
  const auto type = ggml_type_from_name(format);
  if (!type) throw Error(fmt::format("unknown format '{}'", format), {.file = file, .tensor = name});
  return *type;
}

Plan parse_plan(const nlohmann::json& j, const std::string& file) {
  if (!j.is_object() || !j.contains("tensors") || !j["tensors"].is_array()) throw Error("no \"tensors\" list", {.file = file});
  const std::string target = j.value("target", "gguf");
  if (target != "gguf" && target != "bnb") throw Error(fmt::format("unknown target '{}'", target), {.file = file, .expected = "gguf or bnb"});
  Plan plan{.model = j.value("model", ""), .target = target == "bnb" ? PlanTarget::bnb : PlanTarget::gguf,
            .target_bpw = j.value("target_bpw", 0.0), .achieved_bpw = j.value("achieved_bpw", 0.0),
            .predicted_loss = j.value("predicted_loss", 0.0)};
  // Only a record of how the plan was made: a hand-written plan may leave it out.
  if (const auto m = j.find("loss_measure"); m != j.end()) {
    if (!m->is_object()) throw Error("\"loss_measure\" is not an object", {.file = file});
    const std::string kind = m->value("kind", "relative_error");
    if (kind != "relative_error" && kind != "output_kld")
      throw Error(fmt::format("unknown loss_measure kind '{}'", kind), {.file = file, .expected = "relative_error or output_kld"});
    plan.loss_measure = {.output_kld = kind == "output_kld", .imatrix_weighted = m->value("imatrix_weighted", false),
                         .probe_positions = m->value("probe_positions", int64_t(0)), .calibration = m->value("calibration", "")};
  }
  for (const auto& t : j["tensors"]) {
    if (!t.is_object() || !t.contains("name") || !t["name"].is_string() || !t.contains("format") || !t["format"].is_string())
      throw Error("a tensor entry needs \"name\" and \"format\" strings", {.file = file});
    const std::string name = t["name"].get<std::string>();
    TensorFormat format;
    bool quantized = true;
    int64_t params = 0;
    try {  // a field of the wrong type ("blocksize": "64") names the file and the tensor
      format = read_format(t, file, name);
      quantized = t.value("quantized", true);
      params = t.value("params", int64_t(0));
    } catch (const nlohmann::json::exception& e) {
      throw Error(e.what(), {.file = file, .tensor = name});
    } catch (const Error& e) {  // a blocksize bitsandbytes does not take
      throw Error(e.problem(), {.file = file, .tensor = name, .expected = e.context().expected});
    }
    // A GGUF holds no bitsandbytes formats; a bitsandbytes checkpoint no ggml block types.
    const bool fits = plan.target == PlanTarget::gguf ? std::holds_alternative<GgmlType>(format)
                                                      : !quantized || is_float_format(format) || std::holds_alternative<Bnb4bitFormat>(format);
    if (!fits)
      throw Error(fmt::format("format {} does not belong in a {} plan", format_label(format), target), {.file = file, .tensor = name});
    const auto role = role_of_tensor(name);
    plan.tensors.push_back({.name = name, .role = role.role, .layer = role.layer, .format = format, .params = params,
                            .quantized = quantized});
  }
  return plan;
}

}  // namespace

std::string_view plan_target_name(PlanTarget target) { return target == PlanTarget::bnb ? "bnb" : "gguf"; }

void write_plan(const std::filesystem::path& path, const Plan& plan) {
  nlohmann::ordered_json j{{"model", plan.model}, {"target", std::string(plan_target_name(plan.target))}, {"target_bpw", plan.target_bpw},
                           {"achieved_bpw", plan.achieved_bpw}, {"params", plan.params}, {"bytes", plan.bytes}};
  const auto& m = plan.loss_measure;
  nlohmann::ordered_json measure{{"kind", m.output_kld ? "output_kld" : "relative_error"}, {"imatrix_weighted", m.imatrix_weighted}};
  if (m.output_kld) {
    measure["probe_positions"] = m.probe_positions;
    measure["calibration"] = m.calibration;
  }
  j["predicted_loss"] = plan.predicted_loss;
  j["loss_measure"] = measure;
  j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& p : plan.tensors) {
    nlohmann::ordered_json t{{"name", p.name}, {"role", std::string(role_name(p.role))}, {"layer", p.layer},
                             {"format", std::string(format_name(p.format))}};
    if (const auto* b = std::get_if<Bnb4bitFormat>(&p.format)) {
      t["blocksize"] = b->blocksize;
      t["double_quant"] = b->double_quant;
    }
    t["params"] = p.params;
    t["bpw"] = 8.0 * double(p.bytes) / double(p.params);
    t["quantized"] = p.quantized;
    if (p.quantized) {
      t["loss"] = p.loss;
      nlohmann::ordered_json losses = nlohmann::ordered_json::object();
      for (const auto& o : p.options) losses[format_label(o.format)] = o.loss;
      t["losses"] = losses;
    }
    j["tensors"].push_back(t);
  }
  write_json_file(path, j);
}

Plan read_plan(const std::filesystem::path& path) {
  const std::string file = path.string();
  std::ifstream in(path);
  if (!in) throw Error("cannot open", {.file = file});
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = file});
  }
  try {
    return parse_plan(j, file);
  } catch (const nlohmann::json::exception& e) {  // a field of the wrong type ("target": 4)
    throw Error(e.what(), {.file = file});
  }
}

}  // namespace lowbit
