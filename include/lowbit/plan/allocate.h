// Choosing one option per tensor (a format, with its size and predicted loss) so that the total size
// stays within a budget at the least total loss: a multiple-choice knapsack, solved by Lagrangian
// relaxation (each tensor independently minimises loss + λ·bits; λ found by bisection) followed by
// greedy upgrades, in order of loss saved per bit, into the budget that remains, and pairwise
// exchanges of bits between tensors while they lower the loss.
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit {

struct Option {
  double bits = 0;   // total bits the tensor takes in this option
  double loss = 0;   // predicted loss
};

// choices[i] = index into items[i]. Every item needs at least one option; the cheapest options must fit
// (else the smallest choice per item is returned and the caller reports the overshoot).
std::vector<int> allocate(const std::vector<std::vector<Option>>& items, double budget_bits);

}  // namespace lowbit
