// The tokenizer lowbit exports to a Hugging Face directory, loaded by transformers' AutoTokenizer: for
// every vocabulary family of the fixtures in tests/data/tokenizer (SentencePiece and byte-level BPE
// under each pre-tokenizer), the ids it gives equal llama.cpp's ids in the fixture, which lowbit's own
// Tokenizer gives too (tests/model/tokenizer_test.cpp).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "lowbit/io/gguf.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/hf_tokenizer_export.h"
#include "support/paths.h"
#include "support/python.h"

namespace lowbit {
namespace {

using nlohmann::json;

std::filesystem::path fixture(const std::string& name) {
  return std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests" / "data" / "tokenizer" / (name + ".json");
}

std::optional<std::filesystem::path> default_model() {
  const char* path = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!path || !*path || !std::filesystem::exists(path)) return std::nullopt;
  return std::filesystem::path(path);
}

void expect_transformers_matches(const std::vector<gguf::KeyValue>& metadata, const std::string& fixture_name) {
  test::TempDir dir;
  write_hf_tokenizer(metadata, dir.path());
  int status = 0;
  const auto out = test::run_command(test::python() + " " + test::interop_script("hf_tokenizer_check.py") + " " + dir.path().string() +
                                         " " + fixture(fixture_name).string() + " 2>&1",
                                     &status);
  ASSERT_EQ(status, 0) << out;
  const json result = json::parse(out.substr(out.find_last_of('\n', out.size() - 2) + 1));
  for (const auto& m : result["mismatches"])
    ADD_FAILURE() << fixture_name << ": transformers' ids differ for " << m["text"].dump() << " (add_special " << m["add_special"]
                  << ", parse_special " << m["parse_special"] << ")\n  transformers: " << m["hf"].dump()
                  << "\n  llama.cpp:    " << m["llama_cpp"].dump();
  EXPECT_GT(result["cases"].get<int>(), 100);
  std::cout << "[ hf tok   ] " << fixture_name << " (" << result["class"].get<std::string>() << "): " << result["identical"] << " of "
            << result["cases"] << " identical\n";
}

std::vector<gguf::KeyValue> metadata_of(const std::filesystem::path& path) { return gguf::File(path).metadata(); }

TEST(HfTokenizerExport, SentencePieceLoadsInTransformers) {
  REQUIRE_PYTHON_MODULES("transformers, tokenizers");
  expect_transformers_matches(metadata_of(test::shared_data_dir() / "stories260K.gguf"), "stories260K");
  expect_transformers_matches(metadata_of(test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf"), "lowbit-bytes-12M");
}

TEST(HfTokenizerExport, TinyLlamaLoadsInTransformers) {
  REQUIRE_PYTHON_MODULES("transformers, tokenizers");
  expect_transformers_matches(metadata_of(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf"), "tiny-llama-f32");
}

class HfTokenizerPreTokenizer : public testing::TestWithParam<std::string> {};

// SmolLM2's vocabulary under its own pre-tokenizer ("smollm") and those of Llama 3, Qwen2 and GPT-2.
TEST_P(HfTokenizerPreTokenizer, ByteLevelBpeLoadsInTransformers) {
  REQUIRE_PYTHON_MODULES("transformers, tokenizers");
  const auto path = default_model();
  if (!path) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL to SmolLM2-135M-Instruct's GGUF (scripts/fetch-default-model.sh)";
  auto metadata = metadata_of(*path);
  if (GetParam() == "smollm") return expect_transformers_matches(metadata, "smollm2-135m");
  for (auto& kv : metadata)
    if (kv.key == "tokenizer.ggml.pre") kv.value = {GetParam()};
  expect_transformers_matches(metadata, "smollm2-vocab-" + GetParam());
}

INSTANTIATE_TEST_SUITE_P(HfTokenizerExport, HfTokenizerPreTokenizer, testing::Values("smollm", "llama-bpe", "qwen2", "gpt-2"),
                         [](const testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

// tokenizer_config.json: the roles of the special tokens, the BOS rule and the chat template.
TEST(HfTokenizerExport, ConfigNamesSpecialTokensAndTemplate) {
  test::TempDir dir;
  auto metadata = metadata_of(test::shared_data_dir() / "stories260K.gguf");
  metadata.push_back({"tokenizer.chat_template", {std::string("{{ messages[0]['content'] }}")}});
  std::erase_if(metadata, [](const gguf::KeyValue& kv) { return kv.key == "tokenizer.ggml.padding_token_id"; });
  metadata.push_back({"tokenizer.ggml.padding_token_id", {uint32_t(0)}});
  write_hf_tokenizer(metadata, dir.path());
  std::ifstream in(dir / "tokenizer_config.json");
  const json config = json::parse(in);
  ASSERT_TRUE(config.contains("pad_token")) << config.dump();
  EXPECT_EQ(config["tokenizer_class"], "PreTrainedTokenizerFast");
  EXPECT_EQ(config["bos_token"], "<s>");
  EXPECT_EQ(config["eos_token"], "</s>");
  EXPECT_EQ(config["pad_token"], "<unk>");
  EXPECT_EQ(config["add_bos_token"], true);
  EXPECT_EQ(config["chat_template"], "{{ messages[0]['content'] }}");
}

}  // namespace
}  // namespace lowbit
