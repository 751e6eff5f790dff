// The forward pass on real models: stories260K's published greedy sample, and agreement between a
// model and its lowbit quantizations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include <fstream>

#include "lowbit/model/llama.h"
#include "lowbit/model/tokenizer.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::string piece(const ModelWeights& f, int32_t id) {
  std::string s = *f.find("tokenizer.ggml.tokens")->get_if<gguf::Array>()->items[size_t(id)].get_if<std::string>();
  for (size_t p; (p = s.find("\xE2\x96\x81")) != std::string::npos;) s.replace(p, 3, " ");  // "▁" is a space
  return s;
}

int32_t argmax(const float* logits, int n) { return int32_t(std::max_element(logits, logits + n) - logits); }

TEST(LlamaModel, Stories260KGreedySampleFromBos) {
  const auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  const auto& c = model->config();
  EXPECT_EQ(c.n_layer, 5);
  EXPECT_EQ(c.n_head_kv, 4);
  std::vector<int32_t> tokens{1};
  std::string text;
  for (int step = 0; step < 40; ++step) {
    const auto logits = model->forward(tokens);
    const int32_t next = argmax(logits.data() + (tokens.size() - 1) * size_t(c.n_vocab), c.n_vocab);
    tokens.push_back(next);
    text += piece(model->weights(), next);
  }
  EXPECT_TRUE(text.starts_with(" Once upon a time, there was a little girl named Lily. She loved to play outside in the park.")) << text;
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// The shared data README: scoring each of the first 50 stories of the TinyStories excerpt as [BOS] +
// its tokens (at most 512) gives 16,051 predictions at 1.2882 nats per token (an independent float64
// implementation).
TEST(LlamaModel, Stories260KNatsPerTokenOnFiftyStories) {
  const auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  const auto tokenizer = Tokenizer::from_gguf_metadata(model->weights().metadata());
  std::ifstream in(test::shared_data_dir() / "tinystories_valid_first1000.txt");
  const std::string text((std::istreambuf_iterator<char>(in)), {});
  const std::string separator = "\n<|endoftext|>\n";
  const int n_vocab = model->config().n_vocab;
  double nll = 0;
  int64_t predictions = 0;
  size_t start = 0;
  for (int story = 0; story < 50; ++story) {
    const size_t end = text.find(separator, start);
    ASSERT_NE(end, std::string::npos);
    auto tokens = tokenizer.encode(std::string_view(text).substr(start, end - start), /*add_special=*/true);
    start = end + separator.size();
    if (tokens.size() > 512) tokens.resize(512);
    const auto logits = model->forward(tokens);
    for (size_t j = 0; j + 1 < tokens.size(); ++j) {
      const float* l = logits.data() + j * size_t(n_vocab);
      const float max = *std::max_element(l, l + n_vocab);
      double sum = 0;
      for (int i = 0; i < n_vocab; ++i) sum += std::exp(double(l[i]) - max);
      nll += std::log(sum) + max - l[tokens[j + 1]];
      ++predictions;
    }
  }
  EXPECT_EQ(predictions, 16051);
  EXPECT_NEAR(nll / double(predictions), 1.2882, 5e-4);
}

// A plain double-precision forward pass, written here from the model's definition, for comparison.
std::vector<double> reference_logits(const ModelWeights& f, const std::vector<int32_t>& tokens) {
  auto tensor = [&](const std::string& name) {
    const auto* t = f.find_tensor(name);
    const auto* p = reinterpret_cast<const float*>(t->bytes.data());
    return std::vector<double>(p, p + t->elements());
  };
  const int E = 256, H = 4, KV = 2, D = 64, F = 256, V = 259, T = int(tokens.size());
  auto matvec = [](const std::vector<double>& w, const std::vector<double>& x, int rows, int cols) {
    std::vector<double> y(size_t(rows), 0.0);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) y[size_t(r)] += w[size_t(r * cols + c)] * x[size_t(c)];
    return y;
  };
  auto norm = [&](const std::vector<double>& x, const std::vector<double>& w) {
    double ss = 0;
    for (double v : x) ss += v * v;
    const double s = 1.0 / std::sqrt(ss / double(x.size()) + 1e-5);
    std::vector<double> y(x.size());
    for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
    return y;
  };
  auto rope = [&](std::vector<double>& v, int pos, int heads) {  // adjacent pairs, base 10000
    for (int h = 0; h < heads; ++h)
      for (int i = 0; i < D / 2; ++i) {
        const double a = pos * std::pow(10000.0, -2.0 * i / D);
        double& x = v[size_t(h * D + 2 * i)];
        double& y = v[size_t(h * D + 2 * i + 1)];
        const double x0 = x, y0 = y;
        x = x0 * std::cos(a) - y0 * std::sin(a);
        y = x0 * std::sin(a) + y0 * std::cos(a);
      }
  };
  const auto embd = tensor("token_embd.weight");
  auto h = std::vector<std::vector<double>>(size_t(T));
  for (int t = 0; t < T; ++t) h[size_t(t)].assign(embd.begin() + tokens[size_t(t)] * E, embd.begin() + (tokens[size_t(t)] + 1) * E);
  for (int l = 0; l < 2; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    const auto wq = tensor(p + "attn_q.weight"), wk = tensor(p + "attn_k.weight"), wv = tensor(p + "attn_v.weight");
    const auto wo = tensor(p + "attn_output.weight"), wg = tensor(p + "ffn_gate.weight"), wu = tensor(p + "ffn_up.weight");
    const auto wd = tensor(p + "ffn_down.weight"), an = tensor(p + "attn_norm.weight"), fn = tensor(p + "ffn_norm.weight");
    auto q = std::vector<std::vector<double>>(size_t(T)), k = q, v = q;
    for (int t = 0; t < T; ++t) {
      const auto x = norm(h[size_t(t)], an);
      q[size_t(t)] = matvec(wq, x, H * D, E);
      k[size_t(t)] = matvec(wk, x, KV * D, E);
      v[size_t(t)] = matvec(wv, x, KV * D, E);
      rope(q[size_t(t)], t, H);
      rope(k[size_t(t)], t, KV);
    }
    for (int t = 0; t < T; ++t) {
      std::vector<double> att(size_t(H * D), 0.0);
      for (int hh = 0; hh < H; ++hh) {
        const int kv = hh / (H / KV);
        std::vector<double> s(size_t(t + 1));
        double mx = -1e300, total = 0;
        for (int u = 0; u <= t; ++u) {
          double dot = 0;
          for (int i = 0; i < D; ++i) dot += q[size_t(t)][size_t(hh * D + i)] * k[size_t(u)][size_t(kv * D + i)];
          s[size_t(u)] = dot / std::sqrt(double(D));
          mx = std::max(mx, s[size_t(u)]);
        }
        for (auto& x : s) total += x = std::exp(x - mx);
        for (int u = 0; u <= t; ++u)
          for (int i = 0; i < D; ++i) att[size_t(hh * D + i)] += s[size_t(u)] / total * v[size_t(u)][size_t(kv * D + i)];
      }
      const auto o = matvec(wo, att, E, H * D);
      for (int i = 0; i < E; ++i) h[size_t(t)][size_t(i)] += o[size_t(i)];
      const auto x = norm(h[size_t(t)], fn);
      auto g = matvec(wg, x, F, E);
      const auto u = matvec(wu, x, F, E);
      for (int i = 0; i < F; ++i) g[size_t(i)] = g[size_t(i)] / (1 + std::exp(-g[size_t(i)])) * u[size_t(i)];
      const auto d = matvec(wd, g, E, F);
      for (int i = 0; i < E; ++i) h[size_t(t)][size_t(i)] += d[size_t(i)];
    }
  }
  const auto out_norm = tensor("output_norm.weight"), out = tensor("output.weight");
  std::vector<double> logits;
  for (int t = 0; t < T; ++t) {
    const auto y = matvec(out, norm(h[size_t(t)], out_norm), V, E);
    logits.insert(logits.end(), y.begin(), y.end());
  }
  return logits;
}

TEST(LlamaModel, MatchesADoublePrecisionReference) {
  const auto path = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  const auto model = LlamaModel::load(path);
  const std::vector<int32_t> tokens{1, 70, 120, 3, 258, 99, 45, 200, 17, 88, 250, 5, 6, 7, 150, 149};
  const auto got = model->forward(tokens);
  const auto want = reference_logits(model->weights(), tokens);
  ASSERT_EQ(got.size(), want.size());
  double err = 0, norm = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    err += (got[i] - want[i]) * (got[i] - want[i]);
    norm += want[i] * want[i];
  }
  EXPECT_LT(std::sqrt(err / norm), 1e-5);  // float32 arithmetic lands far under 1e-3
}

}  // namespace
}  // namespace lowbit
