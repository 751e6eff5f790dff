#include <gtest/gtest.h>

#include <random>

#include "lowbit/plan/allocate.h"
#include "lowbit/plan/roles.h"

namespace lowbit {
namespace {

double total(const std::vector<std::vector<Option>>& items, const std::vector<int>& choice, double Option::*field) {
  double sum = 0;
  for (size_t i = 0; i < items.size(); ++i) sum += items[i][size_t(choice[i])].*field;
  return sum;
}

// The best choice by trying them all (small instances only).
double brute_force(const std::vector<std::vector<Option>>& items, double budget) {
  double best = 1e300;
  std::vector<int> c(items.size(), 0);
  for (;;) {
    if (total(items, c, &Option::bits) <= budget) best = std::min(best, total(items, c, &Option::loss));
    size_t i = 0;
    while (i < c.size() && ++c[i] == int(items[i].size())) c[i++] = 0;
    if (i == c.size()) return best;
  }
}

// Items shaped like the planner's: more bits, less loss, with diminishing returns.
std::vector<std::vector<Option>> random_items(std::mt19937& rng, int n) {
  std::uniform_real_distribution<double> u(0.5, 2.0);
  auto items = std::vector<std::vector<Option>>(size_t(n));
  for (auto& item : items) {
    const double size = u(rng) * 1000, sensitivity = u(rng);
    for (double bpw : {2.6, 3.4, 4.5, 5.5, 6.6, 8.5}) item.push_back({bpw * size, sensitivity * std::exp2(-2 * bpw) * size});
  }
  return items;
}

TEST(Allocate, FitsTheBudgetAndComesCloseToTheOptimum) {
  std::mt19937 rng(42);
  for (int trial = 0; trial < 20; ++trial) {
    const auto items = random_items(rng, 6);
    double lo = 0, hi = 0;
    for (const auto& item : items) {
      lo += item.front().bits;
      hi += item.back().bits;
    }
    const double budget = lo + (hi - lo) * (0.1 + 0.04 * trial);
    const auto choice = allocate(items, budget);
    EXPECT_LE(total(items, choice, &Option::bits), budget);
    EXPECT_LE(total(items, choice, &Option::loss), brute_force(items, budget) * 1.10) << "trial " << trial;
  }
}

TEST(Allocate, EdgesOfTheBudget) {
  std::mt19937 rng(7);
  const auto items = random_items(rng, 5);
  double max_bits = 0;
  for (const auto& item : items) max_bits += item.back().bits;
  const auto rich = allocate(items, max_bits);
  for (size_t i = 0; i < items.size(); ++i) EXPECT_EQ(rich[i], int(items[i].size()) - 1);  // least loss everywhere
  double min_bits = 0;
  for (const auto& item : items) min_bits += item.front().bits;
  const auto poor = allocate(items, min_bits);
  for (int c : poor) EXPECT_EQ(c, 0);
  double previous = 1e300;
  for (double f = 0.0; f <= 1.0; f += 0.1) {  // more budget never costs more loss
    const auto c = allocate(items, min_bits + f * (max_bits - min_bits));
    const double loss = total(items, c, &Option::loss);
    EXPECT_LE(loss, previous * (1 + 1e-12));
    previous = loss;
  }
}

TEST(Roles, DenseAndMoeNames) {
  EXPECT_EQ(classify_tensor("token_embd.weight").role, TensorRole::Embedding);
  EXPECT_EQ(classify_tensor("output.weight").role, TensorRole::Output);
  EXPECT_EQ(classify_tensor("output_norm.weight").role, TensorRole::Norm);
  const auto q = classify_tensor("blk.12.attn_q.weight");
  EXPECT_EQ(q.role, TensorRole::AttnQ);
  EXPECT_EQ(q.layer, 12);
  EXPECT_EQ(classify_tensor("blk.0.attn_q.bias").role, TensorRole::Bias);
  EXPECT_EQ(classify_tensor("blk.3.attn_q_norm.weight").role, TensorRole::Norm);
  // Mixtral / Qwen-MoE / DeepSeek as llama.cpp names them.
  EXPECT_EQ(classify_tensor("blk.1.ffn_gate_inp.weight").role, TensorRole::Router);
  EXPECT_EQ(classify_tensor("blk.1.exp_probs_b.bias").role, TensorRole::Router);  // DeepSeek's routing bias
  EXPECT_EQ(classify_tensor("blk.1.ffn_gate_inp_shexp.weight").role, TensorRole::Router);  // Qwen2-MoE's shared-expert gate
  EXPECT_EQ(classify_tensor("blk.1.ffn_gate_shexp.weight").role, TensorRole::SharedExpertGate);
  EXPECT_EQ(classify_tensor("blk.1.ffn_up_exps.weight").role, TensorRole::ExpertUp);
  // DeepSeek's latent attention.
  EXPECT_EQ(classify_tensor("blk.0.attn_q_a.weight").role, TensorRole::AttnQ);
  EXPECT_EQ(classify_tensor("blk.0.attn_q_b.weight").role, TensorRole::AttnQ);
  EXPECT_EQ(classify_tensor("blk.0.attn_kv_a_mqa.weight").role, TensorRole::AttnKV);
  EXPECT_EQ(classify_tensor("blk.0.attn_kv_b.weight").role, TensorRole::AttnKV);
  EXPECT_EQ(classify_tensor("blk.0.attn_kv_a_norm.weight").role, TensorRole::Norm);
  EXPECT_EQ(classify_tensor("blk.1.ffn_gate_exps.weight").role, TensorRole::ExpertGate);
  EXPECT_EQ(classify_tensor("blk.1.ffn_down_exps.weight").role, TensorRole::ExpertDown);
  EXPECT_EQ(classify_tensor("blk.1.ffn_up_shexp.weight").role, TensorRole::SharedExpertUp);
  EXPECT_EQ(classify_tensor("blk.1.ffn_down.weight").role, TensorRole::FfnDown);
  EXPECT_EQ(role_name(TensorRole::ExpertDown), "ffn_down_exps");
}

}  // namespace
}  // namespace lowbit
