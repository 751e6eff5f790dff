// The planner on lowbit's 12M model, whose rows fit every k-quant.
#include <gtest/gtest.h>

#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::filesystem::path bytes_model() { return test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf"; }

TEST(Plan, LandsJustUnderTheTargetAndKeepsTheFloors) {
  const auto source = ModelSource::open(bytes_model());
  for (double target : {3.0, 4.0, 5.0}) {
    const Plan plan = make_plan(*source, {.target_bpw = target});
    EXPECT_LE(plan.achieved_bpw, target) << target;
    EXPECT_GT(plan.achieved_bpw, target - 0.05) << target;
    for (const auto& t : plan.tensors) {
      if (t.role == TensorRole::Embedding || t.role == TensorRole::Output) EXPECT_GE(8.0 * double(t.bytes) / double(t.params), 4.5) << t.name;
      if (t.role == TensorRole::Norm) EXPECT_FALSE(t.quantized) << t.name;
    }
  }
  EXPECT_THROW(make_plan(*source, {.target_bpw = 1.0}), Error);  // below the smallest allowed formats
}

TEST(Plan, RulesFileAndQuantizeFromThePlan) {
  test::TempDir dir;
  std::ofstream(dir / "rules.json") << R"({"rules": [{"match": "blk.*.attn_v.weight", "allow": ["q8_0"]},
                                                    {"match": "blk.0.*", "min_bpw": 6}]})";
  PlanOptions options{.target_bpw = 4.5};
  for (auto& r : load_plan_rules(dir / "rules.json")) options.rules.push_back(std::move(r));
  const auto source = ModelSource::open(bytes_model());
  const Plan plan = make_plan(*source, options);
  for (const auto& t : plan.tensors) {
    if (!t.quantized) continue;
    if (t.role == TensorRole::AttnV) EXPECT_EQ(t.format, TensorFormat(GgmlType::Q8_0)) << t.name;
    if (t.layer == 0) EXPECT_GE(8.0 * double(t.bytes) / double(t.params), 6.0) << t.name;
  }
  write_plan(dir / "plan.json", plan);
  write_plan_report(plan, dir / "plan.svg", dir / "plan.html");
  EXPECT_GT(std::filesystem::file_size(dir / "plan.svg"), 1000u);
  const Plan back = read_plan(dir / "plan.json");
  GgufQuantizeOptions q;
  q.selection.default_type = GgmlType::Q8_0;
  for (const auto& t : back.tensors)
    if (t.quantized) q.selection.overrides.emplace_back(t.name, std::get<GgmlType>(t.format));
  const auto report = quantize_to_gguf(*source, dir / "planned.gguf", q);
  EXPECT_EQ(report.bytes, plan.bytes);  // the file is exactly the size the plan predicted

  std::ofstream(dir / "bad.json") << R"({"rules": [{"match": "*", "allow": ["q9_K"]}]})";
  EXPECT_THROW(load_plan_rules(dir / "bad.json"), Error);
}

}  // namespace
}  // namespace lowbit
