// lowbit eval MODEL --text FILE [--ctx N] [--chunks N] [--base BASE | --kld-base FILE] [--save-logits FILE]
// and lowbit imatrix MODEL --text FILE -o imatrix.gguf [--ctx N] [--chunks N]
// and lowbit hessian MODEL --text FILE -o hessian.gguf [--ctx N] [--chunks N]
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "command.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/pipeline/text_eval.h"
#include "terminal_progress.h"

namespace lowbit::cli {

void add_eval_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("eval", "Perplexity of a model on a text, and with a base model its KL-divergence and top-1 agreement");
  struct Options {
    CommonOptions common;
    std::string model, text, base, kld_base, save_logits, device = "auto";
    std::vector<std::string> lora, base_lora;
    std::vector<double> lora_scale, base_lora_scale;
    int ctx = 512, chunks = 0;
    bool force = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "A .gguf file, a Hugging Face directory or a bitsandbytes checkpoint")->required();
  cmd->add_option("--text", o->text, "The text to score (UTF-8)")->required();
  cmd->add_option("--lora", o->lora, "A PEFT LoRA adapter applied to MODEL's weights as stored (unmerged: a 4-bit model + adapter as trained); repeatable");
  cmd->add_option("--lora-scale", o->lora_scale, "One scale per --lora, in order (default 1)")->check(finite_range(-1e6, 1e6));
  cmd->add_option("--base-lora", o->base_lora, "The same for --base");
  cmd->add_option("--base-lora-scale", o->base_lora_scale, "One scale per --base-lora")->check(finite_range(-1e6, 1e6));
  cmd->add_option("--ctx", o->ctx, "Window length in tokens; the second half of each window is scored")
      ->check(CLI::Range(2, kMaxContext))
      ->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Score at most this many windows (0: all)")->check(CLI::NonNegativeNumber);
  auto* base_option = cmd->add_option("--base", o->base, "The base model: KL-divergence of MODEL's predictions from the base's");
  cmd->add_option("--kld-base", o->kld_base, "The base's log-probabilities saved by --save-logits (llama.cpp's --kl-divergence-base file)")->excludes(base_option);
  cmd->add_option("--save-logits", o->save_logits, "Store the base's (or, without a base, MODEL's) log-probabilities for later --kld-base");
  add_device_option(*cmd, o->device);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    std::vector<std::string> inputs{o->model, o->text, o->base, o->kld_base};
    inputs.insert(inputs.end(), o->lora.begin(), o->lora.end());
    inputs.insert(inputs.end(), o->base_lora.begin(), o->base_lora.end());
    check_outputs({o->save_logits}, inputs, o->force);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("tokens");
    const EvalResult r = evaluate_text({.model = o->model, .text = o->text, .base = o->base, .kld_base = o->kld_base,
                                        .save_logits = o->save_logits, .lora = o->lora, .base_lora = o->base_lora,
                                        .lora_scale = o->lora_scale, .base_lora_scale = o->base_lora_scale, .ctx = o->ctx,
                                        .chunks = o->chunks, .device = o->device},
                                       progress);
    if (o->common.json) {
      fmt::print("{}\n", eval_result_json(r, o->ctx).dump(2));
      return;
    }
    fmt::print("perplexity {:.4f} over {} predictions ({} windows of {})\n", r.ppl, r.tokens, r.chunks, o->ctx);
    if (r.kld)
      fmt::print("base perplexity {:.4f} (Δ {:+.4f}); KLD mean {:.6f}, median {:.6f}, p99 {:.6f}, max {:.6f}; top-1 agreement {:.2f}%\n",
                 *r.base_ppl, r.ppl - *r.base_ppl, r.kld->mean, r.kld->median, r.kld->p99, r.kld->max, 100 * *r.top1);
  });
}

void add_imatrix_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("imatrix", "Collect an importance matrix (llama.cpp's GGUF or legacy .dat imatrix) from a text");
  struct Options {
    CommonOptions common;
    std::string model, text, output, output_format, device = "auto";
    int ctx = 512, chunks = 0;
    bool force = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "A .gguf file, a Hugging Face directory or a bitsandbytes checkpoint")->required();
  cmd->add_option("--text", o->text, "The calibration text (UTF-8)")->required();
  cmd->add_option("-o,--output", o->output, "Output: imatrix.gguf, or imatrix.dat for the legacy form")->required();
  cmd->add_option("--output-format", o->output_format,
                  "gguf (llama.cpp since mid-2025) or dat (the legacy binary form every llama-quantize reads); default: by the extension")
      ->check(CLI::IsMember({"gguf", "dat"}));
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->check(CLI::Range(2, kMaxContext))->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Use at most this many windows (0: all)")->check(CLI::NonNegativeNumber);
  add_device_option(*cmd, o->device);
  add_common_options(*cmd, o->common, false);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    check_outputs({o->output}, {o->model, o->text}, o->force);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("windows");
    const bool dat = o->output_format.empty() ? std::filesystem::path(o->output).extension() == ".dat" : o->output_format == "dat";
    const auto run = write_imatrix_from_text({.model = o->model, .text = o->text, .output = o->output, .ctx = o->ctx, .chunks = o->chunks,
                                              .device = o->device},
                                             dat, progress);
    if (!o->common.quiet) fmt::print("wrote {}: {} weights over {} windows of {} tokens\n", o->output, run.tensors, run.chunks, o->ctx);
  });
}

void add_hessian_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("hessian", "Collect GPTQ's Hessians (XᵀX of every linear layer's input) from a text, for quantize --gptq");
  struct Options {
    CommonOptions common;
    std::string model, text, output;
    int ctx = 512, chunks = 0;
    bool force = false;
    std::string device = "auto";
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "A .gguf file, a Hugging Face directory or a bitsandbytes checkpoint")->required();
  cmd->add_option("--text", o->text, "The calibration text (UTF-8); use another text than the one you evaluate on")->required();
  cmd->add_option("-o,--output", o->output, "Output: hessian.gguf (float32 XᵀX per input, shared by q/k/v and by gate/up)")->required();
  add_device_option(*cmd, o->device);
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->check(CLI::Range(16, kMaxContext))->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Use at most this many windows (0: all)")->check(CLI::NonNegativeNumber);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->footer("The model runs on --device; each window's XᵀX is added up on the host in float32. Each input's matrix takes "
              "columns² × 4 bytes in memory while it is collected and in the file.");
  cmd->callback([o] {
    check_outputs({o->output}, {o->model, o->text}, o->force);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("windows");
    const auto run = write_hessians_from_text({.model = o->model, .text = o->text, .output = o->output, .ctx = o->ctx, .chunks = o->chunks,
                                               .device = o->device},
                                              progress);
    if (o->common.json) {
      const nlohmann::ordered_json j{{"output", o->output}, {"inputs", run.tensors}, {"weights", run.weights},
                                     {"tokens", run.tokens}, {"chunks", run.chunks}, {"ctx", o->ctx}};
      fmt::print("{}\n", j.dump(2));
    } else if (!o->common.quiet) {
      fmt::print("wrote {}: {} inputs of {} weights over {} windows of {} tokens\n", o->output, run.tensors, run.weights, run.chunks, o->ctx);
    }
  });
}

}  // namespace lowbit::cli
