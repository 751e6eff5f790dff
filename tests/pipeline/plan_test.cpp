// The planner on lowbit's 12M model, whose rows fit every k-quant.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>
#include <random>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/kld_probe.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "pipeline/planning/plan_internal.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::filesystem::path bytes_model() { return test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf"; }

// The first 4,000 bytes of WikiText-2 as the model's tokens: enough for a short probe.
std::vector<int32_t> wikitext_tokens(const LlamaModel& model) {
  std::ifstream in(test::shared_data_dir() / "wikitext2_test_hf_nonempty_crlf.raw", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  text.resize(4000);
  return Tokenizer::from_gguf_metadata(model.weights().metadata()).encode(text, true);
}

TEST(Plan, LandsJustUnderTheTargetAndKeepsTheFloors) {
  const auto source = ModelSource::open(bytes_model());
  for (double target : {3.0, 4.0, 5.0}) {
    const Plan plan = make_plan(*source, {.target_bpw = target});
    EXPECT_LE(plan.achieved_bpw, target) << target;
    EXPECT_GT(plan.achieved_bpw, target - 0.05) << target;
    for (const auto& t : plan.tensors) {
      if (t.role == TensorRole::Embedding || t.role == TensorRole::Output) {
        EXPECT_GE(8.0 * double(t.bytes) / double(t.params), 4.5) << t.name;
      }
      if (t.role == TensorRole::Norm) {
        EXPECT_FALSE(t.quantized) << t.name;
      }
    }
  }
  EXPECT_THROW(make_plan(*source, {.target_bpw = 1.0}), Error);  // below the smallest allowed formats
}

TEST(Plan, RowsNoKQuantTilesTakeTheOtherTypes) {
  // stories260K's rows are 64 and 172 wide: no k-quant fits, 172 fits no 32-block type either.
  const Plan plan = make_plan(*ModelSource::open(test::shared_data_dir() / "stories260K.gguf"), {.target_bpw = 8.0});
  EXPECT_LE(plan.achieved_bpw, 8.0);
  for (const auto& t : plan.tensors)
    if (t.quantized && t.name.find("ffn_down") != std::string::npos) {
      EXPECT_EQ(t.format, format_spec(GgmlType::F16)) << t.name;
    }
}

// A model whose logits come through the embedding (no output.weight) keeps it at the output's floor.
TEST(Plan, TiedEmbeddingIsProtectedAsTheOutput) {
  const gguf::File source(bytes_model());
  test::TempDir dir;
  const auto tied = dir.path() / "tied.gguf";
  {
    gguf::Writer writer(tied);
    for (const auto& kv : source.metadata()) writer.set(kv.key, kv.value);
    for (const auto& t : source.tensors())
      if (t.name != "output.weight") writer.add_tensor(t.name, t.type, t.ne);
    for (const auto& t : source.tensors())
      if (t.name != "output.weight") writer.write_data(t.name, source.data(t));
    writer.finish();
  }
  for (const auto& [path, floor] : {std::pair{bytes_model(), 4.5}, std::pair{tied, kTiedOutputMinBpw}}) {
    const Plan plan = make_plan(*ModelSource::open(path), {.target_bpw = 3.0});
    const auto embedding = std::ranges::find(plan.tensors, std::string("token_embd.weight"), &PlannedTensor::name);
    ASSERT_NE(embedding, plan.tensors.end());
    const double bpw = 8.0 * double(embedding->bytes) / double(embedding->params);
    EXPECT_GE(bpw, floor) << path;
  }
}

// Names come from files: the report escapes them rather than letting them become markup.
TEST(Plan, ReportEscapesNames) {
  Plan plan{.model = "a<b>&\"c", .target_bpw = 4, .achieved_bpw = 4, .params = 64, .bytes = 32};
  plan.tensors.push_back({.name = "blk.0.<script>.weight", .role = TensorRole::AttnQ, .layer = 0,
                          .format = format_spec(GgmlType::Q4_0), .params = 64, .bytes = 36, .quantized = true});
  test::TempDir dir;
  write_plan_report(plan, dir / "plan.svg", dir / "plan.html");
  std::ifstream in(dir / "plan.html");
  const std::string html((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_EQ(html.find("<script>"), std::string::npos);
  EXPECT_NE(html.find("blk.0.&lt;script&gt;.weight"), std::string::npos);
  EXPECT_NE(html.find("a&lt;b&gt;&amp;&quot;c"), std::string::npos);
}

TEST(Plan, RulesFileAndQuantizeFromThePlan) {
  test::TempDir dir;
  std::ofstream(dir / "rules.json") << R"({"rules": [{"match": "blk.*.attn_v.weight", "allow": ["q8_0"]},
                                                    {"match": "blk.0.*", "min_bpw": 6},
                                                    {"match": "blk.1.*", "deny": ["q4_K", "Q5_K"]}]})";
  PlanOptions options{.target_bpw = 4.5};
  for (auto& r : load_plan_rules(dir / "rules.json")) options.rules.push_back(std::move(r));
  const auto source = ModelSource::open(bytes_model());
  const Plan plan = make_plan(*source, options);
  for (const auto& t : plan.tensors) {
    if (!t.quantized) continue;
    if (t.role == TensorRole::AttnV) {
      EXPECT_EQ(t.format, format_spec(GgmlType::Q8_0)) << t.name;
    }
    if (t.layer == 0) {
      EXPECT_GE(8.0 * double(t.bytes) / double(t.params), 6.0) << t.name;
    }
    if (t.layer == 1) {
      for (const auto& o : t.options) {
        EXPECT_TRUE(o.format != format_spec(GgmlType::Q4_K) && o.format != format_spec(GgmlType::Q5_K)) << t.name;
      }
    }
  }
  write_plan(dir / "plan.json", plan);
  write_plan_report(plan, dir / "plan.svg", dir / "plan.html");
  EXPECT_GT(std::filesystem::file_size(dir / "plan.svg"), 1000u);
  const Plan back = read_plan(dir / "plan.json");
  EXPECT_FALSE(back.loss_measure.output_kld);
  EXPECT_FALSE(back.loss_measure.imatrix_weighted);
  GgufQuantizeOptions q;
  q.selection.default_type = GgmlType::Q8_0;
  for (const auto& t : back.tensors)
    if (t.quantized) q.selection.overrides.emplace_back(t.name, *format_info(t.format.id).ggml);
  const auto report = quantize_to_gguf(*source, dir / "planned.gguf", q);
  EXPECT_EQ(report.bytes, plan.bytes);  // the file is exactly the size the plan predicted

  std::ofstream(dir / "bad.json") << R"({"rules": [{"match": "*", "allow": ["q9_K"]}]})";
  EXPECT_THROW(load_plan_rules(dir / "bad.json"), Error);
  // An edited plan's mistakes name the file (and the tensor where there is one).
  for (const std::string bad : {R"({"loss_measure": {"kind": "vibes"}, "tensors": []})", R"({"loss_measure": 3, "tensors": []})",
                                R"({"tensors": [{"name": "a", "format": "nf4", "blocksize": "64"}], "target": "bnb"})",
                                R"({"tensors": [{"name": "a", "format": "fp4", "blocksize": 65}], "target": "bnb"})",
                                R"({"tensors": [{"name": "a", "format": "q4_K", "quantized": "yes"}]})", R"({"target": 4, "tensors": []})",
                                R"({"tensors": [{"name": "a", "format": "nf4"}]})", R"({"tensors": [{"name": 1, "format": "q4_K"}]})",
                                R"({"tensors": {}})", R"([1, 2])", "{"}) {
    std::ofstream(dir / "bad-plan.json") << bad;
    try {
      read_plan(dir / "bad-plan.json");
      ADD_FAILURE() << "accepted " << bad;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("bad-plan.json"), std::string::npos) << e.what();
    }
  }
}

TEST(Plan, OutputKldProbeRanksFormatsAndLandsUnderTheTarget) {
  // A short probe (one window of 128 tokens of WikiText) over fewer candidates, to stay quick.
  auto model = LlamaModel::load(bytes_model());
  KldProbe probe(*model, wikitext_tokens(*model), 128, 1, 1);
  test::TempDir dir;
  std::ofstream(dir / "rules.json") << R"({"rules": [{"match": "*", "allow": ["q2_K", "q3_K", "q4_K", "q4_0", "iq4_nl", "q5_K", "q6_K", "q8_0"]}]})";
  PlanOptions options{.target_bpw = 4.0, .probe = &probe};
  for (auto& r : load_plan_rules(dir / "rules.json")) options.rules.push_back(std::move(r));
  const auto source = ModelSource::open(bytes_model());
  const Plan plan = make_plan(*source, options);
  EXPECT_LE(plan.achieved_bpw, 4.0);
  EXPECT_GT(plan.achieved_bpw, 4.0 - 0.01);
  for (const auto& t : plan.tensors) {
    if (!t.quantized) continue;
    // Every tensor's losses fall as the bits rise: q2_K costs more at the output than q4_K, q4_K than q8_0.
    std::map<std::string, double> loss;
    for (const auto& o : t.options) loss[std::string(format_name(o.format.id))] = o.loss;
    if (loss.contains("q2_K")) {
      EXPECT_GT(loss["q2_K"], loss["q4_K"]) << t.name;
    }
    EXPECT_GT(loss["q4_K"], loss["q8_0"]) << t.name;
    EXPECT_GT(loss["q8_0"], 0.0) << t.name;
  }
  // Without the probe the same options carry relative errors instead.
  // The plan file says how its losses were measured.
  EXPECT_TRUE(plan.loss_measure.output_kld);
  EXPECT_EQ(plan.loss_measure.probe_positions, probe.positions());
  double chosen = 0;
  for (const auto& t : plan.tensors) chosen += t.quantized ? t.loss : 0.0;
  EXPECT_GT(plan.predicted_loss, 0.0);
  EXPECT_DOUBLE_EQ(plan.predicted_loss, chosen);
  write_plan(dir / "plan.json", plan);
  const Plan back = read_plan(dir / "plan.json");
  EXPECT_TRUE(back.loss_measure.output_kld);
  EXPECT_EQ(back.loss_measure.probe_positions, probe.positions());
  EXPECT_NE(plan_loss_description(back.loss_measure).find("KL-divergence"), std::string::npos);
  options.probe = nullptr;
  const Plan plain = make_plan(*source, options);
  EXPECT_FALSE(plain.loss_measure.output_kld);
  ASSERT_EQ(plain.tensors.size(), plan.tensors.size());
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const auto& probed = plan.tensors[i];
    if (!probed.quantized) continue;
    EXPECT_NE(plain.tensors[i].options[0].loss, probed.options[0].loss) << probed.name;
    // Of q4_0, iq4_nl and q4_K (all 4.5 bits) the probe weighs only the one of least relative error.
    const auto four_and_a_half = [&](const std::vector<PlanOption>& candidates) {
      std::vector<PlanOption> of_that_size;
      std::ranges::copy_if(candidates, std::back_inserter(of_that_size),
                           [&](const PlanOption& o) { return 8.0 * double(o.bytes) / double(probed.params) == 4.5; });
      return of_that_size;
    };
    const auto plain_options = four_and_a_half(plain.tensors[i].options), probed_options = four_and_a_half(probed.options);
    ASSERT_EQ(plain_options.size(), 3u) << probed.name;
    ASSERT_EQ(probed_options.size(), 1u) << probed.name;
    EXPECT_EQ(probed_options[0].format, std::ranges::min(plain_options, {}, &PlanOption::loss).format) << probed.name;
  }
}

// The joint KLD of `plan` on the probe's windows: every planned tensor quantized to its format at once.
double kld_of_plan(KldProbe& probe, const ModelSource& source, const Plan& plan) {
  std::vector<KldProbe::HeldWeight> held;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const auto& p = plan.tensors[i];
    if (!p.quantized) continue;
    const auto& t = source.tensors()[i];
    const GgmlType type = *format_info(p.format.id).ggml;
    KldProbe::HeldWeight w{.name = p.name, .type = type, .rows = t.elements() / t.ne[0], .cols = t.ne[0]};
    w.data.resize(ggml_row_bytes(type, w.cols) * size_t(w.rows));
    quantize_rows(type, source.load_f32(t).data(), w.rows, w.cols, nullptr, w.data.data());
    held.push_back(std::move(w));
  }
  const double kld = probe.set_background(std::move(held));
  probe.set_background({});
  return kld;
}

TEST(Plan, AProbedPlanIsMeasuredWhole) {
  // One window of 128 tokens, k-quants and q8_0 only, to stay quick.
  auto model = LlamaModel::load(bytes_model());
  KldProbe probe(*model, wikitext_tokens(*model), 128, 1, 1);
  test::TempDir dir;
  std::ofstream(dir / "rules.json") << R"({"rules": [{"match": "*", "allow": ["q2_K", "q3_K", "q4_K", "q6_K", "q8_0"]}]})";
  PlanOptions options{.target_bpw = 2.9, .probe = &probe};
  for (auto& r : load_plan_rules(dir / "rules.json")) options.rules.push_back(std::move(r));
  const auto source = ModelSource::open(bytes_model());
  const Plan plan = make_plan(*source, options);
  // The recorded KLD is the planned model's, every tensor quantized at once; the probe's model is left as loaded.
  ASSERT_TRUE(plan.loss_measure.whole_kld);
  EXPECT_GT(*plan.loss_measure.whole_kld, 0.0);
  EXPECT_DOUBLE_EQ(*plan.loss_measure.whole_kld, kld_of_plan(probe, *source, plan));
  const auto* t = model->weights().find_tensor("blk.0.attn_q.weight");
  EXPECT_EQ(probe.kld_with(t->name, {t->type, t->elements() / t->ne[0], t->ne[0], t->bytes}), 0.0);
  write_plan(dir / "plan.json", plan);
  EXPECT_DOUBLE_EQ(*read_plan(dir / "plan.json").loss_measure.whole_kld, *plan.loss_measure.whole_kld);
  // Without the probe there is nothing to measure it with.
  options.probe = nullptr;
  const Plan plain = make_plan(*source, options);
  EXPECT_FALSE(plain.loss_measure.whole_kld);
  write_plan(dir / "plain.json", plain);
  EXPECT_FALSE(read_plan(dir / "plain.json").loss_measure.whole_kld);
}

// plan --gptq's loss for a layer matrix: ‖(W − Ŵ)X‖² / ‖WX‖², computed through H = XᵀX; here against the
// products with X itself.
TEST(Plan, OutputRelativeErrorIsTheLayersOutputError) {
  constexpr int64_t cols = 8, rows = 3, tokens = 16;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::vector<float> x(tokens * cols), h(cols * cols, 0.0f);
  for (auto& v : x) v = normal(rng);
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j)
      for (int64_t t = 0; t < tokens; ++t) h[size_t(i * cols + j)] += x[size_t(t * cols + i)] * x[size_t(t * cols + j)];
  planning::RowSample sample{.cols = cols, .importance = std::vector<const float*>(rows, nullptr)};
  std::vector<float> back;
  for (int64_t i = 0; i < rows * cols; ++i) {
    sample.values.push_back(normal(rng));
    back.push_back(sample.values.back() + 0.1f * normal(rng));
  }
  double err = 0, ref = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 0; t < tokens; ++t) {
      double out = 0, out_back = 0;
      for (int64_t c = 0; c < cols; ++c) {
        out += double(sample.values[size_t(r * cols + c)]) * x[size_t(t * cols + c)];
        out_back += double(back[size_t(r * cols + c)]) * x[size_t(t * cols + c)];
      }
      err += (out - out_back) * (out - out_back);
      ref += out * out;
    }
  const planning::OutputError output_error(sample, h);
  EXPECT_NEAR(output_error.relative(back), err / ref, 1e-5 * err / ref);
  EXPECT_EQ(output_error.relative(sample.values), 0.0);
}

}  // namespace
}  // namespace lowbit
