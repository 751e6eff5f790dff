// Where a mixture-of-experts layer sends each token, as llama.cpp's softmax gating does: the softmax of
// the router's logits over all experts, the n_used experts of highest probability, and those
// probabilities as the experts' weights, renormalised to sum 1 when asked (Mixtral, Qwen3-MoE).
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit {

struct ExpertRoutes {
  int n_used = 0;
  std::vector<int32_t> expert;  // tokens × n_used, highest probability first
  std::vector<float> weight;    // tokens × n_used

  // The tokens routed to expert `e` and their weights, in token order.
  struct Batch {
    std::vector<int64_t> tokens;
    std::vector<float> weights;
  };
  std::vector<Batch> by_expert(int n_expert) const;
};

// `logits`: tokens × n_expert, row-major.
ExpertRoutes route_tokens(const float* logits, int64_t tokens, int n_expert, int n_used, bool normalise);

}  // namespace lowbit
