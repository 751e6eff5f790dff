// `lowbit merge` against PEFT's merge_and_unload() on adapters PEFT itself made (transformers, torch and
// peft from PyPI; scripts/test.sh installs them), and its CLI contract on a small model.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/paths.h"
#include "support/python.h"

namespace lowbit {
namespace {

bool have_peft() {
  int status = 0;
  test::run_command(test::python() + " -c 'import torch, transformers, peft' 2>/dev/null", &status);
  return status == 0;
}

TEST(MergeInterop, EqualsPeftMergeAndUnloadWithinOneBf16Rounding) {
  if (!have_peft()) {
    if (std::getenv("LOWBIT_REQUIRE_INTEROP")) FAIL() << "torch, transformers and peft not importable by " << test::python();
    GTEST_SKIP() << "torch, transformers or peft not installed";
  }
  test::TempDir dir;
  int status = 0;
  const auto out = test::run_command(test::python() + " " + test::interop_script("peft_merge_check.py") + " " + LOWBIT_CLI_PATH + " " +
                                         dir.path().string() + " 2>&1",
                                     &status);
  EXPECT_EQ(status, 0) << out;
  int cases = 0;
  for (std::string_view rest = out; !rest.empty();) {
    const auto eol = rest.find('\n');
    const std::string line(rest.substr(0, eol));
    rest = eol == std::string_view::npos ? std::string_view{} : rest.substr(eol + 1);
    if (line.empty() || line.front() != '{') continue;
    const auto j = nlohmann::json::parse(line);
    EXPECT_TRUE(j["ok"].get<bool>()) << line;
    ++cases;
  }
  EXPECT_EQ(cases, 6) << out;  // four adapters merged, two refused
}

}  // namespace
}  // namespace lowbit
