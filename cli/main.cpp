// lowbit: quantize LLM weights to low-bit formats and back.
#include <fmt/format.h>

#include <cstdio>
#include <exception>

#include <cmath>

#include "command.h"
#include "lowbit/core/error.h"
#include "lowbit/core/output_path.h"

namespace lowbit::cli {

void add_common_options(CLI::App& command, CommonOptions& options, bool with_json) {
  command.add_flag("-q,--quiet", options.quiet, "Print only results and errors: no progress");
  if (with_json) command.add_flag("--json", options.json, "Print the results as JSON");
}

void add_force_option(CLI::App& command, bool& force) {
  command.add_flag("--force", force, "Replace an output that already exists (never an input)");
}

void check_outputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs, bool force) {
  const std::vector<std::filesystem::path> in(inputs.begin(), inputs.end());
  for (const auto& output : outputs)
    if (!output.empty()) check_output_path(output, in, force);
}

CLI::Validator finite_range(double min, double max) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        double value = 0;
        try {
          size_t used = 0;
          value = std::stod(text, &used);
          if (used != text.size()) return "'" + text + "' is not a number";
        } catch (const std::exception&) {
          return "'" + text + "' is not a number";
        }
        if (!std::isfinite(value) || value < min || value > max)
          return fmt::format("{} is outside [{}, {}]", text, min, max);
        return {};
      },
      fmt::format("FLOAT in [{} - {}]", min, max));
}

}  // namespace lowbit::cli

int main(int argc, char** argv) {
  CLI::App app{"lowbit: turn an LLM's weights into low-bit formats (bitsandbytes, GGUF) and back"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "lowbit 0.1.0");
  // Flag errors in one line, like the library's.
  app.failure_message([](const CLI::App*, const CLI::Error& e) { return "lowbit: error: " + std::string(e.what()) + "\n"; });
  lowbit::cli::add_inspect_command(app);
  lowbit::cli::add_quantize_command(app);
  lowbit::cli::add_dequantize_command(app);
  lowbit::cli::add_eval_command(app);
  lowbit::cli::add_imatrix_command(app);
  lowbit::cli::add_hessian_command(app);
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
