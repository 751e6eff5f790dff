// lowbit quantize IN -o OUT: to GGUF (--format TYPE or --mix NAME) or to a bitsandbytes checkpoint
// (--format nf4|fp4|int8); or by a plan (--plan FILE, or --bpw X to plan inline), whose target says which.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "command.h"
#include "format_numbers.h"
#include "nonfinite_option.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "lowbit/pipeline/text_eval.h"
#include "terminal_progress.h"

namespace lowbit::cli {
namespace {

struct QuantizeOptions {
  CommonOptions common;
  std::string input, output, format, mix, imatrix, gptq, gptq_text;
  std::string gptq_label;  // set for Hessians collected by --gptq-text
  std::vector<std::string> tensor_types;  // GLOB=TYPE
  std::string plan, target = "gguf", rules, probe_text;
  double bpw = 0;
  int probe_chunks = 4, gptq_chunks = 32;
  std::string device = "auto";
  int64_t blocksize = 64;
  bool double_quant = false, force = false, no_probe = false;
  bool allow_nonfinite = false;
  std::vector<std::string> skip;
};

void run_bnb(const QuantizeOptions& o, const Plan* plan) {
  if (!o.mix.empty() || !o.imatrix.empty() || !o.tensor_types.empty())
    throw Error("--mix, --imatrix and --tensor-type apply to GGUF outputs, not to bitsandbytes formats");
  TerminalProgress progress(o.common.quiet);
  const auto r = quantize_to_bnb(o.input, o.output,
                                 {.format = {.id = parse_bnb_format(o.format).value_or(FormatId::nf4), .blocksize = o.blocksize, .double_quant = o.double_quant},
                                  .skip = o.skip, .plan = plan,
                                  .nonfinite = nonfinite_policy(o.allow_nonfinite), .overwrite = o.force,
                                  .gptq = o.gptq, .gptq_label = o.gptq_label},
                                 progress);
  const std::string format = plan ? "planned" : o.format;
  if (o.common.json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"output", o.output}, {"format", format}, {"tensors", r.tensors}, {"quantized", r.quantized},
                                              {"bytes_in", r.bytes_in}, {"bytes_out", r.bytes_out}, {"shards", r.shards},
                                              {"nonfinite", nonfinite_json(r.nonfinite)}, {"gptq", r.gptq}, {"seconds", r.seconds}}
                              .dump(2));
  } else if (!o.common.quiet) {
    fmt::print("wrote {}: {} of {} tensors quantized ({}{}), {} -> {} in {} shard(s), {:.1f} s\n", o.output, r.quantized, r.tensors, format,
               r.gptq ? fmt::format(", {} by GPTQ", r.gptq) : "", human_bytes(double(r.bytes_in)), human_bytes(double(r.bytes_out)),
               r.shards, r.seconds);
  }
}

void run_gguf(const QuantizeOptions& o, const Plan* plan) {
  TerminalProgress progress(o.common.quiet);
  const auto report = quantize_model_to_gguf(
      {.input = o.input, .output = o.output,
       .types = {.plan = plan, .plan_origin = o.plan.empty() ? o.input : o.plan, .mix = o.mix, .format = o.format, .tensor_types = o.tensor_types},
       .imatrix = o.imatrix, .gptq = o.gptq, .gptq_label = o.gptq_label, .nonfinite = nonfinite_policy(o.allow_nonfinite),
       .note = [&](const std::string& line) { if (!o.common.quiet) fmt::print(stderr, "{}\n", line); }},
      progress);
  if (!o.common.quiet)
    for (GgmlType type : report.gptq_fallback)
      fmt::print(stderr, "note: GPTQ has no path for {}: its tensors are rounded as usual\n", ggml_type_name(type));

  if (o.common.json) {
    fmt::print("{}\n", gguf_report_json(o.output, report).dump(2));
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
                  "A Hessian file from lowbit hessian: GPTQ's error feedback for q4_0 ... q8_0, q2_K ... q6_K, the i-quants, tq1_0, tq2_0, "
                  "mxfp4, nvfp4 and q1_0 (other types are rounded as usual, with a note) and for nf4/fp4/int8 checkpoints; columns in "
                  "stored order (act-order cannot be stored in these formats). With --bpw the plan measures its candidates so too; a plan from plan --gptq brings its own");
  add_gptq_text_options(*cmd, o->gptq_text, o->gptq_chunks, "in a scratch file removed when done");
  cmd->add_option("--tensor-type", o->tensor_types, "GLOB=TYPE: tensors whose GGUF name matches GLOB get TYPE (first match wins)");
  cmd->add_option("--blocksize", o->blocksize, "nf4/fp4: values per absmax block (32 ... 4096)")->check(CLI::Range(32, 4096))->capture_default_str();
  cmd->add_flag("--double-quant", o->double_quant, "nf4/fp4: quantize the absmax constants too (bitsandbytes' compress_statistics)");
  cmd->add_option("--skip", o->skip, "nf4/fp4/int8: GLOB of module or tensor names to keep unquantized (like llm_int8_skip_modules)");
  add_nonfinite_option(*cmd, o->allow_nonfinite);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    check_outputs({o->output}, {o->input, o->imatrix, o->plan, o->rules, o->probe_text, o->gptq, o->gptq_text}, o->force);
    if (int(!o->format.empty()) + int(!o->mix.empty()) + int(!o->plan.empty()) + int(o->bpw > 0) != 1)
      throw Error("give exactly one of --format, --mix NAME, --plan FILE and --bpw X");
    if ((o->target != "gguf" || !o->rules.empty() || !o->probe_text.empty()) && o->bpw <= 0)
      throw Error("--target, --rules and --probe-text apply to --bpw (a plan file records its own target and choices)");
    QuantizeOptions opts = *o;
    std::optional<CollectedHessians> collected;  // --gptq-text's Hessians, removed when done
    if (!o->gptq_text.empty()) {
      if (!o->gptq.empty()) throw Error("give --gptq HESSIAN or --gptq-text FILE, not both");
      TerminalProgress collecting(o->common.quiet);
      collecting.set_unit("windows");
      collected.emplace(o->input, o->gptq_text, kGptqContext, o->gptq_chunks, o->device, collecting);
      opts.gptq = collected->path(), opts.gptq_label = collected->label();
    }
    if (parse_bnb_format(opts.format)) return run_bnb(opts, nullptr);
    if (opts.plan.empty() && opts.bpw <= 0) return run_gguf(opts, nullptr);
    TerminalProgress planning(o->common.quiet);
    const Plan plan = !opts.plan.empty() ? read_plan(opts.plan)
                                         : plan_model({.model = opts.input, .bpw = opts.bpw, .target = parse_plan_target(opts.target),
                                                       .imatrix = opts.imatrix, .rules = opts.rules, .probe_text = opts.probe_text,
                                                       .probe_chunks = opts.probe_chunks, .device = opts.device, .no_probe = opts.no_probe,
                                                       .gptq = opts.gptq},
                                                      planning);
    if (plan.target == PlanTarget::bnb) {
      QuantizeOptions rest = opts;
      if (opts.bpw > 0) rest.imatrix.clear();  // the planner weighed the losses with it; bitsandbytes has no use for it
      return run_bnb(rest, &plan);
    }
    run_gguf(opts, &plan);
  });
}

}  // namespace lowbit::cli
