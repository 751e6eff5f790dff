// plan.json: the plan as a readable file a user can edit, and back.
//
// {"model", "target": "gguf"|"bnb", "target_bpw", "achieved_bpw", "params", "bytes",
//  "predicted_loss" (the chosen losses summed), "loss_measure": {"kind": "relative_error"|"output_kld", "imatrix_weighted",
//                   "probe_positions" and "calibration" (output_kld only), "reason" (why this loss),
//                   "whole_kld" (output_kld: the planned model's KLD on the probe's windows, measured whole),
//                   "imatrix" (the importance matrix's file: its name when beside the plan, else its absolute path),
//                   "gptq" (likewise the Hessian file, when candidates were written by GPTQ)},
//  "tensors": [{"name", "role", "layer", "format": "q4_K" | "nf4" | "fp4" | "bf16" ...,
//               "blocksize" and "double_quant" (4-bit bitsandbytes formats only),
//               "params", "bpw", "quantized", "loss", "losses": {"q2_K": ..., "nf4-b64-dq": ...}}]}
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "pipeline/outputs/checkpoint_output.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/io/json_file.h"
#include "lowbit/pipeline/plan.h"

namespace lowbit {
namespace {

FormatSpec read_format(const JsonField& t, const std::string& name) {
  const std::string format = t["format"].string();
  const auto id = parse_format_id(format);
  const auto planned = id ? plan_format_of(*id) : std::nullopt;
  if (!planned) throw t["format"].error(fmt::format("unknown format '{}'", format), "a ggml type, nf4 or fp4");
  if (is_bnb_4bit(*planned)) {
    const FormatSpec b{.id = planned->id, .blocksize = t.integer_or("blocksize", 64), .double_quant = t.boolean_or("double_quant", false)};
    try {
      bnb::check_blocksize_4bit(b.blocksize, name);
    } catch (const Error& e) {
      throw t["blocksize"].error(e.problem(), e.context().expected);
    }
    return b;
  }
  return *planned;
}

// A file the plan names, as plan.json records it: its name alone when it lies beside the plan, else its
// absolute path; and back.
std::string file_record(const std::string& file, const std::filesystem::path& plan) {
  if (file.empty()) return file;
  const auto path = std::filesystem::weakly_canonical(std::filesystem::absolute(file));
  const bool beside = path.parent_path() == std::filesystem::weakly_canonical(std::filesystem::absolute(plan)).parent_path();
  return beside ? path.filename().string() : path.string();
}

std::string recorded_file(const std::string& record, const std::string& plan) {
  return record.empty() ? record : (std::filesystem::path(plan).parent_path() / record).string();
}

Plan parse_plan(const JsonField& j) {
  const std::string target = j.string_or("target", "gguf");
  if (target != "gguf" && target != "bnb") throw j["target"].error(fmt::format("unknown target '{}'", target), "gguf or bnb");
  Plan plan{.model = j.string_or("model", ""), .target = target == "bnb" ? PlanTarget::bnb : PlanTarget::gguf,
            .target_bpw = j.number_or("target_bpw", 0.0), .achieved_bpw = j.number_or("achieved_bpw", 0.0),
            .predicted_loss = j.number_or("predicted_loss", 0.0)};
  // Only a record of how the plan was made: a hand-written plan may leave it out.
  if (const auto m = j.find("loss_measure")) {
    const std::string kind = m->string_or("kind", "relative_error");
    if (kind != "relative_error" && kind != "output_kld")
      throw (*m)["kind"].error(fmt::format("unknown loss_measure kind '{}'", kind), "relative_error or output_kld");
    plan.loss_measure = {.output_kld = kind == "output_kld", .imatrix_weighted = m->boolean_or("imatrix_weighted", false),
                         .probe_positions = m->integer_or("probe_positions", 0, 0), .calibration = m->string_or("calibration", ""), .reason = m->string_or("reason", ""),
                         .imatrix = recorded_file(m->string_or("imatrix", ""), j.file()), .gptq = recorded_file(m->string_or("gptq", ""), j.file()),
                         .whole_kld = m->find("whole_kld") ? std::optional(m->number_or("whole_kld", 0.0)) : std::nullopt};
  }
  for (const auto& t : j["tensors"].elements()) {
    const std::string name = t["name"].string();
    FormatSpec format;
    bool quantized = true;
    int64_t params = 0;
    try {
      format = read_format(t, name);
      quantized = t.boolean_or("quantized", true);
      params = t.integer_or("params", 0, 0);
    } catch (const Error& e) {  // the key path says "tensors[12]"; the name says which tensor that is
      ErrorContext c = e.context();
      c.tensor = name;
      throw Error(e.problem(), c);
    }
    // A GGUF holds no bitsandbytes formats; a bitsandbytes checkpoint no ggml block types.
    const bool fits = plan.target == PlanTarget::gguf ? !is_bnb_4bit(format) : !quantized || is_float_format(format) || is_bnb_4bit(format);
    if (!fits)
      throw Error(fmt::format("format {} does not belong in a {} plan", format_label(format), target), {.file = j.file(), .tensor = name});
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
    if (m.whole_kld) measure["whole_kld"] = *m.whole_kld;
  }
  if (!m.reason.empty()) measure["reason"] = m.reason;
  if (!m.imatrix.empty()) measure["imatrix"] = file_record(m.imatrix, path);
  if (!m.gptq.empty()) measure["gptq"] = file_record(m.gptq, path);
  j["predicted_loss"] = plan.predicted_loss;
  j["loss_measure"] = measure;
  j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& p : plan.tensors) {
    nlohmann::ordered_json t{{"name", p.name}, {"role", std::string(role_name(p.role))}, {"layer", p.layer},
                             {"format", std::string(format_name(p.format.id))}};
    if (is_bnb_4bit(p.format)) {
      t["blocksize"] = p.format.blocksize;
      t["double_quant"] = p.format.double_quant;
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
  const nlohmann::json j = read_json_file(path);
  return parse_plan(JsonField(j, path.string()));
}

}  // namespace lowbit
