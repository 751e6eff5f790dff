#include "lowbit/model/moe_routing.h"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace lowbit {

ExpertRoutes route_tokens(const float* logits, int64_t tokens, int n_expert, int n_used, bool normalise) {
  ExpertRoutes routes{.n_used = n_used};
  routes.expert.resize(size_t(tokens * n_used));
  routes.weight.resize(size_t(tokens * n_used));
  std::vector<float> probs(static_cast<size_t>(n_expert));
  std::vector<int32_t> order(static_cast<size_t>(n_expert));
  for (int64_t t = 0; t < tokens; ++t) {
    const float* l = logits + t * n_expert;
    const float max_logit = *std::max_element(l, l + n_expert);
    float total = 0;
    for (int e = 0; e < n_expert; ++e) total += probs[size_t(e)] = std::exp(l[e] - max_logit);
    for (float& p : probs) p /= total;
    std::iota(order.begin(), order.end(), 0);
    // Ties go to the lower expert index, so that every backend picks the same experts.
    std::partial_sort(order.begin(), order.begin() + n_used, order.end(),
                      [&](int32_t a, int32_t b) { return probs[size_t(a)] > probs[size_t(b)] || (probs[size_t(a)] == probs[size_t(b)] && a < b); });
    float chosen = 0;
    for (int k = 0; k < n_used; ++k) chosen += probs[size_t(order[size_t(k)])];
    // llama.cpp clamps the sum at f16's smallest normal before dividing.
    const float scale = normalise ? 1.0f / std::max(chosen, 6.103515625e-5f) : 1.0f;
    for (int k = 0; k < n_used; ++k) {
      routes.expert[size_t(t * n_used + k)] = order[size_t(k)];
      routes.weight[size_t(t * n_used + k)] = probs[size_t(order[size_t(k)])] * scale;
    }
  }
  return routes;
}

std::vector<ExpertRoutes::Batch> ExpertRoutes::by_expert(int n_expert) const {
  std::vector<Batch> batches(static_cast<size_t>(n_expert));
  for (size_t i = 0; i < expert.size(); ++i) {
    Batch& b = batches[size_t(expert[i])];
    b.tokens.push_back(int64_t(i) / n_used);
    b.weights.push_back(weight[i]);
  }
  return batches;
}

}  // namespace lowbit
