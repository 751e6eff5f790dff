// The output KL-divergence probe on stories260K: zero for the loaded weights, larger for a coarser
// format of the same tensor, and the same answer however the forward pass is split.
#include <gtest/gtest.h>

#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/model/kld_probe.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/tokenizer.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::vector<int32_t> story_tokens(const LlamaModel& model) {
  std::ifstream in(test::shared_data_dir() / "tinystories_valid_first1000.txt", std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  text.resize(20000);
  return Tokenizer::from_gguf_metadata(model.weights().metadata()).encode(text, true);
}

// The matrix `name` of `model` quantized to `type` (its float values read through the runtime).
std::vector<std::byte> quantized(const LlamaModel& model, const std::string& name, GgmlType type, int64_t* rows, int64_t* cols) {
  const auto* t = model.weights().find_tensor(name);
  *cols = t->ne[0];
  *rows = t->elements() / *cols;
  std::vector<float> values(size_t(t->elements()));
  dequantize_rows(t->type, t->bytes.data(), *rows, *cols, values.data());
  std::vector<std::byte> out(ggml_row_bytes(type, *cols) * size_t(*rows));
  quantize_rows(type, values.data(), *rows, *cols, nullptr, out.data());
  return out;
}

TEST(KldProbe, CoarserFormatsCostMoreAndTheLoadedWeightsNothing) {
  auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  const auto tokens = story_tokens(*model);
  KldProbe probe(*model, tokens, 128, 1, 2);
  EXPECT_EQ(probe.positions(), 2 * 63);
  const auto reference = model->forward(std::vector<int32_t>(tokens.begin(), tokens.begin() + 128));
  for (const std::string name : {"token_embd.weight", "blk.0.attn_q.weight", "blk.4.ffn_up.weight"}) {
    int64_t rows = 0, cols = 0;
    const auto q4 = quantized(*model, name, GgmlType::Q4_0, &rows, &cols);
    const auto q8 = quantized(*model, name, GgmlType::Q8_0, &rows, &cols);
    const double kld4 = probe.kld_with(name, {GgmlType::Q4_0, rows, cols, q4});
    const double kld8 = probe.kld_with(name, {GgmlType::Q8_0, rows, cols, q8});
    EXPECT_GT(kld8, 0.0) << name;
    EXPECT_GT(kld4, 4 * kld8) << name;  // 4.5 bits against 8.5: a much larger error at the output
    const auto* t = model->weights().find_tensor(name);
    EXPECT_EQ(probe.kld_with(name, {t->type, rows, cols, t->bytes}), 0.0) << name;
  }
  // Every weight is back as loaded: the full pass gives the same logits as before the probes.
  EXPECT_EQ(model->forward(std::vector<int32_t>(tokens.begin(), tokens.begin() + 128)), reference);
  int64_t rows = 0, cols = 0;
  const auto q8 = quantized(*model, "blk.0.attn_q.weight", GgmlType::Q8_0, &rows, &cols);
  EXPECT_THROW(probe.kld_with("blk.9.attn_q.weight", {GgmlType::Q8_0, rows, cols, q8}), Error);
  EXPECT_THROW(probe.kld_with("blk.0.attn_k.weight", {GgmlType::Q8_0, rows, cols, q8}), Error);  // 32 rows, not 64
  EXPECT_THROW(KldProbe(*model, std::span(tokens).first(200), 128, 1, 2), Error);
}

}  // namespace
}  // namespace lowbit
