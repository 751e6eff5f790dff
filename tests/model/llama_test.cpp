// The forward pass on real models: stories260K's published greedy sample, and agreement between a
// model and its lowbit quantizations.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>

#include "lowbit/model/llama.h"
#include "support/paths.h"

namespace lowbit {
namespace {

std::string piece(const gguf::File& f, int32_t id) {
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
    text += piece(model->file(), next);
  }
  EXPECT_TRUE(text.starts_with(" Once upon a time, there was a little girl named Lily. She loved to play outside in the park.")) << text;
}

}  // namespace
}  // namespace lowbit
