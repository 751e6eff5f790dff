// Each subcommand lives in its own file and registers itself on the app with add_<name>_command.
// The CLI only parses arguments, calls the library and prints; all work happens in lowbit's library.
#pragma once

#include <CLI/CLI.hpp>

namespace lowbit::cli {

// Options every command takes.
struct CommonOptions {
  bool quiet = false;  // no progress, no chatter: only results and errors
  bool json = false;   // results as JSON on stdout
};

void add_common_options(CLI::App& command, CommonOptions& options, bool with_json = true);

void add_inspect_command(CLI::App& app);
void add_quantize_command(CLI::App& app);
void add_dequantize_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_imatrix_command(CLI::App& app);

}  // namespace lowbit::cli
