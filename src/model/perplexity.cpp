#include "lowbit/model/perplexity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/core/thread_pool.h"

namespace lowbit {
namespace {

constexpr char kMagic[8] = {'_', 'l', 'o', 'g', 'i', 't', 's', '_'};

double percentile(std::vector<double> sorted, double p) {
  if (sorted.empty()) return 0;
  const double pos = p * double(sorted.size() - 1);
  const size_t lo = size_t(pos);
  const size_t hi = std::min(lo + 1, sorted.size() - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - double(lo));
}

}  // namespace

BaseLogits::BaseLogits(int n_ctx, int n_vocab, std::vector<int32_t> tokens) : n_ctx_(n_ctx), n_vocab_(n_vocab), tokens_(std::move(tokens)) {}

void BaseLogits::add_window(std::span<const float> logits) {
  const int first = n_ctx_ / 2;
  for (int j = first; j < n_ctx_ - 1; ++j) {
    const float* l = logits.data() + size_t(j) * size_t(n_vocab_);
    // llama.cpp's encoding: log-probabilities within 16 nats of the best, in 65536 steps.
    const float max = *std::max_element(l, l + n_vocab_);
    const float min = std::max(*std::min_element(l, l + n_vocab_), max - 16.0f);
    double sum = 0;
    for (int i = 0; i < n_vocab_; ++i) sum += std::exp(double(l[i] - max));
    const float scale = (max - min) / 65535.0f;
    const float min_log_prob = min - max - float(std::log(sum));
    const size_t at = records_.size();
    records_.resize(at + record_size());
    std::memcpy(&records_[at], &scale, 4);
    std::memcpy(&records_[at + 2], &min_log_prob, 4);
    for (int i = 0; i < n_vocab_; ++i) {
      const float q = scale > 0 ? (std::max(l[i], min) - min) / scale : 0.0f;
      records_[at + 4 + size_t(i)] = uint16_t(std::lround(std::min(q, 65535.0f)));
    }
  }
}

void BaseLogits::log_probs(int64_t index, std::span<float> out) const {
  const uint16_t* r = records_.data() + size_t(index) * record_size();
  float scale, min_log_prob;
  std::memcpy(&scale, r, 4);
  std::memcpy(&min_log_prob, r + 2, 4);
  for (int i = 0; i < n_vocab_; ++i) out[size_t(i)] = scale * float(r[4 + i]) + min_log_prob;
}

void BaseLogits::save(const std::filesystem::path& path) const {
  AtomicFile f(path);
  f.write(kMagic, 8);
  const uint32_t n_ctx = uint32_t(n_ctx_);
  const int32_t n_vocab = n_vocab_, n_chunk = int32_t(tokens_.size() / size_t(n_ctx_));
  f.write(&n_ctx, 4);
  f.write(&n_vocab, 4);
  f.write(&n_chunk, 4);
  f.write(tokens_.data(), tokens_.size() * 4);
  f.write(records_.data(), records_.size() * 2);
  f.commit();
}

BaseLogits BaseLogits::load(const std::filesystem::path& path) {
  const MappedFile file(path);
  const auto bytes = file.bytes();
  const std::string label = path.string();
  if (bytes.size() < 20 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    throw Error("not a llama.cpp logits file", {.file = label, .offset = 0, .expected = "\"_logits_\" magic"});
  uint32_t n_ctx;
  int32_t n_vocab, n_chunk;
  std::memcpy(&n_ctx, bytes.data() + 8, 4);
  std::memcpy(&n_vocab, bytes.data() + 12, 4);
  std::memcpy(&n_chunk, bytes.data() + 16, 4);
  if (n_ctx < 4 || n_ctx > (1u << 20) || n_vocab <= 0 || n_vocab > (1 << 24) || n_chunk <= 0)
    throw Error(fmt::format("implausible header: n_ctx {}, n_vocab {}, n_chunk {}", n_ctx, n_vocab, n_chunk), {.file = label, .offset = 8});
  BaseLogits base(int(n_ctx), n_vocab, {});
  // One chunk is n_ctx tokens and its records (< 2^53 bytes with the bounds above); n_chunk is checked
  // against the file by division, since n_chunk × that can pass 2^64, wrap, match the file size and
  // then allocate what the header merely claims.
  const uint64_t chunk_token_bytes = uint64_t(n_ctx) * 4;
  const uint64_t chunk_bytes = chunk_token_bytes + uint64_t(n_ctx - 1 - n_ctx / 2) * base.record_size() * 2;
  if (uint64_t(n_chunk) > (bytes.size() - 20) / chunk_bytes || bytes.size() - 20 != uint64_t(n_chunk) * chunk_bytes)
    throw Error(fmt::format("{} bytes", bytes.size()),
                {.file = label, .expected = fmt::format("20 + {} × {} bytes for n_ctx {}, n_vocab {}", n_chunk, chunk_bytes, n_ctx, n_vocab)});
  const uint64_t token_bytes = uint64_t(n_chunk) * chunk_token_bytes;
  const uint64_t record_bytes = bytes.size() - 20 - token_bytes;
  base.tokens_.resize(size_t(n_chunk) * n_ctx);
  std::memcpy(base.tokens_.data(), bytes.data() + 20, token_bytes);
  base.records_.resize(record_bytes / 2);
  std::memcpy(base.records_.data(), bytes.data() + 20 + token_bytes, record_bytes);
  return base;
}

EvalResult evaluate(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                    const BaseLogits* base, BaseLogits* save_base, Progress& progress) {
  const int n_vocab = runtime.config().n_vocab;
  if (n_ctx < 4) throw Error(fmt::format("context {} is too small", n_ctx));
  if (int64_t(tokens.size()) < 2 * n_ctx)
    throw Error(fmt::format("{} tokens: too few for windows of {}", tokens.size(), n_ctx), {.expected = fmt::format("at least {}", 2 * n_ctx)});
  const int64_t chunks = int64_t(tokens.size()) / n_ctx;
  if (base) {
    if (base->n_vocab() != n_vocab) throw Error(fmt::format("base has {} tokens in its vocabulary, the model {}", base->n_vocab(), n_vocab));
    if (base->n_ctx() != n_ctx) throw Error(fmt::format("base was scored with windows of {}, not {}", base->n_ctx(), n_ctx));
    bool same = int64_t(base->tokens().size()) == chunks * n_ctx;
    for (int64_t i = 0; same && i < chunks * n_ctx; ++i)
      same = base->tokens()[size_t(i)] == (bos && i % n_ctx == 0 ? *bos : tokens[size_t(i)]);
    if (!same)
      throw Error("the base was scored on other tokens (another text, tokenizer or context)");
  }
  const int first = n_ctx / 2, scored = n_ctx - 1 - first;
  EvalResult result;
  result.chunks = chunks;
  double nll_sum = 0, base_nll_sum = 0;
  int64_t agree = 0, index = 0;
  std::vector<double> klds;
  // Per scored position of a window: its negative log-likelihood, the base's, its KL-divergence and
  // whether the top tokens agree. Filled in parallel, summed in order: the same sums on any thread count.
  struct Score {
    double nll = 0, base_nll = 0, kld = 0;
    bool agree = false;
  };
  std::vector<Score> scores(static_cast<size_t>(scored));
  const int64_t batch = std::max(1, runtime.batch_windows(n_ctx));
  progress.begin("eval", chunks * n_ctx, 0);  // tokens through the model, as llama-perplexity counts its speed
  for (int64_t c0 = 0; c0 < chunks; c0 += batch) {
    const int64_t windows = std::min(batch, chunks - c0);
    std::vector<int32_t> batch_tokens(tokens.begin() + c0 * n_ctx, tokens.begin() + (c0 + windows) * n_ctx);
    if (bos)
      for (int64_t w = 0; w < windows; ++w) batch_tokens[size_t(w * n_ctx)] = *bos;
    if (!base && !save_base) {  // perplexity alone: the device scores its own logits
      const auto log_probs = runtime.next_token_log_probs(batch_tokens, int(windows));
      for (int64_t w = 0; w < windows; ++w) {
        for (int j = first; j < n_ctx - 1; ++j) nll_sum -= double(log_probs[size_t(w * n_ctx + j)]);
        index += scored;
        progress.advance(fmt::format("window {}", c0 + w + 1), 0, n_ctx);
      }
      continue;
    }
    const auto logits = runtime.forward(batch_tokens, int(windows));
    for (int64_t w = 0; w < windows; ++w) {
      const int64_t c = c0 + w;
      const std::span<const float> window_logits(logits.data() + size_t(w * n_ctx) * size_t(n_vocab), size_t(n_ctx) * size_t(n_vocab));
      if (save_base) save_base->add_window(window_logits);
      parallel_for(scored, 1, [&](int64_t begin, int64_t end) {
        thread_local std::vector<float> log_p, log_base;
        log_p.resize(size_t(n_vocab));
        log_base.resize(size_t(n_vocab));
        for (int64_t s = begin; s < end; ++s) {
          const int j = first + int(s);
          const float* l = window_logits.data() + size_t(j) * size_t(n_vocab);
          log_softmax(l, n_vocab, log_p.data());
          const int32_t next = tokens[size_t(c * n_ctx + j + 1)];
          Score& score = scores[size_t(s)];
          score.nll = -double(log_p[size_t(next)]);
          if (!base) continue;
          base->log_probs(index + s, log_base);
          score.base_nll = -double(log_base[size_t(next)]);
          double kld = 0;
          for (int i = 0; i < n_vocab; ++i)
            if (log_base[size_t(i)] > -16.0f) kld += std::exp(double(log_base[size_t(i)])) * double(log_base[size_t(i)] - log_p[size_t(i)]);
          score.kld = kld;
          score.agree = (std::max_element(l, l + n_vocab) - l) == (std::max_element(log_base.begin(), log_base.end()) - log_base.begin());
        }
      });
      for (const Score& score : scores) {
        nll_sum += score.nll;
        if (base) {
          base_nll_sum += score.base_nll;
          klds.push_back(score.kld);
          agree += score.agree;
        }
      }
      index += scored;
      progress.advance(fmt::format("window {}", c + 1), 0, n_ctx);
    }
  }
  progress.end();
  result.tokens = index;
  result.nll = nll_sum / double(index);
  result.ppl = std::exp(result.nll);
  if (base) {
    result.base_ppl = std::exp(base_nll_sum / double(index));
    std::ranges::sort(klds);
    KldStats s;
    for (double k : klds) s.mean += k;
    s.mean /= double(klds.size());
    s.median = percentile(klds, 0.5);
    s.p99 = percentile(klds, 0.99);
    s.max = klds.back();
    result.kld = s;
    result.top1 = double(agree) / double(index);
  }
  return result;
}

void log_softmax(const float* logits, int n, float* out) {
  const float max = *std::max_element(logits, logits + n);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(logits[i] - max));
  const float log_sum = float(std::log(sum));
  for (int i = 0; i < n; ++i) out[i] = logits[i] - max - log_sum;
}

}  // namespace lowbit
