// lowbit dequantize IN -o OUT [--dtype f32|f16|bf16]: a GGUF to .gguf/.safetensors, or a
// bitsandbytes checkpoint (directory or file) back to plain safetensors.
#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "command.h"
#include "format_numbers.h"
#include "nonfinite_option.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "terminal_progress.h"

namespace lowbit::cli {

void add_dequantize_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("dequantize", "Turn quantized weights back into plain float tensors");
  struct Options {
    CommonOptions common;
    std::string input, output, dtype;
    bool force = false;
    bool allow_nonfinite = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("IN", o->input, "A .gguf file, or a bitsandbytes checkpoint (directory or .safetensors)")->required();
  cmd->add_option("-o,--output", o->output, "OUT.gguf, OUT.safetensors or a Hugging Face directory for a GGUF input; a directory or .safetensors for bitsandbytes")->required();
  cmd->add_option("--dtype", o->dtype, "f32, f16 or bf16 (default: GGUF f32; bitsandbytes each weight's recorded dtype)");
  add_nonfinite_option(*cmd, o->allow_nonfinite);
  add_common_options(*cmd, o->common);
  add_force_option(*cmd, o->force);
  cmd->callback([o] {
    check_outputs({o->output}, {o->input}, o->force);
    const NonfinitePolicy policy = nonfinite_policy(o->allow_nonfinite);
    std::optional<DType> dtype;
    if (!o->dtype.empty()) {
      dtype = dtype_from_name(o->dtype);
      if (!dtype || !dtype_is_float(*dtype) || *dtype == DType::f64)
        throw Error(fmt::format("--dtype '{}' is not f32, f16 or bf16", o->dtype));
    }
    TerminalProgress progress(o->common.quiet);
    nlohmann::ordered_json j{{"output", o->output}};
    std::string summary;
    if (std::filesystem::path(o->input).extension() == ".gguf") {
      const auto source = ModelSource::open(o->input);
      const auto ext = std::filesystem::path(o->output).extension();
      const auto r = ext == ".gguf" || ext == ".safetensors"
                         ? dequantize_gguf(*source, o->output, dtype.value_or(DType::f32), progress, policy)
                         : export_gguf_to_hf(*source, o->output, dtype.value_or(DType::f32), progress, policy, o->force);
      j["tensors"] = r.tensors.size();
      j["bytes_out"] = r.bytes;
      j["nonfinite"] = nonfinite_json(r.nonfinite);
      j["seconds"] = r.seconds;
      summary = fmt::format("{} tensors, {}", r.tensors.size(), human_bytes(double(r.bytes)));
    } else {
      if (!is_bnb_checkpoint(o->input)) throw Error("no bitsandbytes-quantized weight found", {.file = o->input});
      const auto r = dequantize_bnb(o->input, o->output, dtype, progress, policy, o->force);
      j["tensors"] = r.tensors;
      j["dequantized"] = r.quantized;
      j["bytes_out"] = r.bytes_out;
      j["nonfinite"] = nonfinite_json(r.nonfinite);
      j["seconds"] = r.seconds;
      summary = fmt::format("{} weights dequantized, {} tensors, {}", r.quantized, r.tensors, human_bytes(double(r.bytes_out)));
    }
    if (o->common.json)
      fmt::print("{}\n", j.dump(2));
    else if (!o->common.quiet)
      fmt::print("wrote {}: {}\n", o->output, summary);
  });
}

}  // namespace lowbit::cli
