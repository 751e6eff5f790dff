// libFuzzer target: plan.json, the plan a user may edit and hand back to quantize.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/plan.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto path = fuzz::scratch_dir() / "plan.json";
  fuzz::write_file(path, data, size);
  try {
    (void)read_plan(path);
  } catch (const Error&) {
  }
  return 0;
}
