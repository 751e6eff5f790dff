// Running the Python checkers (llama.cpp's gguf-py) from tests. scripts/test.sh installs gguf-py in
// a virtual environment and points LOWBIT_PYTHON at it; it also sets LOWBIT_REQUIRE_INTEROP so that a
// missing checker fails the run instead of skipping.
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

namespace lowbit::test {

inline std::string python() {
  const char* p = std::getenv("LOWBIT_PYTHON");
  return p ? p : "python3";
}

// *status is the command's exit code, or 128 + the signal that killed it (as a shell reports it): a
// crash must not read as success.
inline std::string run_command(const std::string& cmd, int* status) {
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int wait_status = pclose(pipe);
  *status = WIFSIGNALED(wait_status) ? 128 + WTERMSIG(wait_status) : WEXITSTATUS(wait_status);
  return out;
}

// Skips where gguf-py is absent, unless the test run requires it (scripts/test.sh does).
inline bool have_gguf_py() {
  int status = 0;
  run_command(python() + " -c 'import gguf, numpy' 2>/dev/null", &status);
  return status == 0;
}

// Skips where one of the Python modules (e.g. "transformers, torch") is absent, unless the test run
// requires the checkers (scripts/test.sh installs them all into build/venv).
inline bool have_python_modules(const std::string& modules) {
  int status = 0;
  run_command(python() + " -c 'import " + modules + "' 2>/dev/null", &status);
  return status == 0;
}

#define REQUIRE_PYTHON_MODULES(modules)                                                                  \
  if (!lowbit::test::have_python_modules(modules)) {                                                      \
    if (std::getenv("LOWBIT_REQUIRE_INTEROP")) FAIL() << modules << " not importable by " << lowbit::test::python(); \
    GTEST_SKIP() << modules << " not installed (scripts/test.sh installs them into build/venv)";           \
  }

#define REQUIRE_GGUF_PY()                                                                   \
  if (!lowbit::test::have_gguf_py()) {                                                                    \
    if (std::getenv("LOWBIT_REQUIRE_INTEROP")) FAIL() << "gguf-py not importable by " << lowbit::test::python(); \
    GTEST_SKIP() << "gguf-py not installed (pip install gguf)";                              \
  }

inline std::string interop_script(const char* name) { return std::string(LOWBIT_SOURCE_DIR) + "/tests/interop/" + name; }

// Runs tests/interop/`script` with `args` and parses the JSON its last line prints; fails the test
// (with everything it printed) if it exits non-zero.
inline nlohmann::json run_interop_json(const char* script, const std::string& args) {
  int status = 0;
  const auto out = run_command(python() + " " + interop_script(script) + " " + args + " 2>&1", &status);
  EXPECT_EQ(status, 0) << out;
  if (status != 0) return nullptr;
  const size_t end = out.find_last_not_of('\n');
  const size_t begin = out.find_last_of('\n', end);
  return nlohmann::json::parse(out.substr(begin == std::string::npos ? 0 : begin + 1, end - (begin == std::string::npos ? 0 : begin + 1) + 1));
}

}  // namespace lowbit::test
