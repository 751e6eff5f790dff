// The planner on small synthetic MoE checkpoints with Qwen2-MoE, Mixtral and DeepSeek-V3 names: experts,
// shared experts and routers recognised under Hugging Face and llama.cpp names, routers and norms kept
// at full precision, plans applied to GGUF and bitsandbytes outputs, Unsloth's recipe as a rules file.
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/plan/llama_cpp_mix.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "lowbit/io/hf_names.h"
#include "support/paths.h"
#include "support/tiny_moe_model.h"

namespace lowbit {
namespace {

using test::MoeStyle;

constexpr MoeStyle kStyles[] = {MoeStyle::qwen2_moe, MoeStyle::mixtral, MoeStyle::deepseek};

test::TinyMoe small_model(MoeStyle style) {
  return {.style = style, .layers = 2, .dense_layers = style == MoeStyle::deepseek ? 1 : 0};
}

bool is_expert(TensorRole r) { return r == TensorRole::ExpertGate || r == TensorRole::ExpertUp || r == TensorRole::ExpertDown; }
bool is_shared_expert(TensorRole r) {
  return r == TensorRole::SharedExpertGate || r == TensorRole::SharedExpertUp || r == TensorRole::SharedExpertDown;
}
double bpw(const PlannedTensor& t) { return 8.0 * double(t.bytes) / double(t.params); }

// The roles a plan's tensors have, by name.
std::set<std::string> roles_of(const Plan& plan) {
  std::set<std::string> roles;
  for (const auto& t : plan.tensors) roles.insert(std::string(role_name(t.role)));
  return roles;
}

TEST(PlanMoe, HuggingFaceNamesReachLlamaCppNamesAndRoles) {
  for (MoeStyle style : kStyles) {
    int experts = 0, shared = 0, routers = 0;
    for (const auto& t : test::tiny_moe_tensors(small_model(style))) {
      const auto place = gguf_place_of(t.hf);
      ASSERT_TRUE(place) << t.hf;
      EXPECT_EQ(place->name, t.gguf) << t.hf;
      EXPECT_EQ(place->expert, t.expert) << t.hf;
      const RoleOf role = role_of_tensor(t.hf);
      EXPECT_EQ(role.role, classify_tensor(t.gguf).role) << t.hf;
      EXPECT_EQ(role.layer, classify_tensor(t.gguf).layer) << t.hf;
      EXPECT_NE(role.role, TensorRole::Other) << t.hf;
      experts += is_expert(role.role);
      shared += is_shared_expert(role.role);
      routers += role.role == TensorRole::Router;
    }
    const int moe_layers = style == MoeStyle::deepseek ? 1 : 2;
    EXPECT_EQ(experts, moe_layers * 4 * 3);
    EXPECT_EQ(shared, style == MoeStyle::mixtral ? 0 : moe_layers * 3);
    // Qwen2-MoE: router and shared-expert gate; DeepSeek: router and its routing bias.
    EXPECT_EQ(routers, moe_layers * (style == MoeStyle::mixtral ? 1 : 2));
  }
  EXPECT_EQ(role_of_tensor("model.layers.7.mlp.experts.12.down_proj.weight").layer, 7);
  EXPECT_EQ(role_of_tensor("model.layers.3.mystery.weight").role, TensorRole::Other);
  EXPECT_EQ(role_of_tensor("model.layers.3.mystery.weight").layer, 3);
  EXPECT_FALSE(gguf_place_of("model.layers.0.mlp.experts.0.w1.weight"));  // Mixtral's names under Qwen's container
}

TEST(PlanMoe, GgufPlansKeepRoutersAndNormsAndQuantizeToTheirSize) {
  for (MoeStyle style : kStyles) {
    test::TempDir dir;
    const auto model = small_model(style);
    test::write_tiny_moe_gguf(dir / "moe.gguf", model);
    const auto source = ModelSource::open(dir / "moe.gguf");
    const Plan plan = make_plan(*source, {.target_bpw = 4.0});
    EXPECT_LE(plan.achieved_bpw, 4.0);
    EXPECT_GT(plan.achieved_bpw, 3.9);
    for (const auto& t : plan.tensors) {
      if (t.role == TensorRole::Router || t.role == TensorRole::Norm) {
        EXPECT_FALSE(t.quantized) << t.name;
        EXPECT_EQ(t.format, format_spec(GgmlType::F32)) << t.name;
      }
      if (is_expert(t.role) || is_shared_expert(t.role)) {
        EXPECT_TRUE(t.quantized) << t.name;
      }
      if (is_expert(t.role)) {  // all experts of a layer in one tensor
        EXPECT_EQ(t.params, 4 * 256 * 256) << t.name;
      }
    }
    const auto roles = roles_of(plan);
    for (const char* r : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "router", "norm", "attn_output"}) EXPECT_TRUE(roles.count(r)) << r;
    if (style != MoeStyle::mixtral) {
      for (const char* r : {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"}) EXPECT_TRUE(roles.count(r)) << r;
    }

    // The plan's file, read back, quantizes to exactly the size it predicted; routers stay f32.
    write_plan(dir / "plan.json", plan);
    const Plan back = read_plan(dir / "plan.json");
    GgufQuantizeOptions q;
    q.selection.default_type = GgmlType::Q8_0;
    for (const auto& t : back.tensors)
      if (t.quantized) q.selection.overrides.emplace_back(t.name, *format_info(t.format.id).ggml);
    const auto report = quantize_to_gguf(*source, dir / "planned.gguf", q);
    EXPECT_EQ(report.bytes, plan.bytes);
    const gguf::File out(dir / "planned.gguf");
    for (const auto& t : out.tensors()) {
      if (classify_tensor(t.name).role == TensorRole::Router) {
        EXPECT_EQ(t.type, GgmlType::F32) << t.name;
      }
    }
  }
}

TEST(PlanMoe, BnbPlansOfEachStyleWriteTheirFormatsPerTensor) {
  for (MoeStyle style : kStyles) {
    test::TempDir dir;
    test::write_tiny_moe_hf(dir / "model", small_model(style));
    const Checkpoint ckpt(dir / "model");
    const Plan plan = make_bnb_plan(ckpt, {.target_bpw = 4.4});
    EXPECT_EQ(plan.target, PlanTarget::bnb);
    EXPECT_LE(plan.achieved_bpw, 4.4);
    EXPECT_GT(plan.achieved_bpw, 4.3);
    std::set<std::string> labels;
    for (const auto& t : plan.tensors) {
      const bool linear = t.role != TensorRole::Router && t.role != TensorRole::Norm && t.role != TensorRole::Embedding &&
                          t.role != TensorRole::Output;
      EXPECT_EQ(t.quantized, linear) << t.name;  // routers, norms, embeddings and lm_head are not candidates
      if (!t.quantized) {
        EXPECT_EQ(t.format, format_spec(GgmlType::BF16)) << t.name;
        continue;
      }
      EXPECT_EQ(t.options.size(), 13u) << t.name;  // nf4/fp4 × 64/128/256 × double quant or not, and bf16
      labels.insert(format_label(t.format));
    }
    EXPECT_GE(labels.size(), 2u);  // a budget between two formats mixes them
    const auto roles = roles_of(plan);
    for (const char* r : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "router"}) EXPECT_TRUE(roles.count(r)) << r;

    write_plan(dir / "plan.json", plan);
    const Plan back = read_plan(dir / "plan.json");
    ASSERT_EQ(back.tensors.size(), plan.tensors.size());
    for (size_t i = 0; i < plan.tensors.size(); ++i) EXPECT_EQ(back.tensors[i].format, plan.tensors[i].format) << plan.tensors[i].name;

    const auto report = quantize_to_bnb(dir / "model", dir / "out", {.plan = &back});
    EXPECT_EQ(report.bytes_out, plan.bytes);  // every absmax, code map and quant state counted exactly
    const Checkpoint out(dir / "out");
    std::ifstream config_file(dir / "out" / "config.json");
    const auto q = nlohmann::json::parse(config_file)["quantization_config"];
    EXPECT_EQ(q["load_in_4bit"], true);
    const auto skipped = q["llm_int8_skip_modules"].get<std::vector<std::string>>();
    for (const auto& t : plan.tensors) {
      const std::string module = bnb::module_of(t.name);
      const bool in_skip = std::ranges::find(skipped, module) != skipped.end();
      if (const auto* f = is_bnb_4bit(t.format) ? &t.format : nullptr) {
        const std::string type(format_name(f->id));
        const auto state = out.view(t.name + bnb::quant_state_key(type));
        const auto s = bnb::parse_quant_state({reinterpret_cast<const char*>(state.bytes.data()), state.bytes.size()}, {.tensor = t.name});
        EXPECT_EQ(s.quant_type, type) << t.name;
        EXPECT_EQ(s.blocksize, f->blocksize) << t.name;
        EXPECT_EQ(s.nested_offset.has_value(), f->double_quant) << t.name;
        EXPECT_FALSE(in_skip) << t.name;
      } else {
        EXPECT_EQ(out.view(t.name).dtype, DType::bf16) << t.name;
        if (t.quantized || t.role == TensorRole::Router) {
          EXPECT_TRUE(in_skip || t.name.ends_with("_bias")) << t.name;
        }
      }
    }
  }
}

TEST(PlanMoe, UnslothRecipeRulesFile) {
  test::TempDir dir;
  const test::TinyMoe model{.style = MoeStyle::deepseek, .layers = 8, .dense_layers = 3};
  test::write_tiny_moe_gguf(dir / "deepseek.gguf", model);
  PlanOptions options{.target_bpw = 4.5};
  for (auto& r : load_plan_rules(std::filesystem::path(LOWBIT_SOURCE_DIR) / "rules" / "unsloth-dynamic.json")) options.rules.push_back(std::move(r));
  const auto source = ModelSource::open(dir / "deepseek.gguf");
  const Plan plan = make_plan(*source, options);
  EXPECT_LE(plan.achieved_bpw, 4.5);
  int checked = 0;
  for (const auto& t : plan.tensors) {
    const std::string format(format_name(t.format.id));
    switch (t.role) {
      case TensorRole::Router:
      case TensorRole::Norm:
        EXPECT_FALSE(t.quantized) << t.name;
        EXPECT_EQ(format, "f32") << t.name;
        break;
      case TensorRole::AttnQ: case TensorRole::AttnKV: case TensorRole::AttnOutput:
      case TensorRole::FfnGate: case TensorRole::FfnUp: case TensorRole::FfnDown:  // the dense layers
        EXPECT_GE(bpw(t), 4.0) << t.name;
        EXPECT_LE(bpw(t), 6.6) << t.name;
        if (t.role == TensorRole::FfnGate || t.role == TensorRole::FfnUp || t.role == TensorRole::FfnDown) {
          EXPECT_LT(t.layer, 3) << t.name;
        }
        break;
      case TensorRole::SharedExpertGate: case TensorRole::SharedExpertUp: case TensorRole::SharedExpertDown:
        EXPECT_EQ(format, "q6_K") << t.name;
        break;
      case TensorRole::ExpertDown:  // the early, sensitive down projections higher (q3_K or iq3_s, both 3.4375 bits)
        if (t.layer <= 5) {
          EXPECT_EQ(bpw(t), 3.4375) << t.name;
        } else {
          EXPECT_LE(bpw(t), 2.7) << t.name;
        }
        break;
      case TensorRole::ExpertGate: case TensorRole::ExpertUp:
        EXPECT_LE(bpw(t), 2.7) << t.name;
        break;
      default: continue;
    }
    ++checked;
  }
  EXPECT_EQ(checked, int(plan.tensors.size()) - 2);  // all but token_embd and output
}

TEST(PlanMoe, RulesByLayerRangeAndStrictRulesFiles) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "moe.gguf", small_model(MoeStyle::qwen2_moe));
  std::ofstream(dir / "rules.json") << R"({"description": "layer 1's experts in 4 bits or more, nf4 names nothing in a GGUF",
    "rules": [{"match": "blk.*.ffn_*_exps.weight", "layers": "1-", "min_bpw": 4, "note": "later layers"},
              {"match": "blk.*.ffn_*_exps.weight", "layers": "0", "allow": ["Q2_K"]}]})";
  PlanOptions options{.target_bpw = 4.5};
  for (auto& r : load_plan_rules(dir / "rules.json")) options.rules.push_back(std::move(r));
  const Plan plan = make_plan(*ModelSource::open(dir / "moe.gguf"), options);
  for (const auto& t : plan.tensors) {
    if (!is_expert(t.role)) continue;
    if (t.layer == 0) {
      EXPECT_EQ(format_name(t.format.id), "q2_K") << t.name;
    }
    if (t.layer == 1) {
      EXPECT_GE(bpw(t), 4.0) << t.name;
    }
  }
  for (const char* bad : {R"({"rules": [{"match": "*", "min_bwp": 4}]})", R"({"rules": [{"match": "*", "layers": "3-1"}]})",
                          R"({"rules": [{"match": "*", "layers": [0, 2]}]})", R"({"rules": [{"match": "*", "allow": ["int9"]}]})",
                          R"({"rulez": []})", R"({"rules": [], "extra": 1})"}) {
    std::ofstream(dir / "bad.json") << bad;
    EXPECT_THROW(load_plan_rules(dir / "bad.json"), Error) << bad;
  }
}

// An importance matrix for every weight of a GGUF but the embeddings and output layer (as llama-imatrix
// collects none for them), one slice of columns per expert, each column its own weight.
void write_test_imatrix(const std::filesystem::path& path, const std::filesystem::path& model) {
  const gguf::File file(model);
  gguf::Writer w(path);
  w.set("general.type", gguf::Value{std::string("imatrix")});
  std::vector<std::pair<std::string, std::pair<std::vector<float>, std::vector<float>>>> data;  // name, sums, counts, in file order
  for (const auto& t : file.tensors()) {
    if (t.ne.size() < 2 || t.name == "token_embd.weight" || t.name == "output.weight") continue;
    const int64_t columns = t.ne[0], experts = t.ne.size() > 2 ? t.ne[2] : 1;
    auto& [sums, counts] = data.emplace_back(t.name, std::pair<std::vector<float>, std::vector<float>>{}).second;
    for (int64_t i = 0; i < columns * experts; ++i) sums.push_back(float(1 + (i * 7) % 13));
    counts.assign(size_t(experts), 1.0f);
    w.add_tensor(t.name + ".in_sum2", GgmlType::F32, {columns, experts});
    w.add_tensor(t.name + ".counts", GgmlType::F32, {1, experts});
  }
  for (const auto& [name, d] : data) {
    w.write_data(name + ".in_sum2", std::as_bytes(std::span(d.first)));
    w.write_data(name + ".counts", std::as_bytes(std::span(d.second)));
  }
  w.finish();
}

// Whether a rule of a rules file's JSON applies to a tensor: its glob fits the name and its "layers"
// ("A-B", "A-", "A") hold the layer. Read here from the JSON itself, independently of the planner's parser.
bool rule_applies(const nlohmann::json& rule, const PlannedTensor& t) {
  if (!glob_match(rule["match"].get<std::string>(), t.name)) return false;
  if (!rule.contains("layers")) return true;
  const std::string range = rule["layers"];
  const size_t dash = range.find('-');
  const int first = std::stoi(range.substr(0, dash));
  const int last = dash == std::string::npos ? first : dash + 1 == range.size() ? 1 << 30 : std::stoi(range.substr(dash + 1));
  return t.layer >= first && t.layer <= last;
}

TEST(PlanMoe, EveryShippedRulesFileBindsThePlan) {
  test::TempDir dir;
  const test::TinyMoe model{.style = MoeStyle::deepseek, .layers = 8, .dense_layers = 3};
  test::write_tiny_moe_gguf(dir / "deepseek.gguf", model);
  write_test_imatrix(dir / "imatrix.gguf", dir / "deepseek.gguf");
  const auto imatrix = ImportanceMatrix::load(dir / "imatrix.gguf");
  const auto source = ModelSource::open(dir / "deepseek.gguf");
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(LOWBIT_SOURCE_DIR) / "rules")) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().filename().string());
    ++files;
    const auto json = nlohmann::json::parse(std::ifstream(entry.path()));
    EXPECT_FALSE(json.value("description", "").empty());  // every file says where its recipe comes from
    PlanOptions options{.target_bpw = 8.0, .imatrix = &imatrix};
    for (auto& r : load_plan_rules(entry.path())) options.rules.push_back(std::move(r));
    const Plan plan = make_plan(*source, options);
    int experts = 0, bound = 0;
    for (const auto& t : plan.tensors) {
      if (t.role == TensorRole::Router || t.role == TensorRole::Norm) {
        EXPECT_FALSE(t.quantized) << t.name;
        EXPECT_EQ(t.format, format_spec(GgmlType::F32)) << t.name;
        continue;
      }
      if (t.role == TensorRole::Embedding || t.role == TensorRole::Output) {
        EXPECT_GE(bpw(t), 4.5) << t.name;
      }
      if (is_expert(t.role)) ++experts;
      for (const auto& rule : json["rules"]) {
        if (!rule_applies(rule, t)) continue;
        ++bound;
        const std::string format(format_name(t.format.id));
        if (rule.contains("allow")) {
          EXPECT_TRUE(std::ranges::count(rule["allow"], nlohmann::json(format))) << t.name << " " << format << " " << rule.dump();
        }
        if (rule.contains("min_bpw")) {
          EXPECT_GE(bpw(t), rule["min_bpw"].get<double>()) << t.name << " " << rule.dump();
        }
        if (rule.contains("max_bpw")) {
          EXPECT_LE(bpw(t), rule["max_bpw"].get<double>()) << t.name << " " << rule.dump();
        }
      }
    }
    EXPECT_EQ(experts, 5 * 3);  // five MoE layers' gate, up and down
    EXPECT_GE(bound, experts);  // every routed expert falls under a rule of the file
  }
  EXPECT_GE(files, 14);
}

// A ladder's routed experts take exactly its types: the 1.58-bit recipe's experts are iq1_s, its down
// projections iq1_s or iq2_xxs; without an importance matrix it cannot be planned (ggml needs one for iq1_s).
TEST(PlanMoe, UnslothLadderNeedsItsImportanceMatrix) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "deepseek.gguf", {.style = MoeStyle::deepseek, .layers = 4, .dense_layers = 1});
  write_test_imatrix(dir / "imatrix.gguf", dir / "deepseek.gguf");
  const auto imatrix = ImportanceMatrix::load(dir / "imatrix.gguf");
  const auto source = ModelSource::open(dir / "deepseek.gguf");
  const auto rules = load_plan_rules(std::filesystem::path(LOWBIT_SOURCE_DIR) / "rules" / "unsloth-deepseek-r1-1.58bit.json");
  PlanOptions options{.target_bpw = 8.0, .imatrix = &imatrix};
  options.rules.insert(options.rules.end(), rules.begin(), rules.end());
  for (const auto& t : make_plan(*source, options).tensors) {
    const std::string format(format_name(t.format.id));
    if (t.role == TensorRole::ExpertGate || t.role == TensorRole::ExpertUp) {
      EXPECT_EQ(format, "iq1_s") << t.name;
    }
    if (t.role == TensorRole::ExpertDown) {
      EXPECT_TRUE(format == "iq1_s" || format == "iq2_xxs") << t.name << " " << format;
    }
  }
  options.imatrix = nullptr;
  EXPECT_THROW(make_plan(*source, options), Error);
}

// The types ggml quantizes only with importance weights are candidates only for tensors the importance
// matrix covers; with one, a tight budget takes the IQ types.
TEST(PlanMoe, ImatrixOnlyTypesNeedTheImportanceMatrix) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "deepseek.gguf", {.style = MoeStyle::deepseek, .layers = 3, .dense_layers = 1});
  write_test_imatrix(dir / "imatrix.gguf", dir / "deepseek.gguf");
  const auto imatrix = ImportanceMatrix::load(dir / "imatrix.gguf");
  const auto source = ModelSource::open(dir / "deepseek.gguf");
  for (const ImportanceMatrix* im : {static_cast<const ImportanceMatrix*>(nullptr), &imatrix}) {
    const Plan plan = make_plan(*source, {.target_bpw = 2.2, .imatrix = im});
    EXPECT_LE(plan.achieved_bpw, 2.2);
    int imatrix_only_options = 0, iq_chosen = 0;
    for (const auto& t : plan.tensors) {
      const bool covered = im && im->find(t.name);
      for (const auto& o : t.options) {
        const GgmlType type = *format_info(o.format.id).ggml;
        if (!ggml_requires_imatrix(type)) continue;
        ++imatrix_only_options;
        EXPECT_TRUE(covered) << t.name << " " << format_name(o.format.id);
      }
      if (t.quantized && format_name(t.format.id).starts_with("iq") && !format_name(t.format.id).starts_with("iq4")) ++iq_chosen;
    }
    if (im) {
      EXPECT_GT(imatrix_only_options, 0);
      EXPECT_GT(iq_chosen, 0);
    } else {
      EXPECT_EQ(imatrix_only_options, 0);
    }
  }
}

}  // namespace
}  // namespace lowbit
