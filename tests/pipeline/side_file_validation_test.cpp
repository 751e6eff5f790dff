// The side files of a model directory (config.json, tokenizer.json, tokenizer_config.json), plan.json
// and bitsandbytes checkpoints: every value used is checked for type and range, and errors name the
// file and the key. Each case here crashed (SIGFPE, const operator[] on a missing key), allocated until
// OOM, ran silently wrong or printed a bare "[json.exception.type_error.302]" before.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/io/model_source.h"
#include "lowbit/pipeline/plan.h"
#include "support/paths.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

using nlohmann::json;

json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return json::parse(in);
}

void write_json(const std::filesystem::path& p, const json& j) { std::ofstream(p) << j.dump(); }

// The error message of opening `dir` as a model, or "" if it opens.
std::string open_error(const std::filesystem::path& dir) {
  try {
    ModelSource::open(dir);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

struct Edit {
  std::string key;
  json value;  // null: remove the key
  std::string says;
};

TEST(SideFiles, ConfigJsonValuesAreCheckedWithFileAndKey) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir.path());
  const json valid = read_json(dir / "config.json");
  ASSERT_EQ(open_error(dir.path()), "");
  const Edit edits[] = {
      {"num_attention_heads", 0, "0 is out of range"},  // SIGFPE in hidden_size / num_attention_heads
      {"num_attention_heads", "4", "is a string (expected an integer"},  // was [json.exception.type_error.302]
      {"num_attention_heads", 6, "does not divide hidden_size"},
      {"num_key_value_heads", 3, "does not divide num_attention_heads"},
      {"num_key_value_heads", 0, "0 is out of range"},
      {"num_hidden_layers", -1, "-1 is out of range"},  // was block_count 0xFFFFFFFF
      {"num_hidden_layers", 4294967295LL, "out of range"},
      {"vocab_size", 2147483648LL, "out of range"},  // the token list was padded to 2^31 entries
      {"vocab_size", 300, "model.embed_tokens.weight has shape"},
      {"rms_norm_eps", 0, "is not a positive f32"},
      {"rms_norm_eps", -1e-5, "is not a positive f32"},
      {"rope_theta", 1e300, "is not a positive f32"},  // inf as f32
      {"rope_theta", "10000", "is a string"},  // was type_error.302
      {"hidden_size", nullptr, "is missing"},
      {"head_dim", 3.5, "is a fractional number"},
      {"architectures", "LlamaForCausalLM", "is a string (expected an array"},
  };
  for (const auto& e : edits) {
    json config = valid;
    if (e.value.is_null()) config.erase(e.key);
    else config[e.key] = e.value;
    write_json(dir / "config.json", config);
    const std::string what = open_error(dir.path());
    EXPECT_NE(what.find((dir / "config.json").string() + ": key '" + e.key + "': "), std::string::npos) << e.key << ": " << what;
    EXPECT_NE(what.find(e.says), std::string::npos) << e.key << ": " << what;
  }
}

TEST(SideFiles, TokenizerJsonIsCheckedWithFileAndKey) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir.path());
  const json valid = read_json(dir / "tokenizer.json");
  struct TokenizerEdit {
    std::string pointer;  // JSON pointer of the value to change
    json value;           // null: remove it
    std::string key, says;
  };
  const TokenizerEdit edits[] = {
      {"/model/vocab", nullptr, "model.vocab", "is missing"},  // const operator[] on a missing key
      {"/model/merges", nullptr, "model.merges", "is missing"},
      {"/added_tokens/0/id", nullptr, "added_tokens[0].id", "is missing"},
      {"/added_tokens/0/id", 1099511627776LL, "added_tokens[0].id", "out of range"},  // 2^40 padding tokens
      {"/model/vocab/t5", 2147483648LL, "model.vocab.t5", "out of range"},
      {"/model/vocab/t5", -1, "model.vocab.t5", "out of range"},
      {"/model/vocab/t5", "5", "model.vocab.t5", "is a string"},
      {"/model/merges/0", 12, "model.merges[0]", "is neither"},
      {"/added_tokens/0/special", "yes", "added_tokens[0].special", "is a string"},
      {"/model/vocab", json::array(), "model.vocab", "is an array (expected an object)"},
  };
  for (const auto& e : edits) {
    json tokenizer = valid;
    const json::json_pointer pointer(e.pointer);
    if (e.value.is_null()) tokenizer[pointer.parent_pointer()].erase(pointer.back());
    else tokenizer[pointer] = e.value;
    write_json(dir / "tokenizer.json", tokenizer);
    const std::string what = open_error(dir.path());
    EXPECT_NE(what.find((dir / "tokenizer.json").string() + ": key '" + e.key + "': "), std::string::npos) << e.pointer << ": " << what;
    EXPECT_NE(what.find(e.says), std::string::npos) << e.pointer << ": " << what;
  }
  write_json(dir / "tokenizer.json", valid);
  write_json(dir / "tokenizer_config.json", {{"eos_token", 5}});
  const std::string what = open_error(dir.path());
  EXPECT_NE(what.find("tokenizer_config.json: key 'eos_token': is neither a string nor an object"), std::string::npos) << what;
  write_json(dir / "tokenizer_config.json", {{"bos_token", {{"lstrip", true}}}});
  EXPECT_NE(open_error(dir.path()).find("key 'bos_token.content': is missing"), std::string::npos);
  std::ofstream(dir / "tokenizer_config.json") << std::string(1000, '[') + std::string(1000, ']');
  EXPECT_NE(open_error(dir.path()).find("nests deeper than"), std::string::npos);
}

TEST(SideFiles, ShardIndexErrorsNameTheKey) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir.path());
  write_json(dir / "model.safetensors.index.json", {{"weight_map", {{"model.norm.weight", 7}}}});
  const std::string what = open_error(dir.path());
  EXPECT_NE(what.find("model.safetensors.index.json: key 'weight_map.model.norm.weight': is an integer (expected a string)"),
            std::string::npos) << what;
}

TEST(SideFiles, ATensorWithAnEmptyDimensionIsRefused) {
  test::TempDir dir;
  {  // a GGUF whose one tensor has ne [4, 0]: every row loop divided by ne[0] or read nothing
    gguf::Writer w(dir / "empty-dim.gguf");
    w.set("general.architecture", {std::string("llama")});
    w.add_tensor("blk.0.attn_q.weight", GgmlType::F32, {0, 4});
    w.write_data("blk.0.attn_q.weight", {});
    w.finish();
  }
  const std::string what = open_error(dir / "empty-dim.gguf");
  EXPECT_NE(what.find("tensor 'blk.0.attn_q.weight': shape [0, 4] has no elements"), std::string::npos) << what;
}

TEST(SideFiles, PlanErrorsNameTheKeyPath) {
  test::TempDir dir;
  std::ofstream(dir / "plan.json") << R"({"tensors": [{"name": "a", "format": "q4_K"}, {"name": "b", "format": "q4_K", "params": "many"}]})";
  try {
    read_plan(dir / "plan.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("plan.json: tensor 'b': key 'tensors[1].params': is a string (expected an integer"),
              std::string::npos) << e.what();
  }
}

// A one-weight nf4 checkpoint whose quant state is `state` (the codes, absmax and quant_map stay valid).
std::filesystem::path bnb_with_state(const test::TempDir& dir, const std::string& state) {
  const std::vector<float> w(128, 0.5f);
  const auto plain = dir / "plain.safetensors", nf4 = dir / "nf4.safetensors";
  safetensors::Writer::write_file(plain, {{"m.weight", TensorView::make(DType::f32, {8, 16}, std::as_bytes(std::span(w)))}});
  quantize_to_bnb(plain, nf4, {.format = {.id = FormatId::nf4}});
  const safetensors::File in(nf4);
  std::vector<std::pair<std::string, TensorView>> tensors;
  for (const auto& t : in.tensors())
    if (t.name.find(".quant_state.") == std::string::npos) tensors.push_back({t.name, in.view(t)});
  tensors.push_back({"m.weight.quant_state.bitsandbytes__nf4",
                     TensorView::make(DType::u8, {int64_t(state.size())}, std::as_bytes(std::span(state.data(), state.size())))});
  const auto path = dir / "edited.safetensors";
  safetensors::Writer::write_file(path, tensors);
  return path;
}

std::string dequantize_error(const std::filesystem::path& input, const std::filesystem::path& output) {
  try {
    dequantize_bnb(input, output, std::nullopt);
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(SideFiles, BnbQuantStateIsCheckedBeforeAllocating) {
  test::TempDir dir;
  const auto valid = bnb_with_state(dir, R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [8, 16]})");
  ASSERT_EQ(dequantize_error(valid, dir / "ok.safetensors"), "");
  // A shape of [1e6, 1e6] allocated 4 TB of output before the packed size was compared.
  std::string what = dequantize_error(bnb_with_state(dir, R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [1000000, 1000000]})"),
                                      dir / "a.safetensors");
  EXPECT_NE(what.find("edited.safetensors: tensor 'm.weight': "), std::string::npos) << what;
  EXPECT_NE(what.find("packed bytes"), std::string::npos) << what;
  // A blocksize of 2^40 was reported as "unsupported blocksize 0".
  what = dequantize_error(bnb_with_state(dir, R"({"quant_type": "nf4", "blocksize": 1099511627776, "dtype": "float32", "shape": [8, 16]})"),
                          dir / "b.safetensors");
  EXPECT_NE(what.find("edited.safetensors: tensor 'm.weight.quant_state.bitsandbytes__nf4': quant state: key 'blocksize': "),
            std::string::npos) << what;
  EXPECT_NE(what.find("1099511627776 is out of range"), std::string::npos) << what;
  what = dequantize_error(bnb_with_state(dir, R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [8, "16"]})"),
                          dir / "c.safetensors");
  EXPECT_NE(what.find("key 'shape[1]'"), std::string::npos) << what;
}

}  // namespace
}  // namespace lowbit
