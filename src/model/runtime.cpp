// The measuring hooks of LlamaRuntime as any runtime can serve them: through forward() and
// output_logits() and the host's log_softmax. The CUDA backend overrides them to keep the logits on the GPU.
#include "lowbit/model/runtime.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/model/perplexity.h"

namespace lowbit {

std::vector<float> LlamaRuntime::next_token_log_probs(std::span<const int32_t> tokens, int windows) const {
  const int64_t n_vocab = config().n_vocab, len = int64_t(tokens.size()) / std::max(windows, 1);
  const auto logits = forward(tokens, windows);
  std::vector<float> out(tokens.size(), std::numeric_limits<float>::quiet_NaN());
  parallel_for(int64_t(tokens.size()), 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> log_p;
    log_p.resize(size_t(n_vocab));
    for (int64_t t = begin; t < end; ++t) {
      if (t % len == len - 1) continue;
      log_softmax(logits.data() + size_t(t * n_vocab), int(n_vocab), log_p.data());
      out[size_t(t)] = log_p[size_t(tokens[size_t(t + 1)])];
    }
  });
  return out;
}

std::unique_ptr<LlamaRuntime::LogProbReference> LlamaRuntime::keep_log_probs(std::vector<int64_t> rows, std::vector<float> log_probs) const {
  if (log_probs.size() != rows.size() * size_t(config().n_vocab)) throw Error("a reference of log-probabilities that does not fill its rows");
  auto reference = std::make_unique<LogProbReference>();
  reference->rows = std::move(rows), reference->log_probs = std::move(log_probs);
  return reference;
}

std::vector<double> LlamaRuntime::output_klds(const std::vector<float>& hidden, const LogProbReference& reference) const {
  const int64_t n_vocab = config().n_vocab;
  if (reference.log_probs.size() != reference.rows.size() * size_t(n_vocab))
    throw Error("a reference of log-probabilities kept by another runtime");
  const auto logits = output_logits(hidden);
  std::vector<double> klds(reference.rows.size());
  parallel_for(int64_t(klds.size()), 1, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> log_p;
    log_p.resize(size_t(n_vocab));
    for (int64_t p = begin; p < end; ++p) {
      log_softmax(logits.data() + size_t(reference.rows[size_t(p)] * n_vocab), int(n_vocab), log_p.data());
      const float* base = reference.log_probs.data() + size_t(p * n_vocab);
      double kld = 0;
      for (int64_t i = 0; i < n_vocab; ++i) kld += std::exp(double(base[i])) * double(base[i] - log_p[size_t(i)]);
      klds[size_t(p)] = kld;
    }
  });
  return klds;
}

}  // namespace lowbit
