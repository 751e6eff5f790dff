// Running llama.cpp's own tools (scripts/llama-cpp-tools.sh builds them; scripts/test.sh points
// LOWBIT_LLAMA_CPP_BIN at them) as independent checkers of what lowbit writes.
#pragma once

#include <fmt/format.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <string>
#include <thread>

#include "support/python.h"

namespace lowbit::test {

inline std::filesystem::path llama_cpp_bin() {
  const char* dir = std::getenv("LOWBIT_LLAMA_CPP_BIN");
  return dir && *dir ? std::filesystem::path(dir) : std::filesystem::path();
}

// Runs one of llama.cpp's tools (stderr with stdout) and returns what it printed; `status` gets the exit
// status (128 + the signal for a crash). A run is made again, up to five runs in all, a moment apart, when a signal
// killed it or when its output lacks `expected` (the line the caller will parse) although it exited 0:
// the tools print through a logging thread that llama.cpp deliberately never joins at exit
// (common/log.cpp, common_log_main), so on a busy two-core machine the last lines, "Final estimate:
// PPL = …" among them, are sometimes lost from a run that succeeded; CI saw it twice, and a fresh clone's
// full test run once lost them three times running while the same test alone passed. A checker that
// loses its output is not a finding about lowbit's file; each retry is printed, and the caller's
// assertions still fail if every run did.
inline std::string run_llama_cpp_tool(const std::string& command, const std::string& expected, int* status) {
  std::string out;
  for (int attempt = 1; attempt <= 5; ++attempt) {
    if (attempt > 1) std::this_thread::sleep_for(std::chrono::seconds(2));  // let a busy machine settle
    out = run_command(command + " 2>&1", status);
    const bool crashed = *status > 128, lost_output = *status == 0 && out.find(expected) == std::string::npos;
    if (!crashed && !lost_output) break;
    std::cout << fmt::format("[ llama.cpp ] run {} {}; running it again: {}\n", attempt,
                             crashed ? fmt::format("killed by signal {}", *status - 128) : fmt::format("exited 0 without printing '{}'", expected),
                             command);
  }
  return out;
}

}  // namespace lowbit::test
