// Hugging Face -> GGUF for mixture-of-experts checkpoints against llama.cpp's convert_hf_to_gguf.py.
// Small random Mixtral, Qwen2-MoE and Qwen3-MoE checkpoints (tests/support/tiny_moe_model.h) are loaded
// and saved by transformers in both of its layouts, per-expert tensors and fused 3-D experts
// (tests/interop/hf_moe_layouts.py), then converted to bf16 GGUFs by lowbit and by the converter: every
// metadata key but general.*, every tensor's name, type and shape, and every tensor's bytes are equal.
// The fused layout converts to the same file as the per-expert one; llama.cpp's converter reads it for
// the Qwen classes but not for Mixtral, whose fused checkpoint lowbit still converts. llama-perplexity
// then loads and runs lowbit's file.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/format.h"
#include "lowbit/io/gguf.h"
#include "lowbit/pipeline/hf_tokenizer_export.h"
#include "lowbit/io/model_source.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/llama_cpp.h"
#include "support/paths.h"
#include "support/python.h"
#include "support/tiny_moe_model.h"

namespace lowbit {
namespace {

using nlohmann::json;
using test::MoeStyle;

std::optional<std::filesystem::path> default_model() {
  const char* path = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!path || !*path || !std::filesystem::exists(path)) return std::nullopt;
  return std::filesystem::path(path);
}

// llama.cpp's source tree: scripts/llama-cpp-tools.sh unpacks it into <root>/src and builds the tools
// LOWBIT_LLAMA_CPP_BIN names into <root>/build/bin.
std::filesystem::path llama_cpp_source() {
  const auto bin = test::llama_cpp_bin();
  return bin.empty() ? bin : bin.parent_path().parent_path() / "src";
}

#define REQUIRE_LLAMA_CPP_CONVERTER()                                                                            \
  if (!std::filesystem::exists(llama_cpp_source() / "convert_hf_to_gguf.py")) {                                  \
    if (std::getenv("LOWBIT_REQUIRE_INTEROP")) FAIL() << "no convert_hf_to_gguf.py beside LOWBIT_LLAMA_CPP_BIN"; \
    GTEST_SKIP() << "set LOWBIT_LLAMA_CPP_BIN to llama.cpp's tools (scripts/llama-cpp-tools.sh unpacks its tree)"; \
  }

struct Case {
  std::string name;
  test::TinyMoe model;
};

// SmolLM2's vocabulary (the converter must recognise the tokenizer), tied to the output layer to keep
// the files small (but Qwen2-MoE's: llama.cpp's qwen2moe needs output.weight); experts narrower than
// the dense width and shared experts wider, so that every width lands in its own key and no shape is square.
const Case kCases[] = {
    {"mixtral", {.style = MoeStyle::mixtral, .layers = 2, .experts = 3, .ff = 512, .vocab = 49152, .tie_embeddings = true}},
    {"qwen2_moe", {.style = MoeStyle::qwen2_moe, .layers = 2, .experts = 3, .ff = 768, .vocab = 49152, .expert_ff = 512, .shared_ff = 1024,
                   .attention_bias = true}},
    {"qwen3_moe", {.style = MoeStyle::qwen3_moe, .layers = 2, .experts = 3, .ff = 768, .vocab = 49152, .expert_ff = 512, .tie_embeddings = true}},
};

// A metadata value as text, its type included (u32 2 and i32 2 differ).
std::string text_of(const gguf::Value& value) {
  std::string out = std::string(gguf::value_type_name(value.type())) + ":";
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, gguf::Array>) {
          for (const auto& item : v.items) out += text_of(item) + ",";
        } else if constexpr (std::is_same_v<T, std::string>) {
          out += v;
        } else {
          out += fmt::format("{}", v);
        }
      },
      value.data);
  return out;
}

// general.* names and describes the file: each tool writes its own.
bool compared(const std::string& key) { return !key.starts_with("general.") || key == "general.architecture"; }

// Two GGUFs hold the same metadata (but general.*) and the same tensors: names, types, shapes, bytes.
void expect_same_file(const std::filesystem::path& want_path, const std::filesystem::path& got_path, const std::string& what) {
  const gguf::File want(want_path), got(got_path);
  std::map<std::string, std::string> wanted;
  for (const auto& kv : want.metadata())
    if (compared(kv.key)) wanted[kv.key] = text_of(kv.value);
  for (const auto& kv : got.metadata()) {
    if (!compared(kv.key)) continue;
    const auto it = wanted.find(kv.key);
    if (it == wanted.end()) {
      ADD_FAILURE() << what << ": writes " << kv.key << " = " << text_of(kv.value).substr(0, 200) << ", which the other does not";
      continue;
    }
    EXPECT_EQ(text_of(kv.value).substr(0, 200), it->second.substr(0, 200)) << what << ": " << kv.key;
    EXPECT_TRUE(text_of(kv.value) == it->second) << what << ": " << kv.key;
    wanted.erase(it);
  }
  for (const auto& [key, value] : wanted) ADD_FAILURE() << what << ": no " << key << " (want " << value.substr(0, 200) << ")";

  std::map<std::string, const gguf::TensorInfo*> tensors;
  for (const auto& t : want.tensors()) tensors[t.name] = &t;
  for (const auto& t : got.tensors()) {
    const auto it = tensors.find(t.name);
    if (it == tensors.end()) {
      ADD_FAILURE() << what << ": writes " << t.name << ", which the other does not";
      continue;
    }
    EXPECT_EQ(ggml_type_name(t.type), ggml_type_name(it->second->type)) << what << ": " << t.name;
    EXPECT_EQ(t.ne, it->second->ne) << what << ": " << t.name;
    EXPECT_TRUE(std::ranges::equal(got.data(t), want.data(*it->second))) << what << ": " << t.name << "'s bytes differ";
    tensors.erase(it);
  }
  for (const auto& [name, t] : tensors) ADD_FAILURE() << what << ": no " << name;
}

class HfMoeParity : public testing::TestWithParam<Case> {};

TEST_P(HfMoeParity, BothLayoutsConvertAsLlamaCppConverts) {
  REQUIRE_PYTHON_MODULES("numpy, safetensors, torch, transformers");
  if (!default_model()) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL (SmolLM2's tokenizer is the checkpoints' tokenizer)";
  REQUIRE_LLAMA_CPP_CONVERTER();
  const test::TinyMoe& m = GetParam().model;
  const bool mixtral = m.style == MoeStyle::mixtral;
  test::TempDir dir;
  test::write_tiny_moe_hf(dir / "source", m);
  // SmolLM2's tokenizer, whose pre-tokenizer llama.cpp's converter recognises; both converters read the same files.
  write_hf_tokenizer(gguf::File(*default_model()).metadata(), dir / "source");
  const json saved =
      test::run_interop_json("hf_moe_layouts.py", (dir / "source").string() + " " + dir.path().string() + " " + llama_cpp_source().string());
  ASSERT_FALSE(saved.is_null());

  // What transformers writes: by default one tensor per expert (the hub's names); fused, each layer's
  // experts in two 3-D tensors, gate_up_proj [experts, 2 * ff, hidden] and down_proj [experts, hidden, ff].
  const int64_t h = m.hidden, ff = m.expert_width(), e = m.experts, last = m.layers - 1;
  const std::string L = "model.layers." + std::to_string(last) + ".";
  const json& per_expert = saved["layouts"]["per-expert"]["tensors"];
  const json& fused = saved["layouts"]["fused"]["tensors"];
  const std::string one_expert = mixtral ? L + "block_sparse_moe.experts.2.w3.weight" : L + "mlp.experts.2.up_proj.weight";
  EXPECT_EQ(per_expert.value(one_expert, json()), json({ff, h})) << per_expert.dump();
  EXPECT_EQ(fused.value(L + "mlp.experts.gate_up_proj", json()), json({e, 2 * ff, h})) << fused.dump();
  EXPECT_EQ(fused.value(L + "mlp.experts.down_proj", json()), json({e, h, ff})) << fused.dump();
  EXPECT_FALSE(fused.contains(one_expert));

  ASSERT_TRUE(saved["layouts"]["per-expert"]["converted"]) << saved.dump();
  const auto llama_cpp_path = dir / "per-expert.llama-cpp.gguf";
  const gguf::File llama_cpp(llama_cpp_path);
  const auto count = std::ranges::find_if(llama_cpp.metadata(), [](const gguf::KeyValue& kv) { return kv.key.ends_with(".expert_count"); });
  ASSERT_NE(count, llama_cpp.metadata().end());
  EXPECT_EQ(count->value.as_int(), e);
  int stacked = 0;
  for (const auto& t : llama_cpp.tensors()) stacked += t.ne.size() == 3 && t.ne[2] == e;
  EXPECT_EQ(stacked, 3 * m.layers);

  for (const std::string layout : {"per-expert", "fused"}) {
    GgufQuantizeOptions options;
    options.selection = {.default_type = GgmlType::BF16};  // as --outtype bf16: matrices bf16, vectors and routers f32
    const auto lowbit_path = dir / (layout + ".lowbit.gguf");
    quantize_to_gguf(*ModelSource::open(dir / layout), lowbit_path, options);
    expect_same_file(llama_cpp_path, lowbit_path, GetParam().name + " " + layout + ": lowbit vs llama.cpp's per-expert conversion");
    const json& converted = saved["layouts"][layout];
    if (converted["converted"]) {
      expect_same_file(dir / (layout + ".llama-cpp.gguf"), lowbit_path, GetParam().name + " " + layout + ": lowbit vs llama.cpp");
    } else {  // llama.cpp's converter maps no fused Mixtral experts; every other conversion it does
      EXPECT_TRUE(mixtral && layout == "fused") << converted.dump();
    }
  }
  // llama.cpp runs what lowbit wrote (where scripts/llama-cpp-tools.sh built its tools).
  const auto perplexity = test::llama_cpp_bin() / "llama-perplexity";
  std::string ppl = "not run (no llama-perplexity)";
  if (std::filesystem::exists(perplexity)) {
    std::ifstream in(test::shared_data_dir() / "tinystories_valid_first1000.txt", std::ios::binary);
    std::string text(6000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    std::ofstream(dir / "text.txt", std::ios::binary).write(text.data(), in.gcount());
    int status = 0;
    const std::string out = test::run_llama_cpp_tool(perplexity.string() + " -m " + (dir / "per-expert.lowbit.gguf").string() + " -f " +
                                                         (dir / "text.txt").string() + " --ctx-size 64 --chunks 2 -t 2",
                                                     "Final estimate: PPL = ", &status);
    const auto at = out.find("Final estimate: PPL = ");
    ASSERT_EQ(status, 0) << out;
    ASSERT_NE(at, std::string::npos) << out;
    const double value = std::stod(out.substr(at + 22));
    EXPECT_TRUE(std::isfinite(value) && value > 1) << out;
    ppl = fmt::format("{:.0f} (random weights, {} tokens)", value, m.vocab);
  }
  std::cout << "[ parity   ] " << GetParam().name << " (" << saved["class"].get<std::string>() << ", transformers "
            << saved["transformers"].get<std::string>() << "): " << llama_cpp.metadata().size() << " keys, " << llama_cpp.tensors().size()
            << " tensors (" << stacked << " stacked); fused layout "
            << (saved["layouts"]["fused"]["converted"] ? "also converted by llama.cpp" : "refused by llama.cpp's converter")
            << "; llama-perplexity on lowbit's file: " << ppl << "\n";
}

INSTANTIATE_TEST_SUITE_P(HfMoe, HfMoeParity, testing::ValuesIn(kCases), [](const testing::TestParamInfo<Case>& p) { return p.param.name; });

// A one-token tokenizer.json: enough for a checkpoint whose tokenizer no test reads.
void write_stub_tokenizer(const std::filesystem::path& dir) {
  const json tokenizer = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}};
  std::ofstream(dir / "tokenizer.json") << tokenizer.dump();
}

// Each stacked tensor is its experts in order, expert E at index E of the outermost dimension (with 12
// experts, safetensors lists "experts.10" before "experts.2"): the values the checkpoint holds, as bf16
// holds them, neither read in place nor kept beyond the call that assembles them.
TEST(HfMoe, ExpertsStackInTheirOrder) {
  for (const MoeStyle style : {MoeStyle::qwen2_moe, MoeStyle::qwen3_moe, MoeStyle::mixtral}) {
    test::TempDir dir;
    const test::TinyMoe m{.style = style, .layers = 2, .experts = 12, .ff = 256, .expert_ff = 512};
    test::write_tiny_moe_hf(dir / "hf", m);
    write_stub_tokenizer(dir / "hf");
    const auto source = ModelSource::open(dir / "hf");
    const auto tensors = test::tiny_moe_tensors(m);
    std::map<std::string, std::vector<float>> expected;  // GGUF name -> its values, experts one after another
    std::map<std::string, Shape> shapes;
    for (size_t i = 0; i < tensors.size(); ++i) {
      const auto& t = tensors[i];
      std::vector<float> values = test::tiny_moe_values(t, i);
      std::vector<uint16_t> bf16(values.size());
      convert_from_f32(values.data(), DType::bf16, bf16.data(), values.size());
      convert_to_f32(DType::bf16, bf16.data(), values.data(), values.size());
      auto& all = expected[t.gguf];
      all.insert(all.end(), values.begin(), values.end());
      shapes[t.gguf] = Shape(t.shape.rbegin(), t.shape.rend());
      if (t.expert >= 0) shapes[t.gguf].push_back(m.experts);
    }
    ASSERT_EQ(source->tensors().size(), expected.size());
    int stacked = 0;
    for (const auto& t : source->tensors()) {
      ASSERT_TRUE(expected.contains(t.name)) << t.name;
      EXPECT_EQ(t.ne, shapes[t.name]) << t.name;
      // Mixtral's Q/K rows are permuted as Llama's (the dense tests check that).
      const bool permuted = style == MoeStyle::mixtral && (t.name.ends_with("attn_q.weight") || t.name.ends_with("attn_k.weight"));
      if (!permuted) {
        EXPECT_EQ(source->load_f32(t), expected[t.name]) << t.name;
      }
      const bool is_stack = t.ne.size() == 3;
      stacked += is_stack;
      EXPECT_EQ(source->raw(t).empty(), is_stack || permuted) << t.name;  // else read in place
    }
    EXPECT_EQ(stacked, 3 * m.layers);
  }
}

// What llama.cpp's qwen2moe / qwen3moe cannot hold, and experts that do not add up to config.json's count,
// are refused naming the file and the field or tensor.
TEST(HfMoe, RefusesWhatItCannotConvert) {
  struct Refusal {
    test::TinyMoe model;
    json config_change;
    std::string message;
  };
  const std::vector<Refusal> refusals = {
      {{.style = MoeStyle::qwen2_moe, .layers = 2, .dense_layers = 1}, json::object(), "mlp_only_layers"},
      {{.style = MoeStyle::qwen3_moe}, {{"decoder_sparse_step", 2}}, "decoder_sparse_step"},
      {{.style = MoeStyle::qwen2_moe, .experts = 4}, {{"num_experts", 5}}, "expert 4 of 5 is missing"},
      {{.style = MoeStyle::mixtral, .experts = 4}, {{"num_local_experts", 3}}, "expert 3, but config.json counts 3 experts"},
      {{.style = MoeStyle::deepseek, .layers = 2, .dense_layers = 1}, json::object(), "DeepseekV3ForCausalLM"},
  };
  for (const auto& r : refusals) {
    test::TempDir dir;
    test::write_tiny_moe_hf(dir / "hf", r.model);
    write_stub_tokenizer(dir / "hf");
    std::ifstream in(dir / "hf" / "config.json");
    json config = json::parse(in);
    config.update(r.config_change);
    std::ofstream(dir / "hf" / "config.json") << config.dump();
    try {
      ModelSource::open(dir / "hf");
      ADD_FAILURE() << "accepted: " << r.message;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(r.message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(dir.path().string()), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace lowbit
