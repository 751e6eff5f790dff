#include "lowbit/plan/allocate.h"

#include <algorithm>
#include <cmath>
#include <limits>

namespace lowbit {
namespace {

std::vector<int> choose_for(const std::vector<std::vector<Option>>& items, double lambda, double* bits) {
  std::vector<int> choice(items.size());
  *bits = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    double best = std::numeric_limits<double>::infinity();
    for (size_t k = 0; k < items[i].size(); ++k) {
      const double cost = items[i][k].loss + lambda * items[i][k].bits;
      // Ties go to the smaller option, so a larger λ never picks more bits.
      if (cost < best || (cost == best && items[i][k].bits < items[i][size_t(choice[i])].bits)) {
        best = cost;
        choice[i] = int(k);
      }
    }
    *bits += items[i][size_t(choice[i])].bits;
  }
  return choice;
}

// The relaxation leaves integrality gaps on small instances: trade bits between two tensors (one
// smaller, the other larger) while that lowers the total loss and still fits. Quadratic in the number
// of tensors, so only for models of up to a few thousand.
void exchange(const std::vector<std::vector<Option>>& items, double budget, std::vector<int>& choice, double& bits) {
  if (items.size() > 4000) return;
  for (int round = 0; round < 64; ++round) {
    double best_gain = 1e-15;
    size_t bi = 0, bj = 0;
    int ba = -1, bb = -1;
    for (size_t i = 0; i < items.size(); ++i) {
      const Option& ci = items[i][size_t(choice[i])];
      for (size_t a = 0; a < items[i].size(); ++a) {
        const Option& oi = items[i][a];
        if (oi.bits >= ci.bits) continue;  // i gives bits up...
        for (size_t j = 0; j < items.size(); ++j) {
          if (j == i) continue;
          const Option& cj = items[j][size_t(choice[j])];
          for (size_t b = 0; b < items[j].size(); ++b) {
            const Option& oj = items[j][b];
            if (oj.bits <= cj.bits) continue;  // ...that j takes
            if (bits - ci.bits + oi.bits - cj.bits + oj.bits > budget) continue;
            const double gain = (ci.loss + cj.loss) - (oi.loss + oj.loss);
            if (gain > best_gain) {
              best_gain = gain;
              bi = i, bj = j, ba = int(a), bb = int(b);
            }
          }
        }
      }
    }
    if (ba < 0) return;
    bits += items[bi][size_t(ba)].bits - items[bi][size_t(choice[bi])].bits + items[bj][size_t(bb)].bits - items[bj][size_t(choice[bj])].bits;
    choice[bi] = ba;
    choice[bj] = bb;
  }
}

}  // namespace

std::vector<int> allocate(const std::vector<std::vector<Option>>& items, double budget_bits) {
  // λ = 0 takes the least loss regardless of size; a huge λ takes the smallest options.
  double bits = 0;
  auto best = choose_for(items, 0.0, &bits);
  if (bits > budget_bits) {
    // The smallest λ whose choice fits, by bisection on log λ: λ = 1e-30 does not fit, `hi` does.
    double hi = 1.0;
    while (choose_for(items, hi, &bits), bits > budget_bits && hi < 1e30) hi *= 4;
    best = choose_for(items, hi, &bits);
    double log_lo = std::log(1e-30), log_hi = std::log(hi);
    for (int iteration = 0; iteration < 100 && log_hi - log_lo > 1e-9; ++iteration) {
      const double mid = 0.5 * (log_lo + log_hi);
      double mid_bits = 0;
      auto c = choose_for(items, std::exp(mid), &mid_bits);
      if (mid_bits <= budget_bits) {
        log_hi = mid;
        best = std::move(c);
        bits = mid_bits;
      } else {
        log_lo = mid;
      }
    }
  }
  // Spend what is left: repeatedly take the upgrade that saves the most loss per added bit and fits.
  for (;;) {
    double best_gain = 0;
    size_t best_item = 0;
    int best_option = -1;
    for (size_t i = 0; i < items.size(); ++i) {
      const Option& now = items[i][size_t(best[i])];
      for (size_t k = 0; k < items[i].size(); ++k) {
        const Option& o = items[i][k];
        if (o.bits <= now.bits || o.loss >= now.loss || bits - now.bits + o.bits > budget_bits) continue;
        const double gain = (now.loss - o.loss) / (o.bits - now.bits);
        if (gain > best_gain) {
          best_gain = gain;
          best_item = i;
          best_option = int(k);
        }
      }
    }
    if (best_option < 0) break;
    bits += items[best_item][size_t(best_option)].bits - items[best_item][size_t(best[best_item])].bits;
    best[best_item] = best_option;
  }
  exchange(items, budget_bits, best, bits);
  return best;
}

}  // namespace lowbit
