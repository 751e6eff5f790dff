// lowbit inspect's accounting, checked on the golden files and on bitsandbytes-layout checkpoints
// assembled from the golden bitsandbytes tensors.
#include <gtest/gtest.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/inspect.h"
#include "support/paths.h"

namespace lowbit {
namespace {

const TensorSummary& row(const ModelSummary& m, const std::string& name) {
  for (const auto& t : m.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no row " + name);
}

TEST(Inspect, CountsEveryGgmlGoldenFile) {
  std::ifstream in(test::golden_ggml_dir() / "manifest.json");
  ASSERT_TRUE(in);
  const auto manifest = nlohmann::json::parse(in);
  for (const auto& f : manifest["files"]) {
    const auto m = inspect(test::golden_ggml_dir() / f["file"].get<std::string>());
    const int64_t rows = f["rows"], cols = f["cols"];
    const auto& q = row(m, "quantized");
    EXPECT_EQ(q.format, f["type"].get<std::string>());
    EXPECT_EQ(q.shape, (Shape{rows, cols}));
    EXPECT_EQ(q.params, rows * cols);
    EXPECT_EQ(q.bytes, f["quantized_bytes"].get<uint64_t>());
    EXPECT_EQ(q.stored_elements, int64_t(q.bytes));  // quantized blocks read back as raw bytes
    const auto& x = row(m, "input");
    EXPECT_EQ(x.format, "f32");
    EXPECT_EQ(x.bpw(), 32.0);
    EXPECT_EQ(x.stored_elements, rows * cols);
    const int64_t tensors = f["imatrix"].get<bool>() ? 4 : 3;
    ASSERT_EQ(int64_t(m.tensors.size()), tensors);
    EXPECT_EQ(m.params, rows * cols * 3 + (tensors == 4 ? cols : 0));
    EXPECT_DOUBLE_EQ(m.bpw(), 8.0 * double(m.bytes) / double(m.params));
  }
}

TEST(Inspect, Q4KBitsPerWeight) {
  const auto m = inspect(test::golden_ggml_dir() / "mat512_q4_K_32x512.gguf");
  EXPECT_DOUBLE_EQ(row(m, "quantized").bpw(), 4.5);
  const auto m6 = inspect(test::golden_ggml_dir() / "mat512_q6_K_32x512.gguf");
  EXPECT_DOUBLE_EQ(row(m6, "quantized").bpw(), 6.5625);
}

// Writes a checkpoint laid out as bitsandbytes serialises a Linear4bit weight, from a golden case.
void write_bnb_4bit_checkpoint(const std::filesystem::path& golden, const std::filesystem::path& out, bool double_quant) {
  const safetensors::File g(golden);
  const auto& md = g.metadata();
  std::string state = R"({"quant_type": ")" + md.at("quant_type") + R"(", "blocksize": )" + md.at("blocksize") +
                      R"(, "dtype": ")" + md.at("dtype") + R"(", "shape": )" + md.at("shape");
  if (double_quant) state += R"(, "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": )" + md.at("nested_offset");
  state += "}";
  std::vector<std::pair<std::string, TensorView>> tensors{
      {"model.layers.0.mlp.up_proj.weight", g.view("packed")},
      {"model.layers.0.mlp.up_proj.weight.absmax", g.view(double_quant ? "absmax_quantized" : "absmax")},
      {"model.layers.0.mlp.up_proj.weight.quant_map", g.view("quant_map")},
      {"model.layers.0.mlp.up_proj.weight.quant_state.bitsandbytes__" + md.at("quant_type"),
       TensorView::make(DType::u8, {int64_t(state.size())}, std::as_bytes(std::span(state)))},
      {"model.norm.weight", g.view("input")},
  };
  if (double_quant) {
    tensors.push_back({"model.layers.0.mlp.up_proj.weight.nested_absmax", g.view("nested_absmax")});
    tensors.push_back({"model.layers.0.mlp.up_proj.weight.nested_quant_map", g.view("nested_quant_map")});
  }
  safetensors::Writer::write_file(out, tensors);
}

TEST(Inspect, Bnb4bitWeightsCountTheirQuantState) {
  for (const bool dq : {false, true}) {
    const auto golden = test::golden_bnb_dir() / "4bit" / (dq ? "nf4_bs64_dq_bfloat16_64x256.safetensors" : "fp4_bs64_nodq_bfloat16_64x256.safetensors");
    test::TempDir dir;
    write_bnb_4bit_checkpoint(golden, dir / "model.safetensors", dq);
    const auto m = inspect(dir / "model.safetensors");
    ASSERT_EQ(m.tensors.size(), 2u) << "companions must not be rows of their own";
    const auto& w = row(m, "model.layers.0.mlp.up_proj.weight");
    EXPECT_EQ(w.format, dq ? "nf4" : "fp4");
    EXPECT_EQ(w.shape, (Shape{64, 256}));
    EXPECT_EQ(w.params, 64 * 256);
    EXPECT_EQ(w.stored_elements, 64 * 256 / 2);
    const safetensors::File f(dir / "model.safetensors");
    uint64_t bytes = 0;
    for (const auto& t : f.tensors())
      if (t.name != "model.norm.weight") bytes += t.size();
    EXPECT_EQ(w.bytes, bytes);
    // 4 bits per value plus the scales: 256 blocks of 64 -> 256 f32 absmax (or u8 codes + nested stats).
    const uint64_t state_bytes = bytes - 64 * 256 / 2;
    EXPECT_DOUBLE_EQ(w.bpw(), 4.0 + 8.0 * double(state_bytes) / (64 * 256));
    EXPECT_LT(m.stored_elements, m.params);
  }
}

TEST(Inspect, Int8WeightsCountScb) {
  const safetensors::File g(test::golden_bnb_dir() / "int8" / "vectorwise_thr0_64x256.safetensors");
  test::TempDir dir;
  const uint8_t row_format = 0;
  safetensors::Writer::write_file(dir / "model.safetensors",
                                  {{"lm.q_proj.weight", g.view("CB")},
                                   {"lm.q_proj.SCB", g.view("SCB")},
                                   {"lm.q_proj.weight_format", TensorView::make(DType::u8, {}, std::as_bytes(std::span(&row_format, 1)))}});
  const auto m = inspect(dir / "model.safetensors");
  ASSERT_EQ(m.tensors.size(), 1u);
  const auto& w = m.tensors[0];
  EXPECT_EQ(w.format, "int8");
  EXPECT_EQ(w.params, 64 * 256);
  EXPECT_EQ(w.stored_elements, 64 * 256);
  EXPECT_EQ(w.bytes, 64u * 256 + 64 * 4 + 1);
  EXPECT_DOUBLE_EQ(m.bpw(), 8.0 * (64 * 256 + 64 * 4 + 1) / (64 * 256));
}

TEST(Inspect, BadQuantStateIsAClearError) {
  test::TempDir dir;
  const std::string bad = "{not json";
  std::vector<uint8_t> w(8);
  safetensors::Writer::write_file(dir / "m.safetensors",
                                  {{"w", TensorView::make(DType::u8, {8, 1}, std::as_bytes(std::span(w)))},
                                   {"w.quant_state.bitsandbytes__nf4", TensorView::make(DType::u8, {int64_t(bad.size())}, std::as_bytes(std::span(bad)))}});
  try {
    inspect(dir / "m.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.context().tensor, "w.quant_state.bitsandbytes__nf4");
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos);
  }
  EXPECT_THROW(inspect(dir / "missing.gguf"), Error);
}

TEST(Inspect, SharedDataModels) {
  const auto m = inspect(test::shared_data_dir() / "stories260K.gguf");
  EXPECT_EQ(m.tensors.size(), 48u);
  EXPECT_EQ(m.bpw(), 32.0);
  const auto big = inspect(test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf");
  int64_t matrices = 0;
  for (const auto& t : big.tensors) matrices += t.format == "bf16" ? t.params : 0;
  EXPECT_GT(matrices, 12'000'000);
}

}  // namespace
}  // namespace lowbit
