// LoRA merges against a plain reference written here: W + Σ s·B·A in double precision, in Hugging
// Face's row order, then into llama.cpp's permuted Q/K order by the test's own formula; the merge into
// the 4-bit-dequantized weights; adapter checks that refuse what cannot be merged exactly.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/pipeline/lora_merge.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

using nlohmann::json;

struct Matrix {
  int64_t rows, cols;
  std::vector<float> v;
};

Matrix random_matrix(int64_t rows, int64_t cols, uint32_t seed, float scale = 0.05f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  Matrix m{rows, cols, std::vector<float>(size_t(rows * cols))};
  for (auto& x : m.v) x = d(rng);
  return m;
}

TensorView view(const Matrix& m) { return TensorView::make(DType::f32, {m.rows, m.cols}, std::as_bytes(std::span(m.v))); }

// An adapter directory as PEFT saves it: modules -> (A [r, in], B [out, r]).
void write_adapter(const std::filesystem::path& dir, const json& config, const std::vector<std::pair<std::string, std::pair<Matrix, Matrix>>>& modules,
                   const std::vector<std::pair<std::string, Matrix>>& saved = {}) {
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "adapter_config.json") << config.dump();
  std::vector<std::pair<std::string, TensorView>> tensors;
  for (const auto& [module, ab] : modules) {
    tensors.push_back({"base_model.model." + module + ".lora_A.weight", view(ab.first)});
    tensors.push_back({"base_model.model." + module + ".lora_B.weight", view(ab.second)});
  }
  for (const auto& [name, m] : saved) tensors.push_back({"base_model.model." + name, view(m)});
  safetensors::Writer::write_file(dir / "adapter_model.safetensors", tensors);
}

json lora_config(int r, double alpha) { return {{"peft_type", "LORA"}, {"r", r}, {"lora_alpha", alpha}, {"target_modules", {"q_proj", "down_proj"}}}; }

// The tiny model's HF weight as floats (rows × cols, HF order).
std::vector<float> hf_weight(const std::filesystem::path& dir, const std::string& name) {
  const safetensors::File f(dir / "model.safetensors");
  const auto v = f.view(name).as<float>();
  return {v.begin(), v.end()};
}

// HF row order -> llama.cpp's: GGUF row r is HF row (head, (r%2)·half + (r%per_head)/2) within its head.
std::vector<float> to_gguf_rows(const std::vector<float>& hf, int64_t cols, int heads) {
  const int64_t rows = int64_t(hf.size()) / cols, per_head = rows / heads, half = per_head / 2;
  std::vector<float> out(hf.size());
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t head = r / per_head, within = r % per_head;
    std::copy_n(hf.begin() + (head * per_head + (within % 2) * half + within / 2) * cols, cols, out.begin() + r * cols);
  }
  return out;
}

// W + scale · B·A in double, rounded once.
std::vector<float> reference_merge(std::vector<float> w, const Matrix& a, const Matrix& b, double scale) {
  for (int64_t r = 0; r < b.rows; ++r)
    for (int64_t c = 0; c < a.cols; ++c) {
      double sum = 0;
      for (int64_t k = 0; k < a.rows; ++k) sum += double(b.v[size_t(r * b.cols + k)]) * double(a.v[size_t(k * a.cols + c)]);
      w[size_t(r * a.cols + c)] = float(double(w[size_t(r * a.cols + c)]) + scale * sum);
    }
  return w;
}

void expect_close(const std::vector<float>& got, const std::vector<float>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, double(std::fabs(got[i] - want[i])));
  EXPECT_LT(worst, 1e-5) << what;
}

const ModelSource::Tensor& tensor(const ModelSource& s, const std::string& name) {
  return *std::ranges::find(s.tensors(), name, &ModelSource::Tensor::name);
}

class LoraMerge : public ::testing::Test {
 protected:
  void SetUp() override { test::write_tiny_hf_model(dir / "base"); }
  MergeBase base() { return open_merge_base(dir / "base"); }
  test::TempDir dir;
  // The tiny model: hidden 256, 4 heads / 2 KV heads (64 rows of K), FFN 256, 2 layers.
  Matrix qa = random_matrix(4, 256, 1), qb = random_matrix(256, 4, 2);
  Matrix da = random_matrix(4, 256, 3), db = random_matrix(256, 4, 4);
};

TEST_F(LoraMerge, IntoOriginalEqualsThePlainSumInLlamaCppsRowOrder) {
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.0.self_attn.q_proj", {qa, qb}}, {"model.layers.1.mlp.down_proj", {da, db}}});
  const auto merged = merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / "a"), 1.0}}, {});
  const auto q = merged->load_f32(tensor(*merged, "blk.0.attn_q.weight"));
  expect_close(q, to_gguf_rows(reference_merge(hf_weight(dir / "base", "model.layers.0.self_attn.q_proj.weight"), qa, qb, 2.0), 256, 4), "q");
  const auto down = merged->load_f32(tensor(*merged, "blk.1.ffn_down.weight"));
  expect_close(down, reference_merge(hf_weight(dir / "base", "model.layers.1.mlp.down_proj.weight"), da, db, 2.0), "down");
  EXPECT_TRUE(merged->raw(tensor(*merged, "blk.0.attn_q.weight")).empty());
  // Untouched tensors are the base's, bytes and all.
  const auto b = base();
  EXPECT_EQ(merged->load_f32(tensor(*merged, "blk.0.attn_k.weight")), b.source->load_f32(tensor(*b.source, "blk.0.attn_k.weight")));
  EXPECT_FALSE(merged->raw(tensor(*merged, "blk.1.ffn_up.weight")).empty());
}

TEST_F(LoraMerge, RsloraPatternsAndUserScalesSetEachModulesScale) {
  json config = lora_config(4, 8);
  config["use_rslora"] = true;
  config["alpha_pattern"] = {{"down_proj", 2.0}};
  write_adapter(dir / "a", config, {{"model.layers.0.self_attn.q_proj", {qa, qb}}, {"model.layers.1.mlp.down_proj", {da, db}}});
  // A second adapter of rank 2 on the same q_proj, its rank from rank_pattern, at --scale 0.5.
  const Matrix qa2 = random_matrix(2, 256, 5), qb2 = random_matrix(256, 2, 6);
  json config2 = lora_config(8, 4);
  config2["rank_pattern"] = {{"model.layers.0.self_attn.q_proj", 2}};
  write_adapter(dir / "b", config2, {{"model.layers.0.self_attn.q_proj", {qa2, qb2}}});
  const auto merged = merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / "a"), 1.0}, {std::make_shared<LoraAdapter>(dir / "b"), 0.5}}, {});
  auto want_q = reference_merge(hf_weight(dir / "base", "model.layers.0.self_attn.q_proj.weight"), qa, qb, 8.0 / std::sqrt(4.0));
  want_q = reference_merge(want_q, qa2, qb2, 0.5 * 4.0 / 2.0);
  expect_close(merged->load_f32(tensor(*merged, "blk.0.attn_q.weight")), to_gguf_rows(want_q, 256, 4), "q");
  expect_close(merged->load_f32(tensor(*merged, "blk.1.ffn_down.weight")),
               reference_merge(hf_weight(dir / "base", "model.layers.1.mlp.down_proj.weight"), da, db, 2.0 / std::sqrt(4.0)), "down");
}

TEST_F(LoraMerge, IntoDequantizedStartsFromTheFourBitRoundTrip) {
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.1.mlp.down_proj", {da, db}}});
  const LoraMergeOptions options{.into = MergeInto::dequantized, .trained_on = FormatSpec{.id = FormatId::fp4, .blocksize = 128, .double_quant = true}};
  const auto merged = merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / "a"), 1.0}}, options);
  const auto w = hf_weight(dir / "base", "model.layers.1.mlp.down_proj.weight");
  const auto q = bnb::quantize_4bit(TensorView::make(DType::f32, {256, 256}, std::as_bytes(std::span(w))),
                                    {.quant_type = bnb::QuantType::fp4, .blocksize = 128, .double_quant = true});
  const Tensor deq = bnb::dequantize_4bit(q.packed, q.state, DType::f32);
  const auto d = deq.view().as<float>();
  const auto got = merged->load_f32(tensor(*merged, "blk.1.ffn_down.weight"));
  expect_close(got, reference_merge({d.begin(), d.end()}, da, db, 2.0), "down");
  EXPECT_NE(got, reference_merge(w, da, db, 2.0));  // the round trip changed the weights
}

TEST_F(LoraMerge, SavedModulesReplaceTheBaseTensor) {
  const Matrix head = random_matrix(259, 256, 7);
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.0.self_attn.q_proj", {qa, qb}}}, {{"lm_head.weight", head}});
  const auto merged = merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / "a"), 1.0}}, {});
  EXPECT_EQ(merged->load_f32(tensor(*merged, "output.weight")), head.v);
}

TEST_F(LoraMerge, MergedModelQuantizesToGguf) {
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.0.self_attn.q_proj", {qa, qb}}});
  const auto merged = merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / "a"), 1.0}}, {});
  GgufQuantizeOptions options;
  options.selection.default_type = GgmlType::F32;
  quantize_to_gguf(*merged, dir / "out.gguf", options);
  const auto written = ModelSource::open(dir / "out.gguf");
  EXPECT_EQ(written->load_f32(tensor(*written, "blk.0.attn_q.weight")), merged->load_f32(tensor(*merged, "blk.0.attn_q.weight")));
}

TEST_F(LoraMerge, EvalAppliesAdaptersUnmergedAsTheMergedModelComputes) {
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.0.self_attn.q_proj", {qa, qb}}, {"model.layers.1.mlp.down_proj", {da, db}}});
  const auto adapters = open_adapters({(dir / "a").string()}, {});
  const auto merged = merge_lora(base(), adapters, {});
  GgufQuantizeOptions options;
  options.selection.default_type = GgmlType::F32;
  quantize_to_gguf(*merged, dir / "merged.gguf", options);
  const std::vector<int32_t> tokens = {1, 17, 42, 99, 200, 7, 3, 250};
  const auto with_adapter = EvalModel(dir / "base", adapters).model().forward(tokens);
  const auto merged_logits = EvalModel(dir / "merged.gguf").model().forward(tokens);
  const auto plain = EvalModel(dir / "base").model().forward(tokens);
  double worst = 0, moved = 0;
  for (size_t i = 0; i < plain.size(); ++i) {
    worst = std::max(worst, double(std::fabs(with_adapter[i] - merged_logits[i])));
    moved = std::max(moved, double(std::fabs(with_adapter[i] - plain[i])));
  }
  EXPECT_LT(worst, 1e-4);
  EXPECT_GT(moved, 1e-3);  // the adapter does change the model
}

TEST_F(LoraMerge, RefusesWhatItCannotMergeExactly) {
  auto refused = [&](const std::string& name, const json& config, const std::vector<std::pair<std::string, std::pair<Matrix, Matrix>>>& modules,
                     const std::string& message) {
    write_adapter(dir / name, config, modules);
    try {
      merge_lora(base(), {{std::make_shared<LoraAdapter>(dir / name), 1.0}}, {});
      ADD_FAILURE() << name << ": accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(message), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << "no file named: " << e.what();
    }
  };
  refused("absent", lora_config(4, 8), {{"model.layers.7.self_attn.q_proj", {qa, qb}}}, "does not have");
  refused("shape", lora_config(4, 8), {{"model.layers.0.self_attn.k_proj", {qa, qb}}}, "B·A is [256, 256]");
  refused("rank", lora_config(8, 8), {{"model.layers.0.self_attn.q_proj", {qa, qb}}}, "rank 4 in the file but 8");
  json dora = lora_config(4, 8);
  dora["use_dora"] = true;
  refused("dora", dora, {{"model.layers.0.self_attn.q_proj", {qa, qb}}}, "DoRA");
  json conv = lora_config(4, 8);
  conv["fan_in_fan_out"] = true;
  refused("conv1d", conv, {{"model.layers.0.self_attn.q_proj", {qa, qb}}}, "fan_in_fan_out");
}

TEST_F(LoraMerge, QuantizedBaseOnlyMergesIntoItsDequantizedWeights) {
  write_adapter(dir / "a", lora_config(4, 8), {{"model.layers.1.mlp.down_proj", {da, db}}});
  const auto adapter = std::make_shared<LoraAdapter>(dir / "a");
  const auto q4 = test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf";
  EXPECT_THROW(merge_lora(open_merge_base(q4), {{adapter, 1.0}}, {}), Error);
  const auto merged = merge_lora(open_merge_base(q4), {{adapter, 1.0}}, {.into = MergeInto::dequantized});
  const auto base_q4 = ModelSource::open(q4);
  const auto& t = tensor(*base_q4, "blk.1.ffn_down.weight");
  expect_close(merged->load_f32(tensor(*merged, t.name)), reference_merge(base_q4->load_f32(t), da, db, 2.0), "down");
  EXPECT_EQ(tensor(*merged, t.name).stored_type, GgmlType::F32);
}

}  // namespace
}  // namespace lowbit
