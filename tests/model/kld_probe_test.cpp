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

TEST(KldProbe, ABackgroundOfQuantizedWeightsIsMeasuredWholeAndPutBack) {
  auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  const auto tokens = story_tokens(*model);
  const std::vector<int32_t> first(tokens.begin(), tokens.begin() + 128);
  const auto reference = model->forward(first);
  const auto held = [&](const std::string& name, GgmlType type) {
    KldProbe::HeldWeight w{.name = name, .type = type};
    w.data = quantized(*model, name, type, &w.rows, &w.cols);
    return w;
  };
  const auto view = [](const KldProbe::HeldWeight& w) { return QuantizedMatrix{w.type, w.rows, w.cols, w.data}; };
  const auto a = held("blk.1.attn_v.weight", GgmlType::Q4_0), b = held("blk.3.ffn_up.weight", GgmlType::Q4_0);
  {
    KldProbe probe(*model, tokens, 128, 1, 2);
    const double a_alone = probe.kld_with(a.name, view(a)), b_alone = probe.kld_with(b.name, view(b));
    // One weight in the background: the whole rerun gives what the probe measured for it alone.
    EXPECT_DOUBLE_EQ(probe.set_background({a}), a_alone);
    // On that background a second weight is measured with the first in place: their joint KLD.
    const double b_after_a = probe.kld_with(b.name, view(b));
    EXPECT_NE(b_after_a, b_alone);
    EXPECT_DOUBLE_EQ(probe.set_background({a, b}), b_after_a);
    // A background weight measured as loaded leaves the other's KLD alone.
    const auto* loaded_b = model->weights().find_tensor(b.name);
    EXPECT_DOUBLE_EQ(probe.kld_with(b.name, {loaded_b->type, b.rows, b.cols, loaded_b->bytes}), a_alone);
    EXPECT_EQ(probe.set_background({}), 0.0);  // the loaded weights again
    EXPECT_DOUBLE_EQ(probe.kld_with(b.name, view(b)), b_alone);
    KldProbe::HeldWeight stray = b;
    stray.name = "blk.9.ffn_up.weight";  // no such layer
    EXPECT_THROW(probe.set_background({a, stray}), Error);
    EXPECT_DOUBLE_EQ(probe.kld_with(b.name, view(b)), b_alone);  // the refused background is undone
    probe.set_background({a});
  }
  // The probe gone, every weight is as loaded.
  EXPECT_EQ(model->forward(first), reference);
}

}  // namespace
}  // namespace lowbit
