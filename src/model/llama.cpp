// The forward pass, one window of tokens at a time, in float32.
#include "lowbit/model/llama.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <string_view>
#include <utility>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/value_check.h"
#include "lowbit/model/moe_routing.h"

namespace lowbit {
namespace {

// x[t] <- x[t] / rms(x[t]) * weight, for each of `tokens` rows of `n`.
void rms_norm(const float* x, const float* weight, int64_t tokens, int64_t n, float eps, float* out) {
  for (int64_t t = 0; t < tokens; ++t) {
    const float* xt = x + t * n;
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) sum += double(xt[i]) * xt[i];
    const float scale = 1.0f / std::sqrt(float(sum / double(n)) + eps);
    for (int64_t i = 0; i < n; ++i) out[t * n + i] = xt[i] * scale * weight[i];
  }
}

// Causal attention of every query head with its key/value head (grouped-query attention).
void attention(const float* q, const float* k, const float* v, int64_t tokens, const LlamaConfig& c, float* out) {
  const int group = c.n_head / c.n_head_kv;
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  // Each key head's keys side by side, so that a query's scores are one vectorised pass over them.
  std::vector<float> keys(size_t(c.n_head_kv * tokens * c.head_dim));
  for (int64_t s = 0; s < tokens; ++s)
    for (int kv = 0; kv < c.n_head_kv; ++kv)
      std::copy_n(k + (s * c.n_head_kv + kv) * c.head_dim, c.head_dim, keys.data() + (kv * tokens + s) * c.head_dim);
  parallel_for(int64_t(c.n_head) * tokens, 0, [&](int64_t begin, int64_t end) {
    auto scores = std::vector<float>(size_t(tokens));
    for (int64_t job = begin; job < end; ++job) {
      const int64_t h = job / tokens, t = job % tokens;
      const int64_t kv = h / group;
      const float* qt = q + (t * c.n_head + h) * c.head_dim;
      dot_rows(keys.data() + kv * tokens * c.head_dim, t + 1, c.head_dim, qt, scores.data());
      float max_score = -INFINITY;
      for (int64_t s = 0; s <= t; ++s) {
        scores[size_t(s)] *= scale;
        max_score = std::max(max_score, scores[size_t(s)]);
      }
      float total = 0;
      for (int64_t s = 0; s <= t; ++s) total += scores[size_t(s)] = std::exp(scores[size_t(s)] - max_score);
      float* ot = out + (t * c.n_head + h) * c.head_dim;
      std::fill(ot, ot + c.head_dim, 0.0f);
      for (int64_t s = 0; s <= t; ++s) {
        const float p = scores[size_t(s)] / total;
        const float* vs = v + (s * c.n_head_kv + kv) * c.head_dim;
        for (int i = 0; i < c.head_dim; ++i) ot[i] += p * vs[i];
      }
    }
  });
}

void add_bias(float* x, std::span<const float> bias, int64_t tokens) {
  if (bias.empty()) return;
  for (int64_t t = 0; t < tokens; ++t)
    for (size_t i = 0; i < bias.size(); ++i) x[t * int64_t(bias.size()) + int64_t(i)] += bias[i];
}

// Qwen3's per-head RMSNorm of queries and keys.
void head_norm(float* x, std::span<const float> weight, int64_t rows, int head_dim, float eps) {
  if (weight.empty()) return;
  rms_norm(x, weight.data(), rows, head_dim, eps, x);
}

}  // namespace

std::unique_ptr<LlamaModel> LlamaModel::load(const std::filesystem::path& path) { return load(ModelWeights::from_gguf(path)); }

std::unique_ptr<LlamaModel> LlamaModel::load(ModelWeights weights) {
  auto model = std::unique_ptr<LlamaModel>(new LlamaModel(std::move(weights)));
  model->config_ = LlamaConfig::from_weights(model->weights_);
  const LlamaConfig& c = model->config_;
  const int64_t q_dim = int64_t(c.n_head) * c.head_dim, kv_dim = int64_t(c.n_head_kv) * c.head_dim;
  model->token_embd_ = model->matrix("token_embd.weight", c.n_vocab, c.n_embd);
  model->output_tied_ = !model->weights_.find_tensor("output.weight");
  model->output_ = model->output_tied_ ? model->token_embd_ : model->matrix("output.weight", c.n_vocab, c.n_embd);
  model->output_norm_ = model->vector("output_norm.weight", c.n_embd);
  for (int l = 0; l < c.n_layer; ++l) {
    const std::string p = fmt::format("blk.{}.", l);
    Layer layer{.prefix = p};
    layer.attn_norm = model->vector(p + "attn_norm.weight", c.n_embd);
    layer.ffn_norm = model->vector(p + "ffn_norm.weight", c.n_embd);
    layer.q_norm = model->vector(p + "attn_q_norm.weight", c.head_dim, true);
    layer.k_norm = model->vector(p + "attn_k_norm.weight", c.head_dim, true);
    layer.q_bias = model->vector(p + "attn_q.bias", q_dim, true);
    layer.k_bias = model->vector(p + "attn_k.bias", kv_dim, true);
    layer.v_bias = model->vector(p + "attn_v.bias", kv_dim, true);
    layer.q = model->matrix(p + "attn_q.weight", q_dim, c.n_embd);
    layer.k = model->matrix(p + "attn_k.weight", kv_dim, c.n_embd);
    layer.v = model->matrix(p + "attn_v.weight", kv_dim, c.n_embd);
    layer.o = model->matrix(p + "attn_output.weight", c.n_embd, q_dim);
    if (model->weights_.find_tensor(p + "ffn_gate_inp.weight")) {
      if (c.n_expert == 0) throw Error("a router in a model without experts", {.file = model->weights_.label(), .tensor = p + "ffn_gate_inp.weight",
                                                                                .expected = c.arch + ".expert_count > 0"});
      layer.router = model->matrix(p + "ffn_gate_inp.weight", c.n_expert, c.n_embd);
      layer.gate_exps = model->experts_matrix(p + "ffn_gate_exps.weight", 0, c.n_embd);
      layer.up_exps = model->experts_matrix(p + "ffn_up_exps.weight", layer.gate_exps.rows, c.n_embd);
      layer.down_exps = model->experts_matrix(p + "ffn_down_exps.weight", int64_t(c.n_expert) * c.n_embd, layer.gate_exps.rows / c.n_expert);
      if (const auto* shared = model->weights_.find_tensor(p + "ffn_up_shexp.weight")) {
        const int64_t n_ff_shexp = shared->ne.size() > 1 ? shared->ne[1] : 0;
        layer.gate_shexp = model->matrix(p + "ffn_gate_shexp.weight", n_ff_shexp, c.n_embd);
        layer.up_shexp = model->matrix(p + "ffn_up_shexp.weight", n_ff_shexp, c.n_embd);
        layer.down_shexp = model->matrix(p + "ffn_down_shexp.weight", c.n_embd, n_ff_shexp);
        if (model->weights_.find_tensor(p + "ffn_gate_inp_shexp.weight"))
          layer.shexp_gate = model->matrix(p + "ffn_gate_inp_shexp.weight", 1, c.n_embd);
      }
    } else {
      layer.gate = model->matrix(p + "ffn_gate.weight", c.n_ff, c.n_embd);
      layer.up = model->matrix(p + "ffn_up.weight", c.n_ff, c.n_embd);
      layer.down = model->matrix(p + "ffn_down.weight", c.n_embd, c.n_ff);
    }
    model->layers_.push_back(std::move(layer));
  }
  return model;
}

namespace {

// A NaN or Inf weight, or block scale, turns every logit after it into NaN: refused where it sits
// rather than reported as "perplexity nan". Scales only for block types: a cheap scan.
void check_weight_values(const ModelWeights& weights, const ModelWeights::Tensor& t) {
  const auto bytes = t.bytes;
  const int64_t cols = t.ne.empty() ? 0 : t.ne[0];
  if (ggml_type_info(t.type).quantized) {
    if (const ScaleScan scan = scan_block_scales(t.type, bytes))
      throw Error(fmt::format("block scale {} = {} (the {} block at {})", scan.field,
                              describe(std::isnan(scan.first_value) ? ValueProblem::nan : ValueProblem::inf, scan.first_value),
                              ggml_type_name(t.type),
                              element_location(scan.first * ggml_type_info(t.type).block_elements, cols)),
                  {.file = weights.label(), .tensor = t.name, .expected = "finite block scales"});
  } else if (const ValueScan scan = scan_stored_values(t.type, bytes)) {
    throw Error(fmt::format("{} at {}", describe(scan.problem, scan.first_value), element_location(scan.first, cols)),
                {.file = weights.label(), .tensor = t.name, .expected = "finite weights"});
  }
}

}  // namespace

QuantizedMatrix LlamaModel::matrix(const std::string& name, int64_t rows, int64_t cols) const {
  const auto* t = weights_.find_tensor(name);
  if (!t) throw Error("missing tensor", {.file = weights_.label(), .tensor = name});
  if ((t->ne.size() < 2 && rows != 1) || t->ne[0] != cols || t->elements() != rows * cols)
    throw Error(fmt::format("shape {} (GGUF order)", shape_to_string(t->ne)),
                {.file = weights_.label(), .tensor = name, .expected = fmt::format("[{}, {}]", cols, rows)});
  const auto* codec = ggml_codec(t->type);
  if (!codec || !codec->dequantize_row)
    throw Error(fmt::format("lowbit cannot dequantize {}", ggml_type_name(t->type)), {.file = weights_.label(), .tensor = name});
  check_weight_values(weights_, *t);
  return {t->type, rows, cols, t->bytes, t->packed_4bit};
}

QuantizedMatrix LlamaModel::experts_matrix(const std::string& name, int64_t rows, int64_t cols) const {
  const auto* t = weights_.find_tensor(name);
  if (!t) throw Error("missing tensor", {.file = weights_.label(), .tensor = name});
  if (t->ne.size() != 3 || t->ne[2] != config_.n_expert || t->ne[0] != cols || t->ne[1] < 1 || (rows > 0 && t->ne[1] * t->ne[2] != rows))
    throw Error(fmt::format("shape {} (GGUF order)", shape_to_string(t->ne)),
                {.file = weights_.label(), .tensor = name,
                 .expected = fmt::format("[{}, {}, {}]", cols, rows > 0 ? std::to_string(rows / config_.n_expert) : "rows", config_.n_expert)});
  return matrix(name, t->ne[1] * t->ne[2], cols);
}

std::span<const float> LlamaModel::vector(const std::string& name, int64_t size, bool optional) const {
  const auto* t = weights_.find_tensor(name);
  if (!t) {
    if (optional) return {};
    throw Error("missing tensor", {.file = weights_.label(), .tensor = name});
  }
  if (t->type != GgmlType::F32 || t->elements() != size)
    throw Error(fmt::format("{} {}", ggml_type_name(t->type), shape_to_string(t->ne)),
                {.file = weights_.label(), .tensor = name, .expected = fmt::format("f32 [{}]", size)});
  check_weight_values(weights_, *t);
  const auto bytes = t->bytes;
  return {reinterpret_cast<const float*>(bytes.data()), size_t(size)};
}

std::vector<float> LlamaModel::forward(std::span<const int32_t> tokens, int windows, const ActivationObserver& observer) const {
  auto hidden = embed(tokens);
  for (int l = 0; l < config_.n_layer; ++l) apply_layer(l, hidden, windows, observer);
  return output_logits(hidden, observer);
}

std::vector<float> LlamaModel::embed(std::span<const int32_t> tokens) const {
  const LlamaConfig& c = config_;
  const int64_t T = int64_t(tokens.size()), E = c.n_embd;
  // Embedding rows: token_embd is [n_vocab rows of n_embd], one row per token.
  std::vector<float> hidden(size_t(T * E));
  const size_t embd_row_bytes = ggml_row_bytes(token_embd_.type, E);
  for (int64_t t = 0; t < T; ++t) {
    if (tokens[size_t(t)] < 0 || tokens[size_t(t)] >= c.n_vocab)
      throw Error(fmt::format("token id {} outside the vocabulary of {}", tokens[size_t(t)], c.n_vocab), {.file = weights_.label()});
    dequantize_rows(token_embd_.type, token_embd_.data.data() + size_t(tokens[size_t(t)]) * embd_row_bytes, 1, E, hidden.data() + t * E);
  }
  return hidden;
}

void LlamaModel::apply_layer(int index, std::vector<float>& hidden, int windows, const ActivationObserver& observer) const {
  const LlamaConfig& c = config_;
  const Layer& layer = layers_.at(size_t(index));
  const int64_t E = c.n_embd, T = int64_t(hidden.size()) / E;
  if (windows < 1 || T % windows != 0) throw Error(fmt::format("{} tokens do not split into {} equal windows", T, windows));
  const int64_t window = T / windows;
  const int64_t q_dim = int64_t(c.n_head) * c.head_dim, kv_dim = int64_t(c.n_head_kv) * c.head_dim;
  auto product = [&](const QuantizedMatrix& w, const std::string& name, const float* x, float* y) {
    if (observer) observer(name, -1, x, T, w.cols);
    matmul_quantized(w, x, T, y);
  };
  std::vector<float> normed(size_t(T * E));
  std::vector<float> q(size_t(T * q_dim)), k(size_t(T * kv_dim)), v(size_t(T * kv_dim)), att(size_t(T * q_dim));
  std::vector<float> out(size_t(T * E));
  rms_norm(hidden.data(), layer.attn_norm.data(), T, E, c.rms_eps, normed.data());
  product(layer.q, layer.prefix + "attn_q.weight", normed.data(), q.data());
  product(layer.k, layer.prefix + "attn_k.weight", normed.data(), k.data());
  product(layer.v, layer.prefix + "attn_v.weight", normed.data(), v.data());
  add_bias(q.data(), layer.q_bias, T);
  add_bias(k.data(), layer.k_bias, T);
  add_bias(v.data(), layer.v_bias, T);
  head_norm(q.data(), layer.q_norm, T * c.n_head, c.head_dim, c.rms_eps);
  head_norm(k.data(), layer.k_norm, T * c.n_head_kv, c.head_dim, c.rms_eps);
  for (int w = 0; w < windows; ++w) {  // positions count from 0 in each window
    apply_rope(q.data() + w * window * q_dim, window, c.n_head, c.head_dim, c.rope, c.rope_neox);
    apply_rope(k.data() + w * window * kv_dim, window, c.n_head_kv, c.head_dim, c.rope, c.rope_neox);
    attention(q.data() + w * window * q_dim, k.data() + w * window * kv_dim, v.data() + w * window * kv_dim, window, c,
              att.data() + w * window * q_dim);
  }
  product(layer.o, layer.prefix + "attn_output.weight", att.data(), out.data());
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] += out[i];

  rms_norm(hidden.data(), layer.ffn_norm.data(), T, E, c.rms_eps, normed.data());
  if (layer.moe()) mixture_of_experts(layer, normed.data(), T, out.data(), observer);
  else feed_forward(layer, layer.gate, layer.up, layer.down, "", -1, normed.data(), T, out.data(), observer);
  for (size_t i = 0; i < hidden.size(); ++i) hidden[i] += out[i];
}

void LlamaModel::feed_forward(const Layer& layer, const QuantizedMatrix& gate, const QuantizedMatrix& up, const QuantizedMatrix& down,
                              const char* suffix, int expert, const float* x, int64_t tokens, float* y,
                              const ActivationObserver& observer) const {
  // One expert's rows of a stacked matrix.
  auto rows_of = [&](const QuantizedMatrix& m) {
    if (expert < 0) return m;
    const int64_t rows = m.rows / config_.n_expert;
    const size_t bytes = ggml_row_bytes(m.type, m.cols) * size_t(rows);
    return QuantizedMatrix{m.type, rows, m.cols, m.data.subspan(size_t(expert) * bytes, bytes)};
  };
  const QuantizedMatrix g = rows_of(gate), u = rows_of(up), d = rows_of(down);
  auto product = [&](const QuantizedMatrix& w, const char* what, const float* in, float* out) {
    if (observer) observer(layer.prefix + what + suffix + ".weight", expert, in, tokens, w.cols);
    matmul_quantized(w, in, tokens, out);
  };
  std::vector<float> gated(size_t(tokens * g.rows)), upped(size_t(tokens * g.rows));
  product(g, "ffn_gate", x, gated.data());
  product(u, "ffn_up", x, upped.data());
  for (size_t i = 0; i < gated.size(); ++i) gated[i] = gated[i] / (1.0f + std::exp(-gated[i])) * upped[i];  // SwiGLU
  product(d, "ffn_down", gated.data(), y);
}

void LlamaModel::mixture_of_experts(const Layer& layer, const float* x, int64_t tokens, float* y, const ActivationObserver& observer) const {
  const LlamaConfig& c = config_;
  const int64_t E = c.n_embd;
  std::vector<float> logits(size_t(tokens * c.n_expert));
  if (observer) observer(layer.prefix + "ffn_gate_inp.weight", -1, x, tokens, E);
  matmul_quantized(layer.router, x, tokens, logits.data());
  const auto batches = route_tokens(logits.data(), tokens, c.n_expert, c.n_expert_used, c.expert_weights_norm).by_expert(c.n_expert);
  std::fill(y, y + tokens * E, 0.0f);
  // Each expert over the rows of the tokens sent to it, its output added to theirs with their weights.
  std::vector<float> rows, out;
  for (int e = 0; e < c.n_expert; ++e) {
    const auto& batch = batches[size_t(e)];
    const auto n = int64_t(batch.tokens.size());
    if (n == 0) continue;
    rows.resize(size_t(n * E));
    out.resize(size_t(n * E));
    for (int64_t i = 0; i < n; ++i) std::copy_n(x + batch.tokens[size_t(i)] * E, E, rows.data() + i * E);
    feed_forward(layer, layer.gate_exps, layer.up_exps, layer.down_exps, "_exps", e, rows.data(), n, out.data(), observer);
    for (int64_t i = 0; i < n; ++i) {
      float* yt = y + batch.tokens[size_t(i)] * E;
      const float w = batch.weights[size_t(i)];
      for (int64_t j = 0; j < E; ++j) yt[j] += w * out[size_t(i * E + j)];
    }
  }
  if (!layer.shared_expert()) return;
  out.resize(size_t(tokens * E));
  feed_forward(layer, layer.gate_shexp, layer.up_shexp, layer.down_shexp, "_shexp", -1, x, tokens, out.data(), observer);
  std::vector<float> gate(size_t(tokens), 1.0f);
  if (layer.shexp_gate.rows > 0) {
    if (observer) observer(layer.prefix + "ffn_gate_inp_shexp.weight", -1, x, tokens, E);
    matmul_quantized(layer.shexp_gate, x, tokens, gate.data());
    for (float& g : gate) g = 1.0f / (1.0f + std::exp(-g));
  }
  for (int64_t t = 0; t < tokens; ++t)
    for (int64_t j = 0; j < E; ++j) y[t * E + j] += gate[size_t(t)] * out[size_t(t * E + j)];
}

std::vector<float> LlamaModel::output_logits(const std::vector<float>& hidden, const ActivationObserver& observer) const {
  const LlamaConfig& c = config_;
  const int64_t E = c.n_embd, T = int64_t(hidden.size()) / E;
  std::vector<float> normed(size_t(T * E));
  rms_norm(hidden.data(), output_norm_.data(), T, E, c.rms_eps, normed.data());
  std::vector<float> logits(size_t(T * c.n_vocab));
  if (observer) observer("output.weight", -1, normed.data(), T, E);
  matmul_quantized(output_, normed.data(), T, logits.data());
  return logits;
}

std::span<const LlamaModel::MatrixSlot> LlamaModel::matrix_slots() {
  static constexpr MatrixSlot kSlots[] = {
      {"attn_q.weight", &Layer::q}, {"attn_k.weight", &Layer::k}, {"attn_v.weight", &Layer::v}, {"attn_output.weight", &Layer::o},
      {"ffn_gate.weight", &Layer::gate}, {"ffn_up.weight", &Layer::up}, {"ffn_down.weight", &Layer::down},
      {"ffn_gate_inp.weight", &Layer::router}, {"ffn_gate_exps.weight", &Layer::gate_exps}, {"ffn_up_exps.weight", &Layer::up_exps},
      {"ffn_down_exps.weight", &Layer::down_exps}, {"ffn_gate_shexp.weight", &Layer::gate_shexp}, {"ffn_up_shexp.weight", &Layer::up_shexp},
      {"ffn_down_shexp.weight", &Layer::down_shexp}, {"ffn_gate_inp_shexp.weight", &Layer::shexp_gate}};
  return kSlots;
}

std::vector<std::pair<std::string, QuantizedMatrix>> LlamaModel::matrices() const {
  std::vector<std::pair<std::string, QuantizedMatrix>> out{{"token_embd.weight", token_embd_}};
  if (!output_tied_) out.emplace_back("output.weight", output_);
  for (const Layer& l : layers_)
    for (auto [suffix, member] : matrix_slots())
      if ((l.*member).rows > 0) out.emplace_back(l.prefix + suffix, l.*member);
  return out;
}

bool LlamaModel::has_experts() const {
  return std::ranges::any_of(layers_, [](const Layer& l) { return l.moe(); });
}

LlamaModel::LayerVectors LlamaModel::layer_vectors(int layer) const {
  const Layer& l = layers_.at(size_t(layer));
  return {l.attn_norm, l.ffn_norm, l.q_norm, l.k_norm, l.q_bias, l.k_bias, l.v_bias};
}

QuantizedMatrix LlamaModel::swap_weight(const std::string& name, const QuantizedMatrix& weight) {
  QuantizedMatrix* slot = nullptr;
  if (name == "token_embd.weight") slot = &token_embd_;
  if (name == "output.weight" && !output_tied_) slot = &output_;
  for (Layer& layer : layers_) {
    if (!name.starts_with(layer.prefix)) continue;
    const std::string_view rest = std::string_view(name).substr(layer.prefix.size());
    for (auto [suffix, member] : matrix_slots())
      if (rest == suffix && (layer.*member).rows > 0) slot = &(layer.*member);
  }
  if (!slot) throw Error("not a weight of the forward pass", {.file = weights_.label(), .tensor = name});
  if (weight.rows != slot->rows || weight.cols != slot->cols || weight.data.size() != ggml_row_bytes(weight.type, weight.cols) * size_t(weight.rows))
    throw Error(fmt::format("{} × {} {} ({} bytes)", weight.rows, weight.cols, ggml_type_name(weight.type), weight.data.size()),
                {.file = weights_.label(), .tensor = name, .expected = fmt::format("{} × {}", slot->rows, slot->cols)});
  const QuantizedMatrix previous = *slot;
  *slot = weight;
  if (slot == &token_embd_ && output_tied_) output_ = weight;
  return previous;
}

}  // namespace lowbit
