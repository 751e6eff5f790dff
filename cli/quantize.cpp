// lowbit quantize IN -o OUT: to GGUF (--format TYPE or --mix NAME) or to a bitsandbytes checkpoint
// (--format nf4|fp4|int8); or by a plan (--plan FILE, or --bpw X to plan inline), whose target says which.
#include <fmt/format.h>

#include <map>
#include <set>
#include <nlohmann/json.hpp>

#include "command.h"
#include "format_numbers.h"
#include "nonfinite_option.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "terminal_progress.h"

namespace lowbit::cli {
namespace {

struct QuantizeOptions {
  CommonOptions common;
  std::string input, output, format, mix, imatrix, gptq;
  std::vector<std::string> tensor_types;  // GLOB=TYPE
  std::string plan, target = "gguf", rules, probe_text;
  double bpw = 0;
  int probe_chunks = 4;
  std::string device = "auto";
  int64_t blocksize = 64;
  bool double_quant = false, force = false, no_probe = false;
  bool allow_nonfinite = false;
  std::vector<std::string> skip;
};

void run_bnb(const QuantizeOptions& o, const Plan* plan) {
  if (!o.mix.empty() || !o.imatrix.empty() || !o.tensor_types.empty() || !o.gptq.empty())
    throw Error("--mix, --imatrix, --tensor-type and --gptq apply to GGUF outputs, not to bitsandbytes formats");
  TerminalProgress progress(o.common.quiet);
  const auto r = quantize_to_bnb(o.input, o.output,
                                 {.format = {.id = parse_bnb_format(o.format).value_or(FormatId::nf4), .blocksize = o.blocksize, .double_quant = o.double_quant},
                                  .skip = o.skip, .plan = plan,
                                  .nonfinite = nonfinite_policy(o.allow_nonfinite), .overwrite = o.force},
                                 progress);
  const std::string format = plan ? "planned" : o.format;
  if (o.common.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"output", o.output}, {"format", format}, {"tensors", r.tensors}, {"quantized", r.quantized},
                                              {"bytes_in", r.bytes_in}, {"bytes_out", r.bytes_out}, {"shards", r.shards},
                                              {"nonfinite", nonfinite_json(r.nonfinite)}, {"seconds", r.seconds}}
                              .dump(2));
  } else if (!o.common.quiet) {
    fmt::print("wrote {}: {} of {} tensors quantized ({}), {} -> {} in {} shard(s), {:.1f} s\n", o.output, r.quantized, r.tensors, format,
               human_bytes(double(r.bytes_in)), human_bytes(double(r.bytes_out)), r.shards, r.seconds);
  }
}

GgmlType parse_ggml_type(const std::string& name, const std::string& what) {
  const auto type = ggml_type_from_name(name);
  if (!type) throw Error(fmt::format("unknown ggml type '{}' in {}", name, what), {.expected = "q4_0, q8_0, q4_K, iq4_xs, f16 ..."});
  return *type;
}

void run_gguf(const QuantizeOptions& o, const Plan* plan) {
  if (!o.output.ends_with(".gguf")) throw Error("the output of a GGUF quantization must end in .gguf", {.file = o.output});
  const auto source = ModelSource::open(o.input);
  GgufQuantizeOptions options;
  if (plan) {
    // A plan names every quantizable tensor's format: they become exact-name overrides. An edited
    // plan's misspelt name would silently change nothing: refuse it.
    std::set<std::string, std::less<>> names;
    for (const auto& t : source->tensors()) names.insert(t.name);
    std::map<GgmlType, int64_t> params_by_type;
    for (const auto& t : plan->tensors)
      if (t.quantized) {
        if (!names.contains(t.name))
          throw Error("the plan names a tensor the model does not have", {.file = o.plan.empty() ? o.input : o.plan, .tensor = t.name});
        const GgmlType type = std::get<GgmlType>(t.format);
        options.selection.overrides.emplace_back(t.name, type);
        params_by_type[type] += std::max<int64_t>(t.params, 1);
      }
    options.selection.default_type = params_by_type.empty() ? GgmlType::Q8_0
                                     : std::ranges::max_element(params_by_type, {}, [](const auto& p) { return p.second; })->first;
  } else if (!o.mix.empty()) {
    options.selection.mix = find_llama_mix(o.mix);
    if (!options.selection.mix) throw Error(fmt::format("unknown mix '{}'", o.mix), {.expected = "Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0 ..."});
    options.selection.default_type = options.selection.mix->default_type;
  } else {
    options.selection.default_type = parse_ggml_type(o.format, "--format");
  }
  for (const auto& rule : o.tensor_types) {
    const auto eq = rule.rfind('=');
    if (eq == std::string::npos || eq == 0) throw Error(fmt::format("--tensor-type '{}' is not GLOB=TYPE", rule));
    options.selection.overrides.emplace_back(rule.substr(0, eq), parse_ggml_type(rule.substr(eq + 1), "--tensor-type"));
  }
  std::optional<ImportanceMatrix> imatrix;
  if (!o.imatrix.empty()) {
    imatrix = load_importance_matrix(o.imatrix);
    options.imatrix = &*imatrix;
    options.imatrix_path = o.imatrix;
  }
  std::optional<HessianFile> hessian;
  if (!o.gptq.empty()) {
    hessian.emplace(o.gptq);
    options.hessian = &*hessian;
    options.hessian_path = o.gptq;
  }
  options.nonfinite = nonfinite_policy(o.allow_nonfinite);
  TerminalProgress progress(o.common.quiet);
  const auto report = quantize_to_gguf(*source, o.output, options, progress);
  if (!o.common.quiet)
    for (GgmlType type : report.gptq_fallback)
      fmt::print(stderr, "note: GPTQ has no path for {}: its tensors are rounded as usual\n", ggml_type_name(type));

  if (o.common.json) {
    nlohmann::ordered_json j;
    j["output"] = o.output;
    j["tensors"] = nlohmann::ordered_json::array();
    for (const auto& t : report.tensors)
      j["tensors"].push_back({{"name", t.name}, {"from", ggml_type_name(t.from)}, {"format", ggml_type_name(t.to)}, {"params", t.params},
                              {"bytes", t.bytes}, {"bpw", 8.0 * double(t.bytes) / double(t.params)}, {"imatrix", t.used_imatrix},
                              {"gptq", t.used_gptq}});
    j["total"] = {{"params", report.params}, {"bytes", report.bytes}, {"bpw", 8.0 * double(report.bytes) / double(report.params)},
                  {"seconds", report.seconds}};
    j["nonfinite"] = nonfinite_json(report.nonfinite);
    fmt::print("{}\n", j.dump(2));
  } else if (!o.common.quiet) {
    fmt::print("wrote {}: {} tensors, {} parameters, {} ({:.3f} bits per weight) in {:.1f} s\n", o.output, report.tensors.size(),
               human_count(double(report.params)), human_bytes(double(report.bytes)), 8.0 * double(report.bytes) / double(report.params),
               report.seconds);
  }
}

}  // namespace

void add_quantize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("quantize", "Quantize a model: to GGUF (--format TYPE or --mix NAME) or to a bitsandbytes checkpoint");
  auto o = std::make_shared<QuantizeOptions>();
  cmd->add_option("IN", o->input, "A .gguf file or a Hugging Face model directory")->required();
  cmd->add_option("-o,--output", o->output, "Output: OUT.gguf, or for nf4/fp4/int8 a directory (OUT.safetensors for a .safetensors input)")->required();
  cmd->add_option("--format", o->format, "One format for every quantizable weight: a ggml type (q4_0, q8_0, q2_K ... q6_K, iq4_nl, iq4_xs, f16, bf16) or a bitsandbytes one (nf4, fp4, int8)");
  cmd->add_option("--mix", o->mix, "A llama.cpp file type with its per-tensor choices: Q2_K, Q2_K_S, Q3_K_S ... Q6_K, Q4_0 ... Q8_0, IQ1_S, IQ1_M, IQ2_XXS ... IQ2_M, IQ3_XXS, IQ3_XS, IQ3_S, IQ3_M, IQ4_NL, IQ4_XS, TQ1_0, TQ2_0, MXFP4_MOE, Q1_0, Q2_0");
  cmd->add_option("--plan", o->plan, "A plan from lowbit plan: each tensor's format (a GGUF or, for a bnb plan, a bitsandbytes checkpoint)");
  cmd->add_option("--bpw", o->bpw, "Plan inline for this average bits per weight, then quantize")->check(finite_range(1, 32));
  cmd->add_option("--target", o->target, "With --bpw: gguf (OUT.gguf) or bnb (a bitsandbytes checkpoint directory)")
      ->check(CLI::IsMember({"gguf", "bnb"}))
      ->capture_default_str();
  cmd->add_option("--rules", o->rules, "With --bpw: a rules file bounding the plan's formats");
  add_probe_options(*cmd, o->probe_text, o->probe_chunks, o->device, o->no_probe);
  cmd->add_option("--imatrix", o->imatrix, "llama.cpp importance matrix (imatrix.gguf or legacy .dat)");
  cmd->add_option("--gptq", o->gptq,
                  "A Hessian file from lowbit hessian: GPTQ's error feedback for q4_0, q4_1, q5_0, q5_1, q8_0, q2_K ... q6_K (other types are "
                  "rounded as usual, with a note); columns in stored order (act-order cannot be stored in these formats)");
  cmd->add_option("--tensor-type", o->tensor_types, "GLOB=TYPE: tensors whose GGUF name matches GLOB get TYPE (first match wins)");
  cmd->add_option("--blocksize", o->blocksize, "nf4/fp4: values per absmax block (32 ... 4096)")->check(CLI::Range(32, 4096))->capture_default_str();
  cmd->add_flag("--double-quant", o->double_quant, "nf4/fp4: quantize the absmax constants too (bitsandbytes' compress_statistics)");
  cmd->add_option("--skip", o->skip, "nf4/fp4/int8: GLOB of module or tensor names to keep unquantized (like llm_int8_skip_modules)");
  add_nonfinite_option(*cmd, o->allow_nonfinite);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    check_outputs({o->output}, {o->input, o->imatrix, o->plan, o->rules, o->probe_text, o->gptq}, o->force);
    if (int(!o->format.empty()) + int(!o->mix.empty()) + int(!o->plan.empty()) + int(o->bpw > 0) != 1)
      throw Error("give exactly one of --format, --mix NAME, --plan FILE and --bpw X");
    if ((o->target != "gguf" || !o->rules.empty() || !o->probe_text.empty()) && o->bpw <= 0)
      throw Error("--target, --rules and --probe-text apply to --bpw (a plan file records its own target and choices)");
    if (parse_bnb_format(o->format)) return run_bnb(*o, nullptr);
    if (o->plan.empty() && o->bpw <= 0) return run_gguf(*o, nullptr);
    TerminalProgress planning(o->common.quiet);
    const Plan plan = !o->plan.empty() ? read_plan(o->plan)
                                       : plan_model({.model = o->input, .bpw = o->bpw, .target = parse_plan_target(o->target),
                                                     .imatrix = o->imatrix, .rules = o->rules, .probe_text = o->probe_text,
                                                     .probe_chunks = o->probe_chunks, .device = o->device, .no_probe = o->no_probe},
                                                    planning);
    if (plan.target == PlanTarget::bnb) {
      QuantizeOptions rest = *o;
      if (o->bpw > 0) rest.imatrix.clear();  // the planner weighed the losses with it; bitsandbytes has no use for it
      return run_bnb(rest, &plan);
    }
    run_gguf(*o, &plan);
  });
}

}  // namespace lowbit::cli
