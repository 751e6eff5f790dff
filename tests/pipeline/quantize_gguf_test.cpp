// Quantizing to GGUF: llama-quantize's own output reproduced byte for byte, conversion from a
// Hugging Face directory, and no output left behind when anything fails.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

std::filesystem::path tiny_model() { return test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf"; }

bool same_bytes(const std::filesystem::path& a, const std::filesystem::path& b) {
  const MappedFile x(a), y(b);
  return x.size() == y.size() && std::equal(x.bytes().begin(), x.bytes().end(), y.bytes().begin());
}

TEST(QuantizeGguf, ReproducesLlamaQuantizeQ4KMFileByteForByte) {
  test::TempDir dir;
  const auto source = ModelSource::open(tiny_model());
  GgufQuantizeOptions options;
  options.selection = {.mix = find_llama_mix("Q4_K_M"), .default_type = GgmlType::Q4_K};
  quantize_to_gguf(*source, dir / "out.gguf", options);
  EXPECT_TRUE(same_bytes(dir / "out.gguf", test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf"));
}

TEST(QuantizeGguf, UniformFormatOverridesAndCopy) {
  test::TempDir dir;
  const auto source = ModelSource::open(tiny_model());
  GgufQuantizeOptions options;
  options.selection = {.default_type = GgmlType::Q8_0, .overrides = {{"blk.1.*", GgmlType::Q5_1}}};
  const auto report = quantize_to_gguf(*source, dir / "q8.gguf", options);
  const gguf::File out(dir / "q8.gguf");
  EXPECT_EQ(out.find_tensor("output.weight")->type, GgmlType::Q8_0);  // uniform: no Q6_K for output
  EXPECT_EQ(out.find_tensor("blk.0.ffn_up.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(out.find_tensor("blk.1.ffn_up.weight")->type, GgmlType::Q5_1);
  EXPECT_EQ(out.find_tensor("blk.1.attn_norm.weight")->type, GgmlType::F32);
  EXPECT_EQ(out.find("general.file_type")->as_int(), 7);
  EXPECT_EQ(report.tensors.size(), 21u);

  // Requantizing a file to the types it already has copies every tensor unchanged.
  const auto again = ModelSource::open(dir / "q8.gguf");
  quantize_to_gguf(*again, dir / "q8-again.gguf", options);
  const gguf::File out2(dir / "q8-again.gguf");
  for (const auto& t : out.tensors()) {
    const auto a = out.data(t), b = out2.data(*out2.find_tensor(t.name));
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;
  }
}

// What quantize and Python's quantize ask for, turned into a TypeSelection: a plan names each tensor it
// quantizes (the type of most parameters stands for the file), rules follow, mistakes are refused.
TEST(QuantizeGguf, SelectsTypesFromAPlanAMixOrOneType) {
  const auto source = ModelSource::open(tiny_model());
  Plan plan;
  plan.tensors = {{.name = "blk.0.attn_q.weight", .format = format_spec(GgmlType::Q6_K), .params = 100, .quantized = true},
                  {.name = "blk.0.ffn_up.weight", .format = format_spec(GgmlType::Q4_K), .params = 300, .quantized = true},
                  {.name = "blk.0.attn_norm.weight", .format = format_spec(GgmlType::F32), .params = 64, .quantized = false}};
  const auto planned = select_gguf_types(*source, {.plan = &plan, .plan_origin = "plan.json", .tensor_types = {"output*=q8_0"}});
  EXPECT_EQ(planned.mix, nullptr);
  EXPECT_EQ(planned.default_type, GgmlType::Q4_K);
  const std::vector<std::pair<std::string, GgmlType>> overrides{
      {"blk.0.attn_q.weight", GgmlType::Q6_K}, {"blk.0.ffn_up.weight", GgmlType::Q4_K}, {"output*", GgmlType::Q8_0}};
  EXPECT_EQ(planned.overrides, overrides);

  const auto mix = select_gguf_types(*source, {.mix = "Q4_K_M"});
  ASSERT_NE(mix.mix, nullptr);
  EXPECT_EQ(mix.mix, find_llama_mix("Q4_K_M"));
  EXPECT_EQ(select_gguf_types(*source, {.format = "iq4_xs"}).default_type, GgmlType::IQ4_XS);

  plan.tensors[1].name = "blk.0.ffn_upp.weight";  // an edited plan's misspelling
  try {
    select_gguf_types(*source, {.plan = &plan, .plan_origin = "plan.json"});
    ADD_FAILURE() << "a plan naming a tensor the model lacks was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("plan.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("blk.0.ffn_upp.weight"), std::string::npos) << e.what();
  }
  EXPECT_THROW(select_gguf_types(*source, {.mix = "Q7_K_XL"}), Error);
  EXPECT_THROW(select_gguf_types(*source, {.format = "q9_9"}), Error);
  EXPECT_THROW(select_gguf_types(*source, {.format = "q8_0", .tensor_types = {"output*"}}), Error);
  EXPECT_THROW(select_gguf_types(*source, {.format = "q8_0", .tensor_types = {"=q8_0"}}), Error);
  EXPECT_THROW(select_gguf_types(*source, {.format = "q8_0", .tensor_types = {"output*=q9_9"}}), Error);
}

TEST(QuantizeGguf, FailureLeavesNoOutputAndInputUntouched) {
  test::TempDir dir;
  const auto out = dir / "out.gguf";
  std::ofstream(out) << "previous contents";
  const auto source = ModelSource::open(tiny_model());
  GgufQuantizeOptions options;
  options.selection = {.default_type = GgmlType::IQ2_XXS};  // no importance matrix: refused before writing
  EXPECT_THROW(quantize_to_gguf(*source, out, options), Error);
  std::ifstream in(out);
  std::string contents((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(contents, "previous contents");
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

// The 2-bit i-quant mixes without an importance matrix: refused as llama-quantize refuses them, naming
// the first tensor that needs one and how to make it.
TEST(QuantizeGguf, LowBitIQuantMixesRequireAnImportanceMatrix) {
  test::TempDir dir;
  const auto source = ModelSource::open(tiny_model());
  for (const char* mix : {"IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ2_M"}) {
    SCOPED_TRACE(mix);
    GgufQuantizeOptions options;
    options.selection = {.mix = find_llama_mix(mix), .default_type = find_llama_mix(mix)->default_type};
    try {
      quantize_to_gguf(*source, dir / "out.gguf", options);
      ADD_FAILURE() << "no error without an importance matrix";
    } catch (const Error& e) {
      const std::string message = e.what();
      // token_embd and output are exempt (q2_K / iq3_s and q5_K here); the first block matrix is not.
      EXPECT_EQ(e.context().tensor, "blk.0.attn_k.weight") << message;
      EXPECT_NE(message.find("blk.0.attn_k.weight"), std::string::npos) << message;
      EXPECT_NE(message.find("lowbit imatrix MODEL --text FILE -o imatrix.gguf"), std::string::npos) << message;
    }
    EXPECT_FALSE(std::filesystem::exists(dir / "out.gguf"));
  }
}

TEST(QuantizeGguf, ConvertsHuggingFaceDirectoryLikeLlamaCpp) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir.path());
  const auto source = ModelSource::open(dir.path());
  GgufQuantizeOptions options;
  options.selection = {.default_type = GgmlType::F32};
  quantize_to_gguf(*source, dir / "f32.gguf", options);
  const gguf::File out(dir / "f32.gguf"), ref(tiny_model());
  ASSERT_EQ(out.tensors().size(), ref.tensors().size());
  for (const auto& t : ref.tensors()) {
    const auto* o = out.find_tensor(t.name);
    ASSERT_NE(o, nullptr) << t.name;
    EXPECT_EQ(o->ne, t.ne) << t.name;
    const auto a = ref.data(t), b = out.data(*o);
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;  // the Q/K permutation undone exactly
  }
  EXPECT_EQ(*out.find("general.architecture")->get_if<std::string>(), "llama");
  EXPECT_EQ(out.find("llama.attention.head_count_kv")->as_int(), 2);
  EXPECT_EQ(*out.find("llama.attention.layer_norm_rms_epsilon")->get_if<float>(), 1e-5f);
  EXPECT_EQ(*out.find("tokenizer.ggml.model")->get_if<std::string>(), "gpt2");
  EXPECT_EQ(*out.find("tokenizer.ggml.pre")->get_if<std::string>(), "gpt-2");
  const auto& tokens = out.find("tokenizer.ggml.tokens")->get_if<gguf::Array>()->items;
  ASSERT_EQ(tokens.size(), 259u);
  EXPECT_EQ(*tokens[0].get_if<std::string>(), "<|endoftext|>");
  EXPECT_EQ(*tokens[258].get_if<std::string>(), "[PAD258]");
  const auto& types = out.find("tokenizer.ggml.token_type")->get_if<gguf::Array>()->items;
  EXPECT_EQ(*types[0].get_if<int32_t>(), 3);
  EXPECT_EQ(*types[1].get_if<int32_t>(), 1);
  const auto& merges = out.find("tokenizer.ggml.merges")->get_if<gguf::Array>()->items;
  EXPECT_EQ(*merges[1].get_if<std::string>(), "t 2");
  EXPECT_EQ(out.find("tokenizer.ggml.eos_token_id")->as_int(), 0);
  EXPECT_EQ(*out.find("tokenizer.chat_template")->get_if<std::string>(), "{{ messages }}");

  // And from the HF directory straight to llama.cpp's Q4_K_M, as from the GGUF: the same tensor bytes.
  options.selection = {.mix = find_llama_mix("Q4_K_M"), .default_type = GgmlType::Q4_K};
  quantize_to_gguf(*source, dir / "q4km.gguf", options);
  const gguf::File q(dir / "q4km.gguf"), golden(test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf");
  for (const auto& t : golden.tensors()) {
    const auto a = golden.data(t), b = q.data(*q.find_tensor(t.name));
    EXPECT_TRUE(std::equal(a.begin(), a.end(), b.begin(), b.end())) << t.name;
  }
}

TEST(QuantizeGguf, RejectsUnsupportedHuggingFaceModels) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir.path());
  std::ofstream(dir / "config.json") << R"({"architectures": ["GPTNeoXForCausalLM"]})";
  try {
    ModelSource::open(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("GPTNeoXForCausalLM"), std::string::npos);
  }
}

}  // namespace
}  // namespace lowbit
