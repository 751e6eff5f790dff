// lowbit eval MODEL --text FILE [--ctx N] [--chunks N] [--base BASE | --kld-base FILE] [--save-logits FILE]
// and lowbit imatrix MODEL --text FILE -o imatrix.gguf [--ctx N] [--chunks N]
// and lowbit hessian MODEL --text FILE -o hessian.gguf [--ctx N] [--chunks N]
#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "command.h"
#include "lowbit/core/error.h"
#include "lowbit/model/hessian_collector.h"
#include "lowbit/model/imatrix_collector.h"
#include "lowbit/model/perplexity.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/eval_model.h"
#include "terminal_progress.h"

namespace lowbit::cli {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read the text", {.file = path});
  return {std::istreambuf_iterator<char>(in), {}};
}

// The text's tokens as llama-perplexity takes them (BOS first when the vocabulary adds one), cut to
// `chunks` windows when asked.
struct Tokens {
  std::vector<int32_t> ids;
  std::optional<int32_t> bos;
};

Tokens tokenize(const EvalModel& m, const std::string& model_path, const std::string& text_path, int ctx, int chunks) {
  const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(m.metadata(), model_path);
  Tokens t;
  if (tokenizer.adds_bos()) t.bos = tokenizer.bos_id();
  t.ids = tokenizer.encode(read_text(text_path), /*add_special=*/true, /*parse_special=*/false);
  if (chunks > 0 && int64_t(t.ids.size()) > int64_t(chunks) * ctx) t.ids.resize(size_t(chunks) * size_t(ctx));
  return t;
}

// The tokens of the whole windows, as a logits file records them (each window's first token is BOS).
std::vector<int32_t> window_tokens(const Tokens& t, int ctx) {
  std::vector<int32_t> out(t.ids.begin(), t.ids.begin() + int64_t(t.ids.size()) / ctx * ctx);
  if (t.bos)
    for (size_t i = 0; i < out.size(); i += size_t(ctx)) out[i] = *t.bos;
  return out;
}

}  // namespace

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
    if (!o->base_lora.empty() && o->base.empty()) throw Error("--base-lora applies to --base");
    const Device device = resolve_device(o->device);
    const EvalModel model(o->model, open_adapters(o->lora, o->lora_scale), device);
    const Tokens tokens = tokenize(model, o->model, o->text, o->ctx, o->chunks);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("tokens");
    std::optional<BaseLogits> base_logits;
    if (!o->kld_base.empty()) base_logits = BaseLogits::load(o->kld_base);
    if (!o->base.empty()) {
      const EvalModel base(o->base, open_adapters(o->base_lora, o->base_lora_scale), device);
      base_logits.emplace(o->ctx, base.model().config().n_vocab, window_tokens(tokens, o->ctx));
      evaluate(base.runtime(), tokens.ids, o->ctx, tokens.bos, nullptr, &*base_logits, progress);
      if (!o->save_logits.empty()) base_logits->save(o->save_logits);
    }
    std::optional<BaseLogits> own;
    if (!o->save_logits.empty() && o->base.empty()) own.emplace(o->ctx, model.model().config().n_vocab, window_tokens(tokens, o->ctx));
    const auto r = evaluate(model.runtime(), tokens.ids, o->ctx, tokens.bos, base_logits ? &*base_logits : nullptr, own ? &*own : nullptr, progress);
    if (own) own->save(o->save_logits);

    if (o->common.json) {
      nlohmann::ordered_json j{{"ppl", r.ppl}, {"tokens", r.tokens}};
      if (r.kld) {
        j["kld"] = {{"mean", r.kld->mean}, {"median", r.kld->median}, {"p99", r.kld->p99}, {"max", r.kld->max}};
        j["top1"] = *r.top1;
        j["base_ppl"] = *r.base_ppl;
        j["delta_ppl"] = r.ppl - *r.base_ppl;
      }
      j["chunks"] = r.chunks;
      j["ctx"] = o->ctx;
      fmt::print("{}\n", j.dump(2));
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
    const EvalModel model(o->model, resolve_device(o->device));
    const Tokens tokens = tokenize(model, o->model, o->text, o->ctx, o->chunks);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("windows");
    const auto run = collect_imatrix(model.runtime(), tokens.ids, o->ctx, tokens.bos, progress);
    const std::string dataset = std::filesystem::path(o->text).filename().string();
    const bool dat = o->output_format.empty() ? std::filesystem::path(o->output).extension() == ".dat" : o->output_format == "dat";
    if (dat) write_imatrix_dat(o->output, run.entries, {dataset}, uint32_t(run.chunks));
    else write_imatrix_gguf(o->output, run.entries, {dataset}, uint32_t(run.chunks), uint32_t(o->ctx));
    if (!o->common.quiet) fmt::print("wrote {}: {} weights over {} windows of {} tokens\n", o->output, run.entries.size(), run.chunks, o->ctx);
  });
}

void add_hessian_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("hessian", "Collect GPTQ's Hessians (XᵀX of every linear layer's input) from a text, for quantize --gptq");
  struct Options {
    CommonOptions common;
    std::string model, text, output;
    int ctx = 512, chunks = 0;
    bool force = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("MODEL", o->model, "A .gguf file, a Hugging Face directory or a bitsandbytes checkpoint")->required();
  cmd->add_option("--text", o->text, "The calibration text (UTF-8); use another text than the one you evaluate on")->required();
  cmd->add_option("-o,--output", o->output, "Output: hessian.gguf (float32 XᵀX per input, shared by q/k/v and by gate/up)")->required();
  cmd->add_option("--ctx", o->ctx, "Window length in tokens")->check(CLI::Range(16, kMaxContext))->capture_default_str();
  cmd->add_option("--chunks", o->chunks, "Use at most this many windows (0: all)")->check(CLI::NonNegativeNumber);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->footer("The model runs on the CPU. Each input's matrix takes columns² × 4 bytes in memory while it is collected and in the file.");
  cmd->callback([o] {
    check_outputs({o->output}, {o->model, o->text}, o->force);
    const EvalModel model(o->model, Device::cpu);
    const Tokens tokens = tokenize(model, o->model, o->text, o->ctx, o->chunks);
    TerminalProgress progress(o->common.quiet);
    progress.set_unit("windows");
    const auto run = collect_hessians(model.runtime(), tokens.ids, o->ctx, tokens.bos, progress);
    size_t weights = 0;
    for (const auto& in : run.inputs) weights += in.weights.size();
    const std::string dataset = std::filesystem::path(o->text).filename().string();
    write_hessians(o->output, run.inputs, {dataset}, uint32_t(run.chunks), uint32_t(o->ctx), run.tokens);
    if (o->common.json) {
      const nlohmann::ordered_json j{{"output", o->output}, {"inputs", run.inputs.size()}, {"weights", weights},
                                     {"tokens", run.tokens}, {"chunks", run.chunks}, {"ctx", o->ctx}};
      fmt::print("{}\n", j.dump(2));
    } else if (!o->common.quiet) {
      fmt::print("wrote {}: {} inputs of {} weights over {} windows of {} tokens\n", o->output, run.inputs.size(), weights, run.chunks, o->ctx);
    }
  });
}

}  // namespace lowbit::cli
