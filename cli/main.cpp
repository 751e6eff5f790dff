// lowbit: quantize LLM weights to low-bit formats and back.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include "command.h"
#include "lowbit/core/error.h"

namespace lowbit::cli {

void add_common_options(CLI::App& command, CommonOptions& options, bool with_json) {
  command.add_flag("-q,--quiet", options.quiet, "Print only results and errors: no progress");
  if (with_json) command.add_flag("--json", options.json, "Print the results as JSON");
}

}  // namespace lowbit::cli

int main(int argc, char** argv) {
  CLI::App app{"lowbit: turn an LLM's weights into low-bit formats (bitsandbytes, GGUF) and back"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lowbit 0.1.0");
  lowbit::cli::add_inspect_command(app);
  lowbit::cli::add_quantize_command(app);
  lowbit::cli::add_dequantize_command(app);
  lowbit::cli::add_eval_command(app);
  lowbit::cli::add_imatrix_command(app);
  lowbit::cli::add_plan_command(app);
  lowbit::cli::add_bench_command(app);
  lowbit::cli::add_merge_command(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const lowbit::Error& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "lowbit: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
