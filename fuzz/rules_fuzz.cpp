// libFuzzer target: a planner rules file (--rules), then the rules applied to a few tensor names.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/plan.h"
#include "pipeline/planning/plan_internal.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const auto path = fuzz::scratch_dir() / "rules.json";
  fuzz::write_file(path, data, size);
  try {
    const auto rules = load_plan_rules(path);
    const std::string names[] = {"blk.3.attn_q.weight", "token_embd.weight"};
    (void)planning::rules_allow(rules, names, 3, format_spec(GgmlType::Q4_K), 4.5);
  } catch (const Error&) {
  }
  return 0;
}
