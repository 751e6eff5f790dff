// Mixture-of-experts layers in the CPU runtime, against a plain reference written here: routing by
// softmax and top-k (renormalised for Mixtral, not for Qwen2-MoE), each expert's rows of the stacked
// tensors, the shared expert and its sigmoid gate; and importance matrices counted per expert.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <random>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/model/imatrix_collector.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/moe_routing.h"
#include "support/gguf_edit.h"
#include "support/paths.h"
#include "support/tiny_moe_model.h"

namespace lowbit {
namespace {

// A tensor's values as float32, in its stored (row-major, GGUF) order.
std::vector<float> values_of(const ModelWeights& w, const std::string& name) {
  const auto* t = w.find_tensor(name);
  EXPECT_NE(t, nullptr) << name;
  std::vector<float> out(size_t(t->elements()));
  dequantize_rows(t->type, t->bytes.data(), t->elements() / t->ne[0], t->ne[0], out.data());
  return out;
}

// y = W x for W of `rows` × `cols` starting at `w`.
std::vector<float> times(const float* w, int64_t rows, int64_t cols, const float* x) {
  std::vector<float> y(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += double(w[r * cols + c]) * x[c];
    y[size_t(r)] = float(s);
  }
  return y;
}

float silu(float v) { return v / (1 + std::exp(-v)); }

// The feed-forward block of one token, written out from the definitions.
std::vector<float> swiglu(const float* gate, const float* up, const float* down, int64_t ff, int64_t n, const float* x) {
  const auto g = times(gate, ff, n, x), u = times(up, ff, n, x);
  std::vector<float> h(static_cast<size_t>(ff));
  for (int64_t i = 0; i < ff; ++i) h[size_t(i)] = silu(g[size_t(i)]) * u[size_t(i)];
  return times(down, n, ff, h.data());
}

// A layer's mixture-of-experts output for one token (x already normed).
std::vector<float> moe_reference(const ModelWeights& w, int layer, const LlamaConfig& c, const float* x) {
  const std::string p = "blk." + std::to_string(layer) + ".";
  const int64_t n = c.n_embd, ff = w.find_tensor(p + "ffn_gate_exps.weight")->ne[1];
  const auto router = values_of(w, p + "ffn_gate_inp.weight");
  const auto gate = values_of(w, p + "ffn_gate_exps.weight"), up = values_of(w, p + "ffn_up_exps.weight"),
             down = values_of(w, p + "ffn_down_exps.weight");
  auto logits = times(router.data(), c.n_expert, n, x);
  const float top = *std::max_element(logits.begin(), logits.end());
  double total = 0;
  for (float& l : logits) total += l = std::exp(l - top);
  for (float& l : logits) l = float(l / total);
  std::vector<int> order(size_t(c.n_expert));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[size_t(a)] > logits[size_t(b)]; });
  double chosen = 0;
  for (int k = 0; k < c.n_expert_used; ++k) chosen += logits[size_t(order[size_t(k)])];
  std::vector<float> y(size_t(n), 0.0f);
  for (int k = 0; k < c.n_expert_used; ++k) {
    const int e = order[size_t(k)];
    const double weight = c.expert_weights_norm ? logits[size_t(e)] / chosen : logits[size_t(e)];
    const auto out = swiglu(gate.data() + e * ff * n, up.data() + e * ff * n, down.data() + e * n * ff, ff, n, x);
    for (int64_t i = 0; i < n; ++i) y[size_t(i)] += float(weight * out[size_t(i)]);
  }
  if (w.find_tensor(p + "ffn_up_shexp.weight")) {
    const auto out = swiglu(values_of(w, p + "ffn_gate_shexp.weight").data(), values_of(w, p + "ffn_up_shexp.weight").data(),
                            values_of(w, p + "ffn_down_shexp.weight").data(), ff, n, x);
    float g = 1;
    if (w.find_tensor(p + "ffn_gate_inp_shexp.weight")) g = 1 / (1 + std::exp(-times(values_of(w, p + "ffn_gate_inp_shexp.weight").data(), 1, n, x)[0]));
    for (int64_t i = 0; i < n; ++i) y[size_t(i)] += g * out[size_t(i)];
  }
  return y;
}

std::vector<float> rms_normed(const float* x, const std::vector<float>& weight, float eps) {
  double s = 0;
  for (size_t i = 0; i < weight.size(); ++i) s += double(x[i]) * x[i];
  const float scale = float(1 / std::sqrt(s / double(weight.size()) + eps));
  std::vector<float> y(weight.size());
  for (size_t i = 0; i < weight.size(); ++i) y[i] = x[i] * scale * weight[i];
  return y;
}

class MixtureOfExperts : public testing::TestWithParam<test::MoeStyle> {};

// One layer: the runtime's output minus its attention part (the same layer with the experts' outputs
// swapped to zeros) is the reference's mixture of experts of the state after attention.
TEST_P(MixtureOfExperts, LayerMatchesThePlainReference) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "moe.gguf", {.style = GetParam(), .experts = 4});
  auto model = LlamaModel::load(dir / "moe.gguf");
  const LlamaConfig& c = model->config();
  ASSERT_EQ(c.n_expert, 4);
  ASSERT_EQ(c.n_expert_used, 2);
  EXPECT_EQ(c.expert_weights_norm, GetParam() == test::MoeStyle::mixtral);
  ASSERT_TRUE(model->has_experts());

  const int64_t T = 12, E = c.n_embd;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> hidden(size_t(T * E));
  for (float& v : hidden) v = normal(rng);
  for (int layer = 0; layer < c.n_layer; ++layer) {
    auto full = hidden;
    model->apply_layer(layer, full);
    // The experts' down projections (and the shared expert's) as zeros: the layer adds attention only.
    const std::string p = "blk." + std::to_string(layer) + ".";
    std::vector<std::vector<std::byte>> zeros;
    std::vector<std::pair<std::string, QuantizedMatrix>> saved;
    for (const auto& [name, m] : model->matrices()) {
      if (name != p + "ffn_down_exps.weight" && name != p + "ffn_down_shexp.weight") continue;
      zeros.emplace_back(m.data.size());
      std::vector<float> none(size_t(m.rows * m.cols), 0.0f);
      quantize_rows(m.type, none.data(), m.rows, m.cols, nullptr, zeros.back().data());
      saved.emplace_back(name, model->swap_weight(name, {m.type, m.rows, m.cols, zeros.back()}));
    }
    ASSERT_FALSE(saved.empty());
    auto attention_only = hidden;
    model->apply_layer(layer, attention_only);
    for (const auto& [name, m] : saved) model->swap_weight(name, m);

    const auto ffn_norm = values_of(model->weights(), p + "ffn_norm.weight");
    double worst = 0, scale = 0;
    for (int64_t t = 0; t < T; ++t) {
      const auto x = rms_normed(attention_only.data() + t * E, ffn_norm, c.rms_eps);
      const auto expected = moe_reference(model->weights(), layer, c, x.data());
      for (int64_t i = 0; i < E; ++i) {
        worst = std::max(worst, double(std::abs(full[size_t(t * E + i)] - attention_only[size_t(t * E + i)] - expected[size_t(i)])));
        scale = std::max(scale, double(std::abs(expected[size_t(i)])));
      }
    }
    EXPECT_GT(scale, 1e-3) << "the experts' output is too small to tell anything";
    EXPECT_LE(worst, 1e-4 * scale) << "layer " << layer;
    hidden = full;
  }
}

// llama-imatrix's counting: the router and the shared expert see every token; the stacked experts
// count, per expert, the tokens routed to it, n_used per token in all; and since every token reaches
// n_used experts, their sums over experts are n_used times the router's.
TEST_P(MixtureOfExperts, ImportanceMatrixCountsEachExpertsTokens) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "moe.gguf", {.style = GetParam(), .experts = 4});
  const auto model = LlamaModel::load(dir / "moe.gguf");
  std::vector<int32_t> tokens(64);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 37 + 11) % 64);
  const auto run = collect_imatrix(*model, tokens, 32, 1);
  ASSERT_EQ(run.chunks, 2);
  std::map<std::string, const ImatrixSums*> by_name;
  for (const auto& e : run.entries) by_name[e.name] = &e;
  for (int layer = 0; layer < 2; ++layer) {
    const std::string p = "blk." + std::to_string(layer) + ".";
    const auto* router = by_name.at(p + "ffn_gate_inp.weight");
    ASSERT_EQ(router->experts(), 1);
    EXPECT_EQ(router->counts[0], 64.0f);
    int used = 0;
    for (const char* stacked : {"ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"}) {
      const auto* e = by_name.at(p + stacked);
      ASSERT_EQ(e->experts(), 4) << stacked;
      EXPECT_EQ(std::accumulate(e->counts.begin(), e->counts.end(), 0.0f), 64.0f * 2) << stacked;
      used = int(std::count_if(e->counts.begin(), e->counts.end(), [](float n) { return n > 0; }));
    }
    EXPECT_GE(used, 2) << "the router sends every token to the same experts: the test proves little";
    const auto* gate = by_name.at(p + "ffn_gate_exps.weight");
    for (int64_t col = 0; col < router->columns(); ++col) {
      double over_experts = 0;
      for (int64_t x = 0; x < 4; ++x) over_experts += gate->sums[size_t(x * gate->columns() + col)];
      EXPECT_NEAR(over_experts, 2.0 * router->sums[size_t(col)], 1e-4 * router->sums[size_t(col)]) << p << " column " << col;
    }
  }
  // Written in llama.cpp's GGUF form and read back: [columns, experts] and counts per expert.
  write_imatrix_gguf(dir / "moe.imatrix.gguf", run.entries, {"tokens"}, uint32_t(run.chunks), 32);
  const auto m = ImportanceMatrix::load(dir / "moe.imatrix.gguf");
  const auto* down = m.find("blk.1.ffn_down_exps.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->experts, 4);
  EXPECT_EQ(down->columns, 256);
}

INSTANTIATE_TEST_SUITE_P(Styles, MixtureOfExperts, testing::Values(test::MoeStyle::qwen2_moe, test::MoeStyle::mixtral),
                         [](const testing::TestParamInfo<test::MoeStyle>& p) { return p.param == test::MoeStyle::mixtral ? "Mixtral" : "Qwen2Moe"; });

TEST(ExpertRouting, TopKOfTheSoftmaxRenormalisedOnRequest) {
  const float logits[] = {0.0f, 2.0f, 1.0f, 2.0f};  // a tie between experts 1 and 3: the lower index first
  const auto plain = route_tokens(logits, 1, 4, 2, false), normed = route_tokens(logits, 1, 4, 2, true);
  EXPECT_EQ(plain.expert, (std::vector<int32_t>{1, 3}));
  const float total = 1 + 2 * std::exp(2.0f) + std::exp(1.0f);
  EXPECT_NEAR(plain.weight[0], std::exp(2.0f) / total, 1e-6);
  EXPECT_NEAR(normed.weight[0], 0.5f, 1e-6);
  EXPECT_NEAR(normed.weight[1], 0.5f, 1e-6);
  const auto batches = normed.by_expert(4);
  EXPECT_TRUE(batches[0].tokens.empty());
  EXPECT_EQ(batches[3].tokens, std::vector<int64_t>{0});
}

TEST(MixtureOfExpertsConfig, MissingExpertCountIsRefusedByName) {
  test::TempDir dir;
  test::write_tiny_moe_gguf(dir / "moe.gguf", {.style = test::MoeStyle::qwen2_moe});
  test::copy_gguf_with(dir / "moe.gguf", dir / "bad.gguf", {{"qwen2moe.expert_count", std::nullopt}});
  try {
    LlamaModel::load(dir / "bad.gguf");
    FAIL() << "loaded a MoE model without expert_count";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("qwen2moe.expert_count"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace lowbit
