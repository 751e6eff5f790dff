// Perplexity and KL-divergence as llama-perplexity computes them, on lowbit's own small model.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/perplexity.h"
#include "support/paths.h"

namespace lowbit {
namespace {

// lowbit-bytes-12M's vocabulary is bytes: BOS, a leading "▁", spaces as "▁" (3 bytes), byte b -> 3 + b.
std::vector<int32_t> byte_tokens(const std::string& text) {
  std::vector<int32_t> ids{1};
  auto push = [&](unsigned char b) { ids.push_back(3 + b); };
  for (unsigned char b : std::string("\xE2\x96\x81")) push(b);
  for (unsigned char c : text)
    if (c == ' ')
      for (unsigned char b : std::string("\xE2\x96\x81")) push(b);
    else
      push(c);
  return ids;
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  return {std::istreambuf_iterator<char>(in), {}};
}

// llama.cpp (c392e509) measured perplexity 3.4208 on Debian's GPL-3 text at context 512.
TEST(Perplexity, MatchesLlamaCppOnGpl3) {
  const std::filesystem::path gpl = "/usr/share/common-licenses/GPL-3";
  if (!std::filesystem::exists(gpl)) GTEST_SKIP() << "no " << gpl;
  const auto model = LlamaModel::load(test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf");
  const auto tokens = byte_tokens(read_file(gpl));
  const auto r = evaluate(*model, tokens, 512, 1);
  EXPECT_NEAR(r.ppl, 3.4208, 0.002);
  EXPECT_EQ(r.tokens, r.chunks * 255);
}

TEST(Perplexity, NextTokenLogProbsAreTheLogSoftmaxOfTheNextToken) {
  const auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  const int n_vocab = model->config().n_vocab, len = 32;
  std::vector<int32_t> tokens;
  for (int t = 0; t < 2 * len; ++t) tokens.push_back(int32_t(t % len == 0 ? 1 : (t * 37 + 11) % n_vocab));
  const auto logits = model->forward(tokens, 2);
  const auto terms = model->next_token_log_probs(tokens, 2);
  ASSERT_EQ(terms.size(), tokens.size());
  std::vector<float> log_p(static_cast<size_t>(n_vocab));
  for (size_t t = 0; t < tokens.size(); ++t) {
    if (t % len == len - 1) {
      EXPECT_TRUE(std::isnan(terms[t]));
      continue;
    }
    log_softmax(logits.data() + t * size_t(n_vocab), n_vocab, log_p.data());
    EXPECT_EQ(terms[t], log_p[size_t(tokens[t + 1])]) << "row " << t;
  }
}

TEST(Perplexity, KldOfAModelAgainstItselfIsTheEncodingFloor) {
  const auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  // Text the model finds plausible (its own greedy continuation), so no prediction falls below the
  // 16-nat floor of the stored log-probabilities.
  std::vector<int32_t> story{1};
  while (story.size() < 64) {
    const auto logits = model->forward(story);
    const float* last = logits.data() + (story.size() - 1) * size_t(model->config().n_vocab);
    story.push_back(int32_t(std::max_element(last, last + model->config().n_vocab) - last));
  }
  std::vector<int32_t> tokens;
  for (int copy = 0; copy < 3; ++copy) tokens.insert(tokens.end(), story.begin(), story.end());
  BaseLogits base(64, model->config().n_vocab, {tokens.begin(), tokens.end()});
  const auto plain = evaluate(*model, tokens, 64, 1, nullptr, &base);
  test::TempDir dir;
  base.save(dir / "base.logits");
  const auto loaded = BaseLogits::load(dir / "base.logits");
  EXPECT_EQ(loaded.predictions(), 3 * 31);
  const auto self = evaluate(*model, tokens, 64, 1, &loaded);
  EXPECT_NEAR(self.ppl, plain.ppl, 1e-9);
  EXPECT_NEAR(*self.base_ppl, plain.ppl, plain.ppl * 1e-3);  // uint16 log-probabilities: small rounding
  EXPECT_LT(self.kld->mean, 1e-4);
  EXPECT_EQ(*self.top1, 1.0);

  std::vector<int32_t> other(tokens);
  other[70] = 5;
  EXPECT_THROW(evaluate(*model, other, 64, 1, &loaded), Error);        // scored on other tokens
  EXPECT_THROW(evaluate(*model, std::span(tokens).first(100), 64, 1), Error);  // fewer than two windows
}

}  // namespace
}  // namespace lowbit
