// lowbit merge BASE --lora ADAPTER [--lora ADAPTER2]... [--scale S]... -o OUT [--into original|dequantized]
//   [--format TYPE | --mix NAME]: LoRA adapters merged into a model and written as a GGUF (any type or
//   mix, one streaming pass), a 16-bit Hugging Face directory, or a bitsandbytes checkpoint.
#include <fmt/format.h>

#include <nlohmann/json.hpp>
#include <random>

#include "command.h"
#include "format_numbers.h"
#include "nonfinite_option.h"
#include "lowbit/core/error.h"
#include "lowbit/core/temporaries.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/lora_merge.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "terminal_progress.h"

namespace lowbit::cli {
namespace {

struct MergeOptions {
  CommonOptions common;
  std::string base, output, into = "original", trained_on = "nf4-b64-dq", format, mix, dtype;
  std::vector<std::string> adapters;
  std::vector<double> scales;
  int64_t blocksize = 64;
  bool double_quant = false, force = false;
  bool allow_nonfinite = false;
};

// A directory for the bitsandbytes base's dequantized weights and a bitsandbytes output's merged
// 16-bit model, removed however the command ends.
class Scratch {
 public:
  explicit Scratch(const std::filesystem::path& beside) {
    std::random_device rd;
    path_ = beside.parent_path() / fmt::format(".{}.lowbit-merge.tmp.{:x}", beside.filename().string(), rd());
    std::filesystem::create_directories(path_);
    registration_ = TemporaryRegistration(path_);  // removed on SIGINT/SIGTERM/SIGHUP too
  }
  ~Scratch() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  TemporaryRegistration registration_;
};

MergeInto parse_into(const std::string& into) {
  if (into == "original") return MergeInto::original;
  if (into == "dequantized") return MergeInto::dequantized;
  throw Error(fmt::format("--into '{}' is not original or dequantized", into));
}

// The float type of the merged 16-bit model: --format when it names one, else the base's embedding's.
DType merged_dtype(const MergeOptions& o, const ModelSource& source) {
  if (!o.dtype.empty()) {
    const auto d = dtype_from_name(o.dtype);
    if (!d || !dtype_is_float(*d) || *d == DType::f64) throw Error(fmt::format("--dtype '{}' is not f32, f16 or bf16", o.dtype));
    return *d;
  }
  for (const auto& t : source.tensors())
    if (t.name == "token_embd.weight")
      return t.stored_type == GgmlType::F32 ? DType::f32 : t.stored_type == GgmlType::F16 ? DType::f16 : DType::bf16;
  return DType::bf16;
}

void run(const MergeOptions& o) {
  const std::filesystem::path output(o.output);
  const bool gguf_out = output.extension() == ".gguf";
  const auto bnb_format = parse_bnb_format(o.format);
  const bool bnb_out = bnb_format.has_value();
  if (gguf_out && o.format.empty() && o.mix.empty()) throw Error("a GGUF output needs --format TYPE or --mix NAME");
  if (!gguf_out && !o.mix.empty()) throw Error("--mix applies to a GGUF output (OUT.gguf)", {.file = o.output});
  if (!gguf_out && !o.format.empty() && !bnb_out)
    throw Error(fmt::format("--format {} needs a GGUF output (OUT.gguf); a directory output is 16-bit (--dtype) or nf4, fp4, int8", o.format),
                {.file = o.output});

  LoraMergeOptions options{.into = parse_into(o.into)};
  const auto trained_on = parse_format_label(o.trained_on);
  if (!trained_on || !is_bnb_4bit(*trained_on))
    throw Error(fmt::format("--trained-on '{}' is not a bitsandbytes 4-bit format", o.trained_on), {.expected = "nf4-b64-dq, nf4-b64, fp4-b128 ..."});
  options.trained_on = *trained_on;

  const MergeBase base = open_merge_base(o.base);
  const auto merged = merge_lora(base, open_adapters(o.adapters, o.scales), options);
  TerminalProgress progress(o.common.quiet);
  const NonfinitePolicy nonfinite = nonfinite_policy(o.allow_nonfinite);
  NonfiniteCount kept;
  nlohmann::ordered_json j{{"output", o.output}, {"into", o.into}, {"adapters", o.adapters}};
  std::string summary;
  if (gguf_out) {
    GgufQuantizeOptions q;
    if (!o.mix.empty()) {
      q.selection.mix = find_llama_mix(o.mix);
      if (!q.selection.mix) throw Error(fmt::format("unknown mix '{}'", o.mix), {.expected = "Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0 ..."});
      q.selection.default_type = q.selection.mix->default_type;
    } else {
      const auto type = ggml_type_from_name(o.format);
      if (!type) throw Error(fmt::format("unknown ggml type '{}' in --format", o.format));
      q.selection.default_type = *type;
    }
    q.nonfinite = nonfinite;
    const auto r = quantize_to_gguf(*merged, output, q, progress);
    kept = r.nonfinite;
    j["params"] = r.params;
    j["bytes"] = r.bytes;
    j["bpw"] = 8.0 * double(r.bytes) / double(r.params);
    summary = fmt::format("{} tensors, {} ({:.3f} bits per weight)", r.tensors.size(), human_bytes(double(r.bytes)),
                          8.0 * double(r.bytes) / double(r.params));
  } else if (bnb_out) {
    // transformers' bitsandbytes checkpoints are quantized from a Hugging Face directory: the merged
    // model goes there first, in the base's 16-bit type.
    const Scratch scratch(output);
    const auto hf = scratch.path() / "merged";
    kept = export_gguf_to_hf(*merged, hf, merged_dtype(o, *merged), progress, nonfinite).nonfinite;
    const auto r = quantize_to_bnb(hf, output,
                                   {.format = {.id = *bnb_format, .blocksize = o.blocksize, .double_quant = o.double_quant}, .nonfinite = nonfinite,
                                    .overwrite = o.force},
                                   progress);
    // r.nonfinite counts the same 16-bit tensors again (NF4/FP4/int8 hold none): the export's count stands.
    j["quantized"] = r.quantized;
    j["bytes"] = r.bytes_out;
    summary = fmt::format("{} weights in {}, {}", r.quantized, o.format, human_bytes(double(r.bytes_out)));
  } else {
    const DType dtype = merged_dtype(o, *merged);
    const auto r = export_gguf_to_hf(*merged, output, dtype, progress, nonfinite, o.force);
    kept = r.nonfinite;
    j["dtype"] = dtype_name(dtype);
    j["bytes"] = r.bytes;
    summary = fmt::format("{} tensors in {}, {}", r.tensors.size(), dtype_name(dtype), human_bytes(double(r.bytes)));
  }
  j["nonfinite"] = nonfinite_json(kept);
  if (o.common.json)
    fmt::print("{}\n", j.dump(2));
  else if (!o.common.quiet)
    fmt::print("wrote {}: {} merged into the {} weights; {}\n", o.output, o.adapters.size() == 1 ? "1 adapter" : fmt::format("{} adapters", o.adapters.size()),
               o.into, summary);
}

}  // namespace

void add_merge_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("merge", "Merge LoRA adapters (PEFT format) into a model and write it as GGUF, 16-bit or bitsandbytes");
  auto o = std::make_shared<MergeOptions>();
  cmd->add_option("BASE", o->base, "The base model: a Hugging Face directory, a bitsandbytes 4-bit checkpoint or a .gguf")->required();
  cmd->add_option("--lora", o->adapters, "A PEFT adapter directory (adapter_config.json + adapter_model.safetensors); repeatable")->required();
  cmd->add_option("--scale", o->scales, "Multiplies an adapter's update (one per --lora, in order; default 1)")->check(finite_range(-1e6, 1e6));
  cmd->add_option("-o,--output", o->output, "OUT.gguf, or a directory: a 16-bit Hugging Face model, or with --format nf4|fp4|int8 a bitsandbytes checkpoint")->required();
  cmd->add_option("--into", o->into,
                  "original: W + s·B·A on the 16-bit base; dequantized: dequant(Q(W)) + s·B·A, the weights a QLoRA adapter was trained "
                  "against (the only choice for a 4-bit base)")
      ->check(CLI::IsMember({"original", "dequantized"}))
      ->capture_default_str();
  cmd->add_option("--trained-on", o->trained_on, "With --into dequantized of a 16-bit base: the 4-bit format Q of training (nf4-b64-dq is QLoRA's)")
      ->capture_default_str();
  cmd->add_option("--format", o->format, "OUT.gguf: a ggml type (q4_K, q8_0, f16 ...); a directory: nf4, fp4 or int8");
  cmd->add_option("--mix", o->mix, "OUT.gguf: a llama.cpp mix with its per-tensor choices (Q4_K_M ...)");
  cmd->add_option("--dtype", o->dtype, "A 16-bit directory output's float type: f32, f16 or bf16 (default: the base's)");
  cmd->add_option("--blocksize", o->blocksize, "nf4/fp4: values per absmax block")->check(CLI::Range(32, 4096))->capture_default_str();
  cmd->add_flag("--double-quant", o->double_quant, "nf4/fp4: quantize the absmax constants too");
  add_nonfinite_option(*cmd, o->allow_nonfinite);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    std::vector<std::string> inputs{o->base};
    inputs.insert(inputs.end(), o->adapters.begin(), o->adapters.end());
    check_outputs({o->output}, inputs, o->force);
    run(*o);
  });
}

}  // namespace lowbit::cli
