// The model config, tokenizer and --kld-base readers refuse out-of-range values with the file and
// the key: each case here crashed (SIGFPE), ran silently wrong (a model of 0 layers, "perplexity
// nan") or allocated what a header claimed before these checks.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include "lowbit/core/error.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/perplexity.h"
#include "lowbit/model/tokenizer.h"
#include "support/gguf_edit.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::filesystem::path tiny_llama() { return test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf"; }

std::filesystem::path scratch(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("lowbit-model-config-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir / name;
}

// The error of loading tiny-llama with one metadata key changed; "" when it loads.
std::string load_error(const std::string& key, std::optional<gguf::Value> value) {
  const auto path = scratch("edited.gguf");
  test::copy_gguf_with(tiny_llama(), path, {{key, std::move(value)}});
  try {
    LlamaModel::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(ModelConfig, RefusesOutOfRangeHyperParameters) {
  ASSERT_EQ(load_error("general.name", gguf::Value{std::string("still valid")}), "");
  struct Case {
    std::string key;
    gguf::Value value;
    std::string says;
  };
  const Case cases[] = {
      {"llama.block_count", {uint32_t(0xFFFFFFFF)}, "4294967295 is out of range"},  // ran 0 layers, printed a perplexity
      {"llama.block_count", {int32_t(-1)}, "-1 is out of range"},
      {"llama.block_count", {uint32_t(0)}, "0 is out of range"},
      {"llama.attention.head_count", {uint32_t(0)}, "0 is out of range"},  // SIGFPE
      {"llama.attention.head_count", {uint32_t(6)}, "does not divide the width"},
      {"llama.attention.head_count_kv", {uint32_t(0)}, "0 is out of range"},
      {"llama.attention.head_count_kv", {uint32_t(3)}, "does not divide the head count"},
      {"llama.attention.head_count_kv", {uint32_t(8)}, "8 is out of range"},
      {"llama.embedding_length", {uint64_t(1) << 40}, "out of range"},
      {"llama.attention.layer_norm_rms_epsilon", {std::nanf("")}, "not a positive finite number"},  // "perplexity nan"
      {"llama.attention.layer_norm_rms_epsilon", {0.0f}, "not a positive finite number"},
      {"llama.attention.layer_norm_rms_epsilon", {double(1e-5)}, "is of type f64"},  // was silently the default
      {"llama.rope.freq_base", {std::numeric_limits<float>::infinity()}, "not a positive finite number"},
      {"llama.rope.freq_base", {-10000.0f}, "not a positive finite number"},
      {"llama.feed_forward_length", {std::string("8")}, "is of type str"},
  };
  for (const auto& c : cases) {
    const std::string what = load_error(c.key, c.value);
    EXPECT_NE(what.find("edited.gguf"), std::string::npos) << c.key << ": " << what;
    EXPECT_NE(what.find("key '" + c.key + "'"), std::string::npos) << c.key << ": " << what;
    EXPECT_NE(what.find(c.says), std::string::npos) << c.key << ": " << what;
  }
}

TEST(ModelConfig, TokenizerErrorsNameTheFileAndCallAKeyAKey) {
  auto metadata = gguf::File(tiny_llama()).metadata();
  for (auto& kv : metadata)
    if (kv.key == "tokenizer.ggml.tokens") kv.value = gguf::Value{uint32_t(7)};
  try {
    Tokenizer::from_gguf_metadata(metadata, "/models/x.gguf");
    FAIL() << "accepted tokens that are not an array";
  } catch (const Error& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.find("/models/x.gguf: key 'tokenizer.ggml.tokens': "), 0u) << what;
    EXPECT_EQ(what.find("tensor"), std::string::npos) << what;
  }
}

TEST(ModelConfig, ByteTokensMustSpellTheirByte) {
  auto metadata = gguf::File(tiny_llama()).metadata();
  gguf::Array* types = nullptr;
  for (auto& kv : metadata)
    if (kv.key == "tokenizer.ggml.token_type") types = std::get_if<gguf::Array>(&kv.value.data);
  ASSERT_TRUE(types);
  // Token 0 typed as a byte: decoding it read std::stoi of its text (an uncaught std::invalid_argument).
  types->items[0] = gguf::Value{int32_t(6)};
  try {
    Tokenizer::from_gguf_metadata(metadata, "m.gguf");
    FAIL() << "accepted a byte token whose text is no byte";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("byte token 0"), std::string::npos) << e.what();
  }
}

// A --kld-base header: magic, n_ctx, n_vocab, n_chunk (no body).
std::filesystem::path logits_header(uint32_t n_ctx, int32_t n_vocab, int32_t n_chunk, size_t body) {
  const auto path = scratch("base.logits");
  std::ofstream out(path, std::ios::binary);
  out.write("_logits_", 8);
  out.write(reinterpret_cast<const char*>(&n_ctx), 4);
  out.write(reinterpret_cast<const char*>(&n_vocab), 4);
  out.write(reinterpret_cast<const char*>(&n_chunk), 4);
  out << std::string(body, '\0');
  return path;
}

TEST(ModelConfig, KldBaseHeaderIsBoundedByTheFile) {
  // n_vocab 2^31-1 overflowed int in the record size; a huge n_chunk times a huge record wraps 2^64.
  EXPECT_THROW(BaseLogits::load(logits_header(4, std::numeric_limits<int32_t>::max(), 1, 64)), Error);
  EXPECT_THROW(BaseLogits::load(logits_header(1 << 20, 1 << 24, std::numeric_limits<int32_t>::max(), 64)), Error);
  // A consistent file still loads: 1 chunk of 4 tokens, 1 record of (3 + 1 + 4) uint16 for n_vocab 3.
  const auto base = BaseLogits::load(logits_header(4, 3, 1, 16 + 16));
  EXPECT_EQ(base.predictions(), 1);
}

}  // namespace
}  // namespace lowbit
