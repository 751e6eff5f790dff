// Each subcommand lives in its own file and registers itself on the app with add_<name>_command.
// The CLI only parses arguments, calls the library and prints; all work happens in lowbit's library.
#pragma once

#include <CLI/CLI.hpp>

#include "lowbit/core/progress.h"
#include "lowbit/pipeline/plan.h"

namespace lowbit::cli {

// Options every command takes.
struct CommonOptions {
  bool quiet = false;  // no progress, no chatter: only results and errors
  bool json = false;   // results as JSON on stdout
};

void add_common_options(CLI::App& command, CommonOptions& options, bool with_json = true);

// --force, for commands that write: an existing output is replaced only when it is given.
void add_force_option(CLI::App& command, bool& force);
// Refuses, before any work, outputs that are or hold an input, and existing ones without --force
// (lowbit/core/output_path.h).
void check_outputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs, bool force);

// Range checks for numeric flags: a one-line error naming the flag and the range. CLI::Range lets
// NaN through (every comparison with it is false); these do not.
CLI::Validator finite_range(double min, double max);
// Window lengths in tokens: positive, and small enough that tokens × window sizes stay in int range.
constexpr int kMaxContext = 1 << 20;

// --probe-text FILE, --probe-chunks N, --no-probe and --device D, for plan and quantize --bpw.
void add_probe_options(CLI::App& command, std::string& probe_text, int& probe_chunks, std::string& device, bool& no_probe);
// --gptq-text FILE [--gptq-chunks N]: collect GPTQ's Hessians first (`kept` says where they go).
void add_gptq_text_options(CLI::App& command, std::string& gptq_text, int& gptq_chunks, const std::string& kept);
// --device cpu|cuda|auto, for the commands that run the model.
void add_device_option(CLI::App& command, std::string& device);

void add_inspect_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_dequantize_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_imatrix_command(CLI::App& app);
void add_hessian_command(CLI::App& app);
void add_plan_command(CLI::App& app);
void add_bench_command(CLI::App& app);
void add_merge_command(CLI::App& app);

}  // namespace lowbit::cli
