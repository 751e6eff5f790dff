// Hugging Face -> GGUF against llama.cpp's convert_hf_to_gguf.py, on small random checkpoints built
// from the published configs of Llama-3.1-8B, Llama-3.2-1B, Mistral-7B-v0.3, Qwen2.5-7B (and its YaRN
// variant), Qwen3-8B and SmolLM2 (tests/interop/hf_checkpoints.py): every metadata key, every tensor's
// name, type and shape, and Llama 3's rope_freqs.weight equal what the converter wrote
// (tests/data/hf_config, made by tests/interop/make_hf_config_fixtures.py). Then lowbit's forward pass
// on converted RoPE-scaled checkpoints (llama3, linear, yarn) against transformers on the same weights.
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/model/llama.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/python.h"

namespace lowbit {
namespace {

using nlohmann::json;

std::optional<std::filesystem::path> default_model() {
  const char* path = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!path || !*path || !std::filesystem::exists(path)) return std::nullopt;
  return std::filesystem::path(path);
}

// Writes checkpoint `name` (with SmolLM2's tokenizer, as the fixtures were made) and converts it with
// lowbit to an all-f32 GGUF, as `convert_hf_to_gguf.py --outtype f32` writes.
std::filesystem::path convert(const std::string& name, const test::TempDir& dir) {
  int status = 0;
  const auto out = test::run_command(test::python() + " " + test::interop_script("hf_checkpoints.py") + " " + name + " " +
                                         (dir / "model").string() + " " + default_model()->string() + " 2>&1",
                                     &status);
  EXPECT_EQ(status, 0) << out;
  GgufQuantizeOptions options;
  options.selection = {.default_type = GgmlType::F32};
  quantize_to_gguf(*ModelSource::open(dir / "model"), dir / "model.gguf", options);
  return dir / "model.gguf";
}

// general.* names and describes the file (name, size label, file type, quantization version): each
// tool writes its own. Everything else must be equal.
bool compared(const std::string& key) { return !key.starts_with("general.") || key == "general.architecture"; }

class HfConfigParity : public testing::TestWithParam<std::string> {};

TEST_P(HfConfigParity, MetadataAndTensorsEqualLlamaCppConverter) {
  REQUIRE_PYTHON_MODULES("numpy, safetensors, gguf");
  if (!default_model()) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL (SmolLM2's tokenizer is the checkpoints' tokenizer)";
  std::ifstream in(std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests" / "data" / "hf_config" / (GetParam() + ".json"));
  ASSERT_TRUE(in) << "no fixture for " << GetParam();
  const json expected = json::parse(in)["summary"];
  test::TempDir dir;
  const auto gguf_path = convert(GetParam(), dir);
  const json got = test::run_interop_json("gguf_summary.py", gguf_path.string());
  ASSERT_FALSE(got.is_null());

  int keys = 0;
  for (const auto& [key, value] : expected["kv"].items()) {
    if (!compared(key)) continue;
    ++keys;
    if (!got["kv"].contains(key)) {
      ADD_FAILURE() << GetParam() << ": lowbit writes no " << key << " (llama.cpp: " << value.dump() << ")";
      continue;
    }
    EXPECT_EQ(got["kv"][key], value) << GetParam() << ": " << key;
  }
  for (const auto& [key, value] : got["kv"].items())
    if (compared(key) && !expected["kv"].contains(key)) ADD_FAILURE() << GetParam() << ": lowbit writes " << key << " = " << value.dump() << ", llama.cpp does not";
  EXPECT_GT(keys, 15);
  EXPECT_EQ(got["tensors"], expected["tensors"]) << GetParam();

  // rope_freqs.weight: the converter computes it with torch in float32; equal to the last bit or
  // within one float32 rounding where the pow() implementations differ.
  ASSERT_EQ(got["rope_freqs"].is_null(), expected["rope_freqs"].is_null()) << GetParam();
  if (expected["rope_freqs"].is_null()) return;
  const auto want = expected["rope_freqs"]["values"].get<std::vector<double>>(), have = got["rope_freqs"]["values"].get<std::vector<double>>();
  ASSERT_EQ(have.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(have[i], want[i], 2e-7 * std::abs(want[i])) << GetParam() << " rope_freqs[" << i << "]";
  std::cout << "[ parity   ] " << GetParam() << ": " << keys << " keys, " << expected["tensors"].size() << " tensors, rope_freqs checksum "
            << (got["rope_freqs"]["sha256"] == expected["rope_freqs"]["sha256"] ? "identical" : "differs (values within 1 ulp)") << "\n";
}

// One test per fixture in tests/data/hf_config (make_hf_config_fixtures.py writes one per checkpoint).
std::vector<std::string> fixture_names() {
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests" / "data" / "hf_config"))
    if (entry.path().extension() == ".json") names.push_back(entry.path().stem().string());
  std::ranges::sort(names);
  return names;
}

INSTANTIATE_TEST_SUITE_P(HfConfig, HfConfigParity, testing::ValuesIn(fixture_names()),
                         [](const testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

template <class T>
void write_binary(const std::filesystem::path& path, const std::vector<T>& values) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(T)));
}

class HfRopeAgreement : public testing::TestWithParam<std::string> {};

// 128 positions: past the 64-token original context the *-short configs declare, so the scaling
// changes the logits by far more than the tolerance (the script measures the unscaled model too).
TEST_P(HfRopeAgreement, EvalAgreesWithTransformers) {
  REQUIRE_PYTHON_MODULES("numpy, safetensors, gguf, transformers, torch");
  if (!default_model()) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL (SmolLM2's tokenizer is the checkpoints' tokenizer)";
  test::TempDir dir;
  const auto model = LlamaModel::load(convert(GetParam(), dir));
  std::vector<int32_t> tokens(128);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919 + 13) % 49152);
  write_binary(dir / "tokens.i32", tokens);
  write_binary(dir / "logits.f32", model->forward(tokens));
  const auto r = test::run_interop_json("hf_logits_check.py", (dir / "model").string() + " " + (dir / "tokens.i32").string() + " " +
                                                                  (dir / "logits.f32").string() + " --unscaled");
  ASSERT_FALSE(r.is_null());
  // bf16 tolerance: 2^-8 of the largest logit (both sides compute in float32 over the same weights).
  const double tolerance = std::max(1.0, r["max_abs_logit"].get<double>()) / 256;
  EXPECT_LE(r["max_abs_diff"].get<double>(), tolerance) << r.dump();
  EXPECT_GT(r["unscaled_max_abs_diff"].get<double>(), 10 * tolerance) << "the scaling does not show in the logits: " << r.dump();
  std::cout << "[ rope     ] " << GetParam() << " vs " << r["class"].get<std::string>() << " (transformers " << r["transformers"].get<std::string>()
            << "): max |Δlogit| " << r["max_abs_diff"] << " (tolerance " << tolerance << "); without the scaling " << r["unscaled_max_abs_diff"] << "\n";
}

INSTANTIATE_TEST_SUITE_P(HfConfig, HfRopeAgreement, testing::Values("llama3-scaled-short", "llama-linear-short", "qwen2-yarn-short"),
                         [](const testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name)
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           return name;
                         });

// Back from GGUF to a Hugging Face directory, the RoPE scaling is config.json's again: Llama 3's
// recovered from rope_freqs.weight, YaRN from its keys.
TEST(HfConfig, ExportWritesTheRopeScalingBack) {
  REQUIRE_PYTHON_MODULES("numpy, safetensors, gguf");
  if (!default_model()) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL (SmolLM2's tokenizer is the checkpoints' tokenizer)";
  for (const auto& [name, expected] : std::vector<std::pair<std::string, json>>{
           {"llama-3.1-8b", {{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                             {"original_max_position_embeddings", 8192}}},
           {"qwen2.5-7b-yarn", {{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 32768}}}}) {
    test::TempDir dir;
    export_gguf_to_hf(*ModelSource::open(convert(name, dir)), dir / "back", DType::f32);
    std::ifstream in(dir / "back" / "config.json");
    EXPECT_EQ(json::parse(in)["rope_scaling"], expected) << name;
  }
}

// Fields lowbit cannot honour are refused, naming config.json and the field.
TEST(HfConfig, RefusesWhatItCannotConvert) {
  test::TempDir dir;
  const std::string base = R"("architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4,
    "num_key_value_heads": 2, "num_hidden_layers": 1, "max_position_embeddings": 256, "vocab_size": 300, "tie_word_embeddings": true)";
  nlohmann::json tokenizer = {{"model", {{"type", "BPE"}, {"vocab", {{"a", 0}}}, {"merges", json::array()}}}};
  for (const auto& [extra, field] : std::vector<std::pair<std::string, std::string>>{
           {R"("rope_scaling": {"rope_type": "dynamic", "factor": 2.0})", "rope_type"},
           {R"("rope_parameters": {"rope_type": "longrope", "rope_theta": 10000.0})", "rope_parameters.rope_type"},
           {R"("rope_parameters": {"full_attention": {"rope_theta": 1e4}, "sliding_attention": {"rope_theta": 1e4}})", "sliding_attention"},
           {R"("partial_rotary_factor": 0.5)", "partial_rotary_factor"},
           {R"("mlp_bias": true)", "mlp_bias"},
           {R"("attention_bias": true)", "attention_bias"},
           {R"("layer_types": ["full_attention", "sliding_attention"])", "layer_types[1]"},
           {R"("rope_scaling": {"rope_type": "yarn", "factor": 4.0})", "original_max_position_embeddings"},
       }) {
    const auto model = dir / "m";
    std::filesystem::create_directories(model);
    std::ofstream(model / "config.json") << "{" << base << ", " << extra << "}";
    std::ofstream(model / "tokenizer.json") << tokenizer.dump();
    // An empty safetensors file (8-byte header length, "{}" padded to 8): the checkpoint reader asks
    // for weights before config.json is read.
    std::ofstream(model / "model.safetensors", std::ios::binary).write("\x08\0\0\0\0\0\0\0{}      ", 16);
    try {
      ModelSource::open(model);
      ADD_FAILURE() << "accepted " << extra;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace lowbit
