// GPTQ's Hessians (model/hessian_collector.h, io/hessian.h) on a real model: each input's XᵀX is the
// sum over the windows' rows, stored once for the weights that share it, and its diagonal divided by
// the token count is the importance matrix collect_imatrix gives over the same windows.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/model/hessian_collector.h"
#include "lowbit/model/imatrix_collector.h"
#include "lowbit/model/llama.h"
#include "support/paths.h"

namespace lowbit {
namespace {

constexpr int kCtx = 32, kWindows = 3;

std::vector<int32_t> some_tokens(int n_vocab) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id(3, n_vocab - 1);
  std::vector<int32_t> tokens(size_t(kCtx * kWindows));
  for (auto& t : tokens) t = id(rng);
  return tokens;
}

class HessianCollector : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
    tokens_ = some_tokens(model_->config().n_vocab);
  }
  std::unique_ptr<LlamaModel> model_;
  std::vector<int32_t> tokens_;
  test::TempDir dir_;
};

TEST_F(HessianCollector, DiagonalOverTokensIsTheImportanceMatrix) {
  const auto hessians = collect_hessians(*model_, tokens_, kCtx, 1);
  EXPECT_EQ(hessians.chunks, kWindows);
  EXPECT_EQ(hessians.tokens, uint64_t(kCtx * kWindows));
  write_hessians(dir_.path() / "h.gguf", hessians.inputs, {"random"}, uint32_t(hessians.chunks), kCtx, hessians.tokens);
  const auto imatrix_run = collect_imatrix(*model_, tokens_, kCtx, 1);
  write_imatrix_gguf(dir_.path() / "i.gguf", imatrix_run.entries, {"random"}, uint32_t(imatrix_run.chunks), kCtx);

  const HessianFile h(dir_.path() / "h.gguf");
  const auto imatrix = ImportanceMatrix::load(dir_.path() / "i.gguf");
  EXPECT_EQ(h.tokens(), uint64_t(kCtx * kWindows));
  ASSERT_EQ(imatrix.entries().size(), size_t(7 * model_->config().n_layer));
  for (const auto& e : imatrix.entries()) {
    SCOPED_TRACE(e.name);
    const HessianFile::Input* in = h.find(e.name);
    ASSERT_NE(in, nullptr);
    ASSERT_EQ(in->columns, e.columns);
    for (int64_t c = 0; c < e.columns; ++c) {
      const float diag = in->xtx[size_t(c * in->columns + c)] / float(h.tokens());
      ASSERT_NEAR(diag, e.weights[size_t(c)], 1e-6f * std::max(1.0f, e.weights[size_t(c)])) << "column " << c;
    }
  }
}

// Every entry against XᵀX summed in double from what the forward pass hands its products.
TEST_F(HessianCollector, EachInputIsXTransposeXStoredOnce) {
  std::map<std::string, std::vector<double>> reference;
  std::map<std::string, int64_t> columns;
  std::map<std::string, std::string> reader;  // input -> the first weight that reads it
  const ActivationObserver observe = [&](const std::string& weight, int, const float* x, int64_t rows, int64_t cols) {
    const std::string input = hessian_input_of(weight);
    if (reader.emplace(input, weight).first->second != weight) return;  // k, v and up read q's and gate's rows
    auto& xtx = reference[input];
    xtx.resize(size_t(cols * cols));
    columns[input] = cols;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < cols; ++i)
        for (int64_t j = 0; j < cols; ++j) xtx[size_t(i * cols + j)] += double(x[r * cols + i]) * x[r * cols + j];
  };
  for (int w = 0; w < kWindows; ++w) {
    std::vector<int32_t> window(tokens_.begin() + w * kCtx, tokens_.begin() + (w + 1) * kCtx);
    window[0] = 1;  // BOS, as the collectors put it
    model_->forward(window, 1, observe);
  }
  const auto run = collect_hessians(*model_, tokens_, kCtx, 1);
  write_hessians(dir_.path() / "h.gguf", run.inputs, {"random"}, uint32_t(run.chunks), kCtx, run.tokens);
  const HessianFile h(dir_.path() / "h.gguf");
  EXPECT_EQ(run.inputs.size(), reference.size());  // 4 per layer and the output layer's
  EXPECT_EQ(h.find("blk.2.attn_k.weight"), h.find("blk.2.attn_q.weight"));
  EXPECT_EQ(h.find("blk.2.attn_v.weight")->name, "blk.2.attn_qkv");
  EXPECT_EQ(h.find("blk.2.ffn_up.weight")->name, "blk.2.ffn_gate_up");
  EXPECT_EQ(h.find("blk.2.ffn_down.weight")->name, "blk.2.ffn_down");
  EXPECT_EQ(h.find("token_embd.weight"), nullptr);
  for (const auto& [input, xtx] : reference) {
    SCOPED_TRACE(input);
    const auto* in = h.find(reader[input]);
    ASSERT_NE(in, nullptr);
    ASSERT_EQ(in->columns, columns[input]);
    for (size_t k = 0; k < xtx.size(); ++k) ASSERT_NEAR(in->xtx[k], xtx[k], 1e-4 * (1 + std::fabs(xtx[k]))) << "element " << k;
  }
}

TEST_F(HessianCollector, FileRefusesWhatIsNotAHessian) {
  const auto imatrix_run = collect_imatrix(*model_, tokens_, kCtx, 1);
  write_imatrix_gguf(dir_.path() / "i.gguf", imatrix_run.entries, {"random"}, 1, kCtx);
  EXPECT_THROW(HessianFile(dir_.path() / "i.gguf"), Error);
  EXPECT_THROW(HessianFile(test::shared_data_dir() / "stories260K.gguf"), Error);
  // A weight naming an input without a tensor.
  HessianSums s{"blk.0.attn_qkv", {"blk.0.attn_q.weight"}, 2, {1, 0, 0, 1}};
  write_hessians(dir_.path() / "h.gguf", {s}, {"x"}, 1, 16, 16);
  EXPECT_NE(HessianFile(dir_.path() / "h.gguf").find("blk.0.attn_q.weight"), nullptr);
  s.xtx = {-1, 0, 0, 1};  // a negative sum of squares
  write_hessians(dir_.path() / "bad.gguf", {s}, {"x"}, 1, 16, 16);
  EXPECT_THROW(HessianFile(dir_.path() / "bad.gguf"), Error);
}

}  // namespace
}  // namespace lowbit
