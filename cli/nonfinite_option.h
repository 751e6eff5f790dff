// --allow-nonfinite, shared by the commands that write weights (quantize, dequantize): the flag, the
// policy it gives the library (kept values reported on stderr) and its count in --json output.
#pragma once

#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "lowbit/core/nonfinite.h"

namespace lowbit::cli {

inline void add_nonfinite_option(CLI::App& command, bool& allow) {
  command.add_flag("--allow-nonfinite", allow,
                   "Keep NaN, Inf and values beyond an f16/bf16 output's range where the format can store them (f32/f16/bf16 "
                   "values), reporting each tensor on stderr, instead of refusing them; block formats never get a non-finite scale");
}

inline NonfinitePolicy nonfinite_policy(bool allow) {
  return {.allow = allow, .report = [](const std::string& line) { fmt::print(stderr, "lowbit: warning: {}\n", line); }};
}

inline nlohmann::ordered_json nonfinite_json(const NonfiniteCount& count) {
  return {{"values", count.values}, {"tensors", count.tensors}};
}

}  // namespace lowbit::cli
