// Token ids identical to llama.cpp's: each fixture in tests/data/tokenizer/ holds texts and the ids
// llama.cpp gave them (made by tests/interop/make_tokenizer_fixtures.py).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdlib>
#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/tokenizer.h"
#include "support/paths.h"

namespace lowbit {
namespace {

using nlohmann::json;

std::filesystem::path fixture_dir() { return std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests" / "data" / "tokenizer"; }

json read_fixture(const std::string& name) {
  std::ifstream in(fixture_dir() / (name + ".json"));
  if (!in) throw std::runtime_error("no fixture " + name);
  return json::parse(in);
}

std::vector<gguf::KeyValue> metadata_of(const std::filesystem::path& path) { return gguf::File(path).metadata(); }

// The default model lives in the user's cache; CI and developers point LOWBIT_DEFAULT_MODEL at it.
std::optional<std::filesystem::path> default_model() {
  const char* path = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!path || !*path || !std::filesystem::exists(path)) return std::nullopt;
  return std::filesystem::path(path);
}

std::vector<gguf::KeyValue> with_pre_tokenizer(std::vector<gguf::KeyValue> metadata, const std::string& pre) {
  for (auto& kv : metadata)
    if (kv.key == "tokenizer.ggml.pre") kv.value = {pre};
  return metadata;
}

// Every case of the fixture, ids compared exactly, and where the fixture has llama_detokenize's text
// of those ids, decode compared with it; failures name the text.
void expect_fixture_matches(const Tokenizer& tokenizer, const std::string& name) {
  const json fixture = read_fixture(name);
  size_t identical = 0, total = 0, decoded_identical = 0, decoded_total = 0;
  for (const auto& c : fixture["cases"]) {
    const std::string text = c["text"];
    const auto expected = c["ids"].get<std::vector<int32_t>>();
    const auto ids = tokenizer.encode(text, c["add_special"], c["parse_special"]);
    ++total;
    if (ids == expected) {
      ++identical;
    } else {
      ADD_FAILURE() << name << ": ids differ for " << json(text).dump() << " (add_special " << c["add_special"]
                    << ", parse_special " << c["parse_special"] << ")\n  lowbit:    " << json(ids).dump()
                    << "\n  llama.cpp: " << json(expected).dump();
    }
    if (!c.contains("detokenized")) continue;
    for (int mode = 0; mode < 4; ++mode) {  // (remove_special, render_special) = FF, FT, TF, TT
      const std::string want = c["detokenized"][mode];
      const std::string got = tokenizer.decode(expected, mode >= 2, mode % 2 == 1);
      ++decoded_total;
      if (got == want) ++decoded_identical;
      else ADD_FAILURE() << name << ": decode differs for " << json(expected).dump() << " mode " << mode
                         << "\n  lowbit:    " << json(got).dump() << "\n  llama.cpp: " << json(want).dump();
    }
  }
  EXPECT_GT(total, 100u);
  std::cout << "[ fixture  ] " << name << ": ids " << identical << " of " << total << " identical, decode "
            << decoded_identical << " of " << decoded_total << "\n";
}

TEST(Tokenizer, Stories260KMatchesLlamaCpp) {
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(test::shared_data_dir() / "stories260K.gguf"));
  EXPECT_EQ(tokenizer.kind(), Tokenizer::Kind::SentencePiece);
  EXPECT_EQ(tokenizer.vocab_size(), 512u);
  EXPECT_EQ(tokenizer.bos_id(), 1);
  EXPECT_EQ(tokenizer.eos_id(), 2);
  expect_fixture_matches(tokenizer, "stories260K");
}

TEST(Tokenizer, ByteVocabularyMatchesLlamaCpp) {
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf"));
  expect_fixture_matches(tokenizer, "lowbit-bytes-12M");
  // The vocabulary's rule: BOS, "▁" for the leading space and each space, UTF-8 byte b -> 3 + b.
  EXPECT_EQ(tokenizer.encode("a b"), (std::vector<int32_t>{1, 229, 153, 132, 100, 229, 153, 132, 101}));
}

TEST(Tokenizer, TinyLlamaMatchesLlamaCpp) {
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf"));
  expect_fixture_matches(tokenizer, "tiny-llama-f32");
}

TEST(Tokenizer, DefaultModelMatchesLlamaCpp) {
  const auto path = default_model();
  if (!path) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL to SmolLM2-135M-Instruct's GGUF (scripts/fetch-default-model.sh)";
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(*path));
  EXPECT_EQ(tokenizer.kind(), Tokenizer::Kind::BytePairEncoding);
  EXPECT_EQ(tokenizer.pre_tokenizer(), "smollm");
  EXPECT_EQ(tokenizer.vocab_size(), 49152u);
  EXPECT_FALSE(tokenizer.adds_bos());
  EXPECT_EQ(tokenizer.encode("<|im_start|>", false, true), std::vector<int32_t>{*tokenizer.find_token("<|im_start|>")});
  expect_fixture_matches(tokenizer, "smollm2-135m");
}

// SmolLM2's vocabulary and merges under other pre-tokenizers: llama.cpp tokenized tensor-less copies
// of the default model whose tokenizer.ggml.pre was replaced.
class PreTokenizerVariant : public testing::TestWithParam<std::string> {};

TEST_P(PreTokenizerVariant, MatchesLlamaCpp) {
  const auto path = default_model();
  if (!path) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL to SmolLM2-135M-Instruct's GGUF (scripts/fetch-default-model.sh)";
  const auto tokenizer = Tokenizer::from_gguf_metadata(with_pre_tokenizer(metadata_of(*path), GetParam()));
  expect_fixture_matches(tokenizer, "smollm2-vocab-" + GetParam());
}

INSTANTIATE_TEST_SUITE_P(Tokenizer, PreTokenizerVariant, testing::Values("llama-bpe", "qwen2", "gpt-2"),
                         [](const testing::TestParamInfo<std::string>& param) {
                           std::string name = param.param;
                           for (char& c : name)
                             if (c == '-') c = '_';
                           return name;
                         });

const std::vector<std::string> kRoundTripTexts = {
    "Hello world", " leading space", "tabs\tand\nnewlines\r\n", "naïve café 日本語 😀", "1234567890", "  two  spaces  ", "",
};

TEST(Tokenizer, DecodeInvertsEncodeForSentencePiece) {
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(test::shared_data_dir() / "stories260K.gguf"));
  for (const auto& text : kRoundTripTexts) {
    // Without BOS the prefixed space comes off the first piece again.
    EXPECT_EQ(tokenizer.decode(tokenizer.encode(text, false)), text);
    // With BOS, llama_detokenize keeps that space even when it drops the BOS (remove_special).
    if (!text.empty()) {
      EXPECT_EQ(tokenizer.decode(tokenizer.encode(text, true), true), " " + text);
    }
  }
}

TEST(Tokenizer, DecodeInvertsEncodeForByteLevelBpe) {
  const auto path = default_model();
  if (!path) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL to SmolLM2-135M-Instruct's GGUF (scripts/fetch-default-model.sh)";
  const auto tokenizer = Tokenizer::from_gguf_metadata(metadata_of(*path));
  for (const auto& text : kRoundTripTexts) EXPECT_EQ(tokenizer.decode(tokenizer.encode(text)), text);
  const std::string chat = "<|im_start|>user\nHi!<|im_end|>\n";
  const auto ids = tokenizer.encode(chat, false, true);
  EXPECT_EQ(tokenizer.decode(ids, false, true), chat);
  EXPECT_EQ(tokenizer.decode(ids), "user\nHi!\n");  // control tokens vanish unless rendered
  EXPECT_EQ(tokenizer.token_piece(*tokenizer.find_token("Ġthe")), " the");
}

TEST(Tokenizer, RejectsWhatItDoesNotImplement) {
  auto metadata = metadata_of(test::shared_data_dir() / "stories260K.gguf");
  for (auto& kv : metadata)
    if (kv.key == "tokenizer.ggml.model") kv.value = {std::string("bert")};
  EXPECT_THROW(Tokenizer::from_gguf_metadata(metadata), Error);
  EXPECT_THROW(Tokenizer::from_gguf_metadata({}), Error);
}

// Not a test of speed (no assertion on time): prints how long 1 MB of text takes, to notice regressions.
TEST(Tokenizer, ThroughputReport) {
  std::ifstream in(test::shared_data_dir() / "wikitext2_test_hf_nonempty_crlf.raw", std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  auto report = [&](const Tokenizer& tokenizer, const char* name) {
    const auto start = std::chrono::steady_clock::now();
    const auto ids = tokenizer.encode(text);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::cout << "[ speed    ] " << name << ": " << text.size() << " bytes -> " << ids.size() << " tokens in " << seconds << " s\n";
    EXPECT_FALSE(ids.empty());
  };
  report(Tokenizer::from_gguf_metadata(metadata_of(test::shared_data_dir() / "stories260K.gguf")), "stories260K (SPM)");
  if (const auto path = default_model()) report(Tokenizer::from_gguf_metadata(metadata_of(*path)), "SmolLM2 (BPE)");
}

}  // namespace
}  // namespace lowbit
