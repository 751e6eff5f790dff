// bitsandbytes checkpoints written and read back: the layout transformers loads, bitsandbytes'
// bytes, dequantization to the recorded dtype, sharding, and failures that leave nothing behind.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/inspect.h"
#include "support/paths.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

nlohmann::json read_json(const std::filesystem::path& p) {
  std::ifstream in(p);
  return nlohmann::json::parse(in);
}

TEST(BnbJobs, Nf4DirectoryIsTheLayoutTransformersLoads) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "model");
  const auto out = dir / "nf4";
  const auto report = quantize_to_bnb(dir / "model", out, {.format = {.id = FormatId::nf4, .blocksize = 64, .double_quant = true}});
  EXPECT_EQ(report.quantized, 14);  // 7 Linear layers × 2 blocks; embeddings, lm_head and norms stay
  const auto config = read_json(out / "config.json");
  const auto& q = config["quantization_config"];
  EXPECT_EQ(q["quant_method"], "bitsandbytes");
  EXPECT_EQ(q["load_in_4bit"], true);
  EXPECT_EQ(q["bnb_4bit_quant_type"], "nf4");
  EXPECT_EQ(q["bnb_4bit_use_double_quant"], true);
  EXPECT_EQ(q["llm_int8_skip_modules"], nlohmann::json::array({"lm_head"}));
  EXPECT_TRUE(std::filesystem::exists(out / "tokenizer.json"));
  EXPECT_TRUE(std::filesystem::exists(out / "tokenizer_config.json"));

  const Checkpoint ckpt(out);
  const std::string w = "model.layers.0.self_attn.q_proj.weight";
  EXPECT_EQ(ckpt.view(w).dtype, DType::u8);
  EXPECT_EQ(ckpt.view(w).shape, (Shape{256 * 256 / 2, 1}));
  EXPECT_EQ(ckpt.view(w + ".absmax").dtype, DType::u8);  // double quant: 8-bit codes
  EXPECT_EQ(ckpt.view(w + ".nested_absmax").shape, Shape{4});
  EXPECT_EQ(ckpt.view(w + ".nested_quant_map").shape, Shape{256});
  EXPECT_EQ(ckpt.view(w + ".quant_map").shape, Shape{16});
  const auto state = ckpt.view(w + ".quant_state.bitsandbytes__nf4");
  const std::string json(reinterpret_cast<const char*>(state.bytes.data()), state.bytes.size());
  EXPECT_TRUE(json.starts_with(R"({"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [256, 256], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )"))
      << json;
  EXPECT_EQ(ckpt.view("model.embed_tokens.weight").dtype, DType::f32);
  EXPECT_EQ(ckpt.view("lm_head.weight").dtype, DType::f32);

  // inspect sees 4-bit weights with their logical shapes.
  const auto summary = inspect(out);
  const auto row = std::ranges::find_if(summary.tensors, [&](const TensorSummary& t) { return t.name == w; });
  ASSERT_NE(row, summary.tensors.end());
  EXPECT_EQ(row->format, "nf4");
  EXPECT_EQ(row->shape, (Shape{256, 256}));

  // Back to plain weights: float32 (the recorded dtype), equal to dequantizing the codec's output.
  dequantize_bnb(out, dir / "back", std::nullopt);
  const Checkpoint back(dir / "back"), original(dir / "model");
  EXPECT_FALSE(read_json(dir / "back" / "config.json").contains("quantization_config"));
  EXPECT_EQ(back.tensors().size(), original.tensors().size());
  const auto expected = bnb::quantize_4bit(original.view(w), {.quant_type = bnb::QuantType::nf4, .blocksize = 64, .double_quant = true});
  const Tensor values = bnb::dequantize_4bit(expected.packed, expected.state);
  const auto got = back.view(w);
  EXPECT_EQ(got.dtype, DType::f32);
  EXPECT_EQ(got.shape, (Shape{256, 256}));
  EXPECT_EQ(std::memcmp(got.bytes.data(), values.buffer.data(), got.bytes.size()), 0);
}

TEST(BnbJobs, Int8DirectoryAndShards) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "model");
  const auto out = dir / "int8";
  const auto report = quantize_to_bnb(dir / "model", out, {.format = {.id = FormatId::int8}, .skip = {"*.mlp.down_proj"}, .max_shard_bytes = 400'000});
  EXPECT_EQ(report.quantized, 12);
  EXPECT_GT(report.shards, 1);
  EXPECT_TRUE(std::filesystem::exists(out / "model.safetensors.index.json"));
  const Checkpoint ckpt(out);
  EXPECT_EQ(ckpt.view("model.layers.1.mlp.up_proj.weight").dtype, DType::i8);
  EXPECT_EQ(ckpt.view("model.layers.1.mlp.up_proj.SCB").shape, Shape{256});
  EXPECT_EQ(ckpt.view("model.layers.1.mlp.up_proj.weight_format").shape, Shape{});
  EXPECT_EQ(ckpt.view("model.layers.1.mlp.down_proj.weight").dtype, DType::f32);  // skipped
  const auto q = read_json(out / "config.json")["quantization_config"];
  EXPECT_EQ(q["load_in_8bit"], true);
  EXPECT_EQ(q["llm_int8_skip_modules"], nlohmann::json::array({"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}));

  dequantize_bnb(out, dir / "back", DType::bf16);
  // A directory's output is a directory: a name that says otherwise is refused (it was written as a
  // directory named back.safetensors).
  EXPECT_THROW(dequantize_bnb(out, dir / "back.safetensors", DType::bf16), Error);
  EXPECT_THROW(dequantize_bnb(out, dir / "back2", DType::i8), Error);
}

// A bare .safetensors file: every 2-D float tensor quantized in place of itself, bitsandbytes' bytes.
TEST(BnbJobs, BareFileMatchesBitsandbytesBytes) {
  test::TempDir dir;
  const safetensors::File golden(test::golden_bnb_dir() / "4bit" / "fp4_bs64_nodq_bfloat16_64x256.safetensors");
  safetensors::Writer::write_file(dir / "in.safetensors", {{"w", golden.view("input")}, {"b", golden.view("quant_map")}});
  quantize_to_bnb(dir / "in.safetensors", dir / "out.safetensors", {.format = {.id = FormatId::fp4, .blocksize = 64}});
  const safetensors::File out(dir / "out.safetensors");
  auto same = [](const TensorView& a, const TensorView& b) {
    return a.bytes.size() == b.bytes.size() && std::memcmp(a.bytes.data(), b.bytes.data(), a.bytes.size()) == 0;
  };
  EXPECT_TRUE(same(out.view("w"), golden.view("packed")));
  EXPECT_TRUE(same(out.view("w.absmax"), golden.view("absmax")));
  EXPECT_TRUE(same(out.view("b"), golden.view("quant_map")));  // 1-D: copied
  dequantize_bnb(dir / "out.safetensors", dir / "back.safetensors", std::nullopt);
  const safetensors::File back(dir / "back.safetensors");
  EXPECT_EQ(back.view("w").dtype, DType::bf16);
  EXPECT_TRUE(same(back.view("w"), golden.view("dequantized")));  // bitsandbytes' own dequantized bytes
}

TEST(BnbJobs, FailuresLeaveNothingBehind) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "model");
  std::filesystem::create_directory(dir / "taken");
  std::ofstream(dir / "taken" / "keep.txt") << "mine";
  EXPECT_THROW(quantize_to_bnb(dir / "model", dir / "taken", {.format = {.id = FormatId::nf4}}), Error);
  EXPECT_TRUE(std::filesystem::exists(dir / "taken" / "keep.txt"));
  quantize_to_bnb(dir / "model", dir / "taken", {.format = {.id = FormatId::nf4}, .overwrite = true});  // the CLI's --force
  EXPECT_FALSE(std::filesystem::exists(dir / "taken" / "keep.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir / "taken" / "config.json"));
  EXPECT_THROW(quantize_to_bnb(dir / "model", dir / "bad", {.format = {.id = FormatId::nf4, .blocksize = 48}}), Error);
  EXPECT_THROW(quantize_to_bnb(dir / "model", dir / "bad", {.format = {.id = FormatId::q4_K}}), Error);

  // A NaN in one weight: the error names it, and no output directory (or temporary) remains.
  std::vector<float> w(64 * 64, 0.5f);
  w[100] = std::nanf("");
  safetensors::Writer::write_file(dir / "nan.safetensors", {{"layer.weight", TensorView::make(DType::f32, {64, 64}, std::as_bytes(std::span(w)))}});
  try {
    quantize_to_bnb(dir / "nan.safetensors", dir / "nan-out.safetensors", {.format = {.id = FormatId::nf4}});
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer.weight"), std::string::npos) << e.what();
  }
  int entries = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) entries += e.path().filename().string().find("tmp") != std::string::npos;
  EXPECT_EQ(entries, 0);
  EXPECT_FALSE(std::filesystem::exists(dir / "nan-out.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "bad"));
  // Already quantized: refused.
  quantize_to_bnb(dir / "model", dir / "q", {.format = {.id = FormatId::fp4}});
  EXPECT_THROW(quantize_to_bnb(dir / "q", dir / "qq", {.format = {.id = FormatId::fp4}}), Error);
}

}  // namespace
}  // namespace lowbit
