// The probe keeps its base run in pieces (the state entering each block, the scored log-probabilities)
// so a changed weight costs only the blocks after it.
#include "lowbit/model/kld_probe.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/model/perplexity.h"

namespace lowbit {
namespace {

// The first block a weight feeds: -1 for the embedding (everything reruns), n_layer for the output
// layer (only the head reruns).
int first_block_of(const std::string& name, int n_layer) {
  if (name == "token_embd.weight") return -1;
  if (name.starts_with("blk.")) {
    int layer = 0;
    const auto [end, ec] = std::from_chars(name.data() + 4, name.data() + name.size(), layer);
    if (ec == std::errc() && layer >= 0 && layer < n_layer && *end == '.') return layer;
  }
  return n_layer;
}

}  // namespace

KldProbe::KldProbe(LlamaRuntime& model, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos, int windows)
    : model_(model), n_ctx_(n_ctx), windows_(windows) {
  if (n_ctx < 4) throw Error(fmt::format("probe context {} is too small", n_ctx));
  if (windows < 1 || int64_t(tokens.size()) < int64_t(windows) * n_ctx)
    throw Error(fmt::format("{} tokens: too few for {} probe windows of {}", tokens.size(), windows, n_ctx),
                {.expected = fmt::format("at least {}", int64_t(std::max(windows, 1)) * n_ctx)});
  const int n_layer = model.config().n_layer, n_vocab = model.config().n_vocab;
  // All windows go through the model together, laid end to end.
  tokens_.assign(tokens.begin(), tokens.begin() + int64_t(windows) * n_ctx);
  if (bos)
    for (int w = 0; w < windows; ++w) tokens_[size_t(w) * size_t(n_ctx)] = *bos;
  states_.resize(size_t(n_layer) + 1);  // the last: entering the output head
  const auto logits = model.output_logits(run_states());
  const int first = n_ctx / 2, scored = n_ctx - 1 - first;
  std::vector<int64_t> rows;
  std::vector<float> log_probs(size_t(windows) * size_t(scored) * size_t(n_vocab));
  for (int w = 0; w < windows; ++w)
    for (int j = first; j < n_ctx - 1; ++j) {
      const int64_t row = int64_t(w) * n_ctx + j;
      log_softmax(logits.data() + size_t(row) * size_t(n_vocab), n_vocab, log_probs.data() + rows.size() * size_t(n_vocab));
      rows.push_back(row);
    }
  base_ = model.keep_log_probs(std::move(rows), std::move(log_probs));
}

KldProbe::~KldProbe() { restore_loaded(); }

void KldProbe::restore_loaded() {
  for (auto it = loaded_.rbegin(); it != loaded_.rend(); ++it) model_.swap_weight(it->first, it->second);
  loaded_.clear();
  background_.clear();
}

const std::vector<float>& KldProbe::run_states() {
  const int n_layer = model_.config().n_layer;
  auto hidden = model_.embed(tokens_);
  for (int l = 0; l < n_layer; ++l) {
    states_[size_t(l)] = hidden;
    model_.apply_layer(l, hidden, windows_);
  }
  states_[size_t(n_layer)] = std::move(hidden);
  return states_[size_t(n_layer)];
}

double KldProbe::mean_kld(const std::vector<float>& hidden) const {
  // One sum per position, added in order: the same total on any thread count or device.
  double total = 0;
  for (double kld : model_.output_klds(hidden, *base_)) total += kld;
  return total / double(positions());
}

double KldProbe::set_background(std::vector<HeldWeight> weights) {
  restore_loaded();
  background_ = std::move(weights);  // the model reads their bytes where they now lie
  try {
    for (const HeldWeight& w : background_)
      loaded_.emplace_back(w.name, model_.swap_weight(w.name, {.type = w.type, .rows = w.rows, .cols = w.cols, .data = w.data}));
    return mean_kld(run_states());
  } catch (...) {
    restore_loaded();
    run_states();
    throw;
  }
}

int64_t KldProbe::positions() const { return int64_t(windows_) * (n_ctx_ - 1 - n_ctx_ / 2); }

double KldProbe::kld_with(const std::string& name, const QuantizedMatrix& weight) {
  const int n_layer = model_.config().n_layer;
  const int first_block = first_block_of(name, n_layer);
  const QuantizedMatrix loaded = model_.swap_weight(name, weight);
  double kld = 0;
  try {
    // A changed embedding reruns everything from the windows' tokens; any other weight, the blocks
    // from its own on, starting from the stored state.
    std::vector<float> hidden = first_block < 0 ? model_.embed(tokens_) : states_[size_t(first_block)];
    for (int l = std::max(first_block, 0); l < n_layer; ++l) model_.apply_layer(l, hidden, windows_);
    kld = mean_kld(hidden);
  } catch (...) {
    model_.swap_weight(name, loaded);
    throw;
  }
  model_.swap_weight(name, loaded);
  return kld;
}

}  // namespace lowbit
