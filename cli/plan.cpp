// lowbit plan MODEL --bpw X [--imatrix FILE] [--text FILE] [--probe-text FILE [--probe-chunks N]] [--gptq HESSIAN]
//             [--rules FILE] [--target gguf|bnb] -o plan.json
#include <fmt/format.h>

#include <map>
#include <nlohmann/json.hpp>

#include "command.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/plan.h"
#include "terminal_progress.h"

namespace lowbit::cli {

namespace {

void print_allocation(const Plan& plan) {
  std::map<std::string, std::pair<int64_t, uint64_t>> by_role;
  std::map<int, std::pair<int64_t, uint64_t>> by_layer;
  for (const auto& t : plan.tensors) {
    auto& r = by_role[std::string(role_name(t.role))];
    r.first += t.params;
    r.second += t.bytes;
    auto& l = by_layer[t.layer];
    l.first += t.params;
    l.second += t.bytes;
  }
  fmt::print("{:<16} {:>12} {:>8}\n", "role", "params", "bpw");
  for (const auto& [role, v] : by_role) fmt::print("{:<16} {:>12} {:>8.3f}\n", role, v.first, 8.0 * double(v.second) / double(v.first));
  fmt::print("\n{:<16} {:>12} {:>8}\n", "layer", "params", "bpw");
  for (const auto& [layer, v] : by_layer)
    fmt::print("{:<16} {:>12} {:>8.3f}\n", layer < 0 ? std::string("global") : fmt::format("layer {}", layer), v.first,
               8.0 * double(v.second) / double(v.first));
  fmt::print("\ntarget {:.3f} bits per weight, achieved {:.4f} ({} parameters, {} bytes)\n", plan.target_bpw, plan.achieved_bpw, plan.params, plan.bytes);
  fmt::print("losses: {}; predicted total {:.4g}\n", plan_loss_description(plan.loss_measure), plan.predicted_loss);
  if (plan.loss_measure.whole_kld)
    fmt::print("the planned model's KL-divergence on the probe's windows, every tensor quantized: {:.4g}\n", *plan.loss_measure.whole_kld);
  if (plan.achieved_bpw < plan.target_bpw - 0.01)
    fmt::print("under the target: no upgrade that fits in what is left lowers the predicted loss\n");
}

}  // namespace

void add_device_option(CLI::App& command, std::string& device) {
  command.add_option("--device", device, "Where the model runs: cpu, cuda (GPU 0) or auto (cuda when a GPU is visible)")
      ->check(CLI::IsMember({"cpu", "cuda", "auto"}))
      ->capture_default_str();
}

void add_gptq_text_options(CLI::App& command, std::string& gptq_text, int& gptq_chunks, const std::string& kept) {
  command.add_option("--gptq-text", gptq_text,
                     fmt::format("Instead of --gptq HESSIAN: collect the Hessians first on this calibration text, with the model on --device "
                                 "(what lowbit hessian --ctx {} writes; {})",
                                 kGptqContext, kept));
  command.add_option("--gptq-chunks", gptq_chunks, "With --gptq-text: windows of 512 tokens to collect over")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
}

void add_probe_options(CLI::App& command, std::string& probe_text, int& probe_chunks, std::string& device, bool& no_probe) {
  add_device_option(command, device);
  command.add_option("--probe-text", probe_text,
                     "GGUF target: measure each candidate's loss as the output KL-divergence with only that tensor quantized, on this "
                     "calibration text (use another text than the one you evaluate on). The default loss: this probe on --text when "
                     "the model runs on a GPU, else each candidate's importance-weighted relative error; plan.json's loss_measure "
                     "says which and why");
  command.add_flag("--no-probe", no_probe, "Keep the relative error even on a GPU");
  command.add_option("--probe-chunks", probe_chunks, "With --probe-text: windows of 512 tokens to probe on")
      ->check(CLI::Range(1, 1024))
      ->capture_default_str();
}

void add_plan_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("plan", "Give every tensor its own format so the model lands on a target bits per weight at the least loss");
  struct Options {
    CommonOptions common;
    std::string model, output, imatrix, text, rules, target = "gguf", probe_text, gptq, gptq_text;
    double bpw = 0;
    int probe_chunks = 4, gptq_chunks = 32;
    bool force = false, no_probe = false;
    std::string device = "auto";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "A .gguf file or a Hugging Face model directory (--target bnb: a Hugging Face directory)")->required();
  cmd->add_option("--bpw", o->bpw, "Target average bits per weight (total stored bits / total parameters)")
      ->required()
      ->check(finite_range(1, 32));
  cmd->add_option("--imatrix", o->imatrix, "Weigh each column's error by this llama.cpp importance matrix");
  cmd->add_option("--text", o->text,
                  "Without --imatrix: measure an importance matrix on this text first (kept beside the plan as PLAN.imatrix.gguf for a "
                  "GGUF target: quantize --plan quantizes with it)");
  add_probe_options(*cmd, o->probe_text, o->probe_chunks, o->device, o->no_probe);
  cmd->add_option("--gptq", o->gptq,
                  "A Hessian file from lowbit hessian: measure each candidate as quantize --gptq writes it (GPTQ's codes where the type "
                  "has a path), a layer matrix's relative error on its output (or the probe's KL-divergence); quantize --plan then uses it");
  add_gptq_text_options(*cmd, o->gptq_text, o->gptq_chunks, "kept beside the plan as PLAN.hessian.gguf, which quantize --plan uses");
  cmd->add_option("--rules", o->rules, "A rules file: globs with allowed formats or bounds on bits per weight");
  cmd->add_option("--target", o->target, "gguf: ggml types for a GGUF file; bnb: NF4/FP4 (blocksize 64/128/256, double quant or not) or 16-bit per Linear weight of a Hugging Face directory, for a bitsandbytes checkpoint")
      ->check(CLI::IsMember({"gguf", "bnb"}))
      ->capture_default_str();
  cmd->add_option("-o,--output", o->output, "plan.json (the report goes beside it: plan.svg, plan.html)")->required();
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    const std::filesystem::path out(o->output);
    PlanRequest request{.model = o->model, .bpw = o->bpw, .target = parse_plan_target(o->target), .imatrix = o->imatrix,
                        .text = o->text, .rules = o->rules, .probe_text = o->probe_text, .probe_chunks = o->probe_chunks,
                        .device = o->device, .no_probe = o->no_probe, .gptq = o->gptq, .gptq_text = o->gptq_text,
                        .gptq_chunks = o->gptq_chunks};
    const std::string kept = request.keep_imatrix = kept_imatrix_path(request, out);
    const std::string kept_hessian = request.keep_hessian = kept_hessian_path(request, out);
    check_outputs({o->output, std::filesystem::path(out).replace_extension(".svg"), std::filesystem::path(out).replace_extension(".html"), kept,
                   kept_hessian},
                  {o->model, o->imatrix, o->text, o->probe_text, o->rules, o->gptq, o->gptq_text}, o->force);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("tensors");
    const Plan plan = plan_model(request, progress);
    write_plan(o->output, plan);
    write_plan_report(plan, std::filesystem::path(out).replace_extension(".svg"), std::filesystem::path(out).replace_extension(".html"));
    if (o->common.json)
      fmt::print("{}\n", nlohmann::ordered_json{{"plan", o->output}, {"target", o->target}, {"target_bpw", plan.target_bpw}, {"achieved_bpw", plan.achieved_bpw},
                                                {"predicted_loss", plan.predicted_loss},
                                                {"whole_kld", plan.loss_measure.whole_kld ? nlohmann::ordered_json(*plan.loss_measure.whole_kld) : nullptr},
                                                {"params", plan.params}, {"bytes", plan.bytes},
                                                {"imatrix", kept.empty() ? nullptr : nlohmann::ordered_json(kept)},
                                                {"hessian", kept_hessian.empty() ? nullptr : nlohmann::ordered_json(kept_hessian)}}.dump(2));
    else if (!o->common.quiet)
      print_allocation(plan);
    if (!kept.empty() && !o->common.quiet && !o->common.json)
      fmt::print("importance matrix measured on {}: {} (quantize --plan quantizes with it)\n", o->text, kept);
    if (!kept_hessian.empty() && !o->common.quiet && !o->common.json)
      fmt::print("Hessians collected on {}: {} (quantize --plan writes GPTQ's codes with them)\n", o->gptq_text, kept_hessian);
  });
}

}  // namespace lowbit::cli
