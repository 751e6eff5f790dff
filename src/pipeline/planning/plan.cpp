// The GGUF planner, and what both planners share: roles of Hugging Face names, row samples, the allocation.
#include "lowbit/pipeline/plan.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>

#include "lowbit/io/hf_names.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/formats/gptq.h"
#include "lowbit/plan/allocate.h"
#include "lowbit/plan/llama_cpp_mix.h"
#include "pipeline/quantize/gptq_tensors.h"
#include "pipeline/planning/plan_internal.h"

namespace lowbit {
namespace {

// The ggml types the planner weighs for a GGUF: every type lowbit writes (has a codec for), from 1.125
// to 32 bits per weight, in the registry's order. Those ggml_requires_imatrix() names are weighed only
// for a tensor with importance weights (the importance matrix's, or with --gptq the Hessian's diagonal).
std::vector<GgmlType> gguf_candidates() {
  std::vector<GgmlType> types;
  for (const FormatInfo& f : kFormats)
    if (f.held_by(FormatTarget::gguf) && ggml_codec(*f.ggml)) types.push_back(*f.ggml);
  return types;
}

// The candidates no other candidate of as many bytes or fewer beats or equals on loss (the first of
// equals stays): the only ones an allocation could want.
std::vector<PlanOption> pareto_efficient(std::vector<PlanOption> options) {
  std::ranges::stable_sort(options, {}, &PlanOption::bytes);
  std::vector<PlanOption> kept;
  for (size_t i = 0; i < options.size();) {
    size_t best = i, end = i;  // the least loss among the candidates of this size
    for (; end < options.size() && options[end].bytes == options[i].bytes; ++end)
      if (options[end].loss < options[best].loss) best = end;
    if (kept.empty() || options[best].loss < kept.back().loss) kept.push_back(options[best]);
    i = end;
  }
  return kept;
}

// With a Hessian (plan --gptq): the tensor's writer and its input's XᵀX, for a layer matrix GPTQ writes.
struct GptqCandidates {
  GptqTensors& writer;
  planning::OutputError output_error;  // of the tensor's row sample, through its input's Hessian
  std::string label;                   // the model's, for errors
};

// The loss of `type` on the sample: its relative squared error, each row quantized with its own
// importance weights (the rows of different experts have different ones); with GPTQ, the rows as GPTQ
// writes them (or rounds them, for a type it has no path for), their error measured on the output.
double ggml_loss(const planning::RowSample& sample, GgmlType type, const ModelSource::Tensor& t, const GptqCandidates* gptq) {
  const size_t row_bytes = ggml_row_bytes(type, sample.cols);
  std::vector<std::byte> blocks(row_bytes * size_t(sample.rows()));
  std::vector<float> back(sample.values.size());
  if (gptq && gptq_supports(type)) {
    blocks = gptq->writer.encode_rows(t, type, sample.values.data(), sample.rows(), gptq->label);
  } else {
    for (int64_t r = 0; r < sample.rows(); ++r)
      quantize_rows(type, sample.values.data() + r * sample.cols, 1, sample.cols, sample.importance[size_t(r)], blocks.data() + size_t(r) * row_bytes);
  }
  dequantize_rows(type, blocks.data(), sample.rows(), sample.cols, back.data());
  return gptq ? gptq->output_error.relative(back) : planning::relative_error(sample, back);
}

// The tensor (all of it) quantized to `type` as quantize_to_gguf writes it: each expert's rows with
// their own importance weights, or by GPTQ.
KldProbe::HeldWeight quantized_whole(const ModelSource::Tensor& t, const std::vector<float>& values, const float* importance, GgmlType type,
                                     GptqTensors* gptq, const std::string& label) {
  const int64_t cols = t.ne[0], rows = t.elements() / cols;
  const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1, rows_per_expert = rows / experts;
  const size_t row_bytes = ggml_row_bytes(type, cols);
  KldProbe::HeldWeight w{.name = t.name, .type = type, .rows = rows, .cols = cols};
  if (gptq && gptq->applies(t, type, label)) {
    w.data = gptq->encode(t, type, values, label);
  } else {
    w.data.resize(row_bytes * size_t(rows));
    for (int64_t e = 0; e < experts; ++e)
      quantize_rows(type, values.data() + e * rows_per_expert * cols, rows_per_expert, cols, importance ? importance + e * cols : nullptr,
                    w.data.data() + size_t(e * rows_per_expert) * row_bytes);
  }
  return w;
}

// The output KL-divergence of the model with this tensor quantized to `type` (the others as the probe has them).
double probed_loss(KldProbe& probe, const ModelSource::Tensor& t, const std::vector<float>& values, const float* importance, GgmlType type,
                   GptqTensors* gptq, const std::string& label) {
  const auto w = quantized_whole(t, values, importance, type, gptq, label);
  return probe.kld_with(t.name, {.type = w.type, .rows = w.rows, .cols = w.cols, .data = w.data});
}

// A tensor's values and the importance weights it is quantized with: the importance matrix's when it
// covers the tensor; with a Hessian, else the input's diag(H) / tokens, as quantize --gptq weighs it (the
// types ggml quantizes only with importance weights included).
struct WeighedValues {
  std::vector<float> values;
  std::vector<float> from_hessian;
  const float* importance = nullptr;
};

WeighedValues weighed_values(const ModelSource& source, const ModelSource::Tensor& t, const PlanOptions& options) {
  // A 3-D expert tensor's importance matrix has one slice of columns per expert.
  const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
  const ImatrixEntry* entry = options.imatrix ? options.imatrix->find(t.name) : nullptr;
  const bool fits = entry && entry->columns == t.ne[0] && entry->experts == experts;
  WeighedValues w{.values = source.load_f32(t)};
  if (!fits && options.hessian) w.from_hessian = hessian_importance(*options.hessian, t);
  w.importance = fits ? entry->weights.data() : w.from_hessian.empty() ? nullptr : w.from_hessian.data();
  return w;
}

// The plan's own output KLD on the probe's windows, every tensor quantized to its chosen format at once
// (the probe scores each candidate with the others unquantized, and the plan adds those scores).
double whole_kld(const ModelSource& source, const PlanOptions& options, GptqTensors* gptq, const Plan& plan) {
  std::vector<KldProbe::HeldWeight> held;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const PlannedTensor& p = plan.tensors[i];
    if (!p.quantized) continue;
    const auto& t = source.tensors()[i];  // plan.tensors[i] is its source's tensors()[i]
    const WeighedValues w = weighed_values(source, t, options);
    held.push_back(quantized_whole(t, w.values, w.importance, *format_info(p.format.id).ggml, gptq, source.label()));
  }
  const double kld = options.probe->set_background(std::move(held));
  options.probe->set_background({});
  return kld;
}

}  // namespace

std::string plan_loss_description(const PlanLossMeasure& m) {
  std::string s = m.output_kld ? fmt::format("output KL-divergence with only that tensor quantized, {} positions", m.probe_positions)
                               : std::string("relative reconstruction error");
  if (!m.calibration.empty()) s += fmt::format(" of {}", m.calibration);
  if (m.imatrix_weighted) s += m.output_kld ? ", quantized with the importance matrix" : ", importance-weighted";
  if (!m.gptq.empty()) s += m.output_kld ? ", written by GPTQ" : ", layer matrices written by GPTQ and measured on their output";
  if (!m.reason.empty()) s += fmt::format(" ({})", m.reason);
  return s;
}

PlanLossChoice choose_plan_loss(const std::string& probe_text, const std::string& text, Device device, bool no_probe) {
  if (!probe_text.empty()) return {probe_text, "--probe-text"};
  if (no_probe) return {"", "--no-probe"};
  if (text.empty()) return {"", "no --text or --probe-text to probe on"};
  if (device != Device::cuda) return {"", "no GPU: the probe on the CPU takes minutes per window; ask for it with --probe-text"};
  return {text, "a GPU is present: probed on --text by default"};
}

RoleOf role_of_tensor(const std::string& name) {
  if (const auto place = gguf_place_of(name)) return classify_tensor(place->name);
  RoleOf role = classify_tensor(name);
  // A Hugging Face name llama.cpp does not know still has its layer.
  constexpr std::string_view prefix = "model.layers.";
  if (role.layer < 0 && name.starts_with(prefix)) std::from_chars(name.data() + prefix.size(), name.data() + name.size(), role.layer);
  return role;
}

namespace planning {

RowSample sample_rows(const std::vector<float>& values, int64_t cols, const float* importance, int64_t rows_per_expert) {
  const int64_t rows = int64_t(values.size()) / cols;
  const int64_t step = std::max<int64_t>(1, rows / kSampledRows);
  RowSample s{.cols = cols};
  for (int64_t r = 0; r < rows; r += step) {
    s.values.insert(s.values.end(), values.begin() + r * cols, values.begin() + (r + 1) * cols);
    s.importance.push_back(importance ? importance + (r / rows_per_expert) * cols : nullptr);
  }
  return s;
}

double relative_error(const RowSample& sample, const std::vector<float>& reconstruction) {
  double err = 0, ref = 0;
  for (int64_t r = 0; r < sample.rows(); ++r) {
    const float* w = sample.importance[size_t(r)];
    for (int64_t c = 0; c < sample.cols; ++c) {
      const size_t i = size_t(r * sample.cols + c);
      const double weight = w ? w[c] : 1.0, x = sample.values[i], d = x - reconstruction[i];
      err += weight * d * d;
      ref += weight * x * x;
    }
  }
  return ref > 0 ? err / ref : 0.0;
}

namespace {

// Σ_r v_r H v_rᵀ over `rows` rows of `cols` values, H symmetric.
double sum_of_quadratic_forms(const float* v, int64_t rows, int64_t cols, std::span<const float> hessian) {
  std::vector<double> sums(static_cast<size_t>(rows));
  parallel_for(rows, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> hv(static_cast<size_t>(cols));
    for (int64_t r = begin; r < end; ++r) {
      const float* row = v + r * cols;
      // Hv as a sum of H's rows: each step a vector update, no serial chain of additions.
      std::fill(hv.begin(), hv.end(), 0.0f);
      for (int64_t j = 0; j < cols; ++j) {
        const float* h = hessian.data() + j * cols;
        const float vj = row[j];
        for (int64_t i = 0; i < cols; ++i) hv[size_t(i)] += vj * h[i];
      }
      double s = 0;
      for (int64_t i = 0; i < cols; ++i) s += double(row[i]) * hv[size_t(i)];
      sums[size_t(r)] = s;
    }
  });
  double total = 0;
  for (double s : sums) total += s;
  return total;
}

}  // namespace

OutputError::OutputError(const RowSample& sample, std::span<const float> hessian)
    : sample_(sample), hessian_(hessian), reference_(sum_of_quadratic_forms(sample.values.data(), sample.rows(), sample.cols, hessian)) {}

double OutputError::relative(const std::vector<float>& reconstruction) const {
  std::vector<float> d(sample_.values.size());
  for (size_t i = 0; i < d.size(); ++i) d[i] = sample_.values[i] - reconstruction[i];
  return reference_ > 0 ? sum_of_quadratic_forms(d.data(), sample_.rows(), sample_.cols, hessian_) / reference_ : 0.0;
}

void allocate_plan(Plan& plan) {
  std::vector<std::vector<Option>> items;
  std::vector<size_t> item_tensor;
  double fixed_bits = 0;
  plan.params = 0;
  for (size_t i = 0; i < plan.tensors.size(); ++i) {
    const auto& t = plan.tensors[i];
    plan.params += t.params;
    if (!t.quantized) {
      fixed_bits += 8.0 * double(t.bytes);
      continue;
    }
    std::vector<Option> item;
    for (const auto& o : t.options) item.push_back({8.0 * double(o.bytes), o.loss});
    items.push_back(std::move(item));
    item_tensor.push_back(i);
  }
  const double budget = plan.target_bpw * double(plan.params) - fixed_bits;
  double smallest = 0;
  for (const auto& item : items) smallest += std::ranges::min(item, {}, &Option::bits).bits;
  if (!std::isfinite(plan.target_bpw) || plan.target_bpw <= 0)
    throw Error(fmt::format("target of {} bits per weight", plan.target_bpw), {.file = plan.model, .expected = "a finite positive number"});
  // A target above what the allowed formats reach is not refused: the plan then shows where the rules
  // bind (every tensor at its largest allowed candidate) and says it lands under the target.
  if (smallest > budget)
    throw Error(fmt::format("{:.3f} bits per weight is below what the allowed formats can reach ({:.3f})", plan.target_bpw,
                            (smallest + fixed_bits) / double(plan.params)),
                {.file = plan.model});
  const auto choice = allocate(items, budget);
  for (size_t i = 0; i < items.size(); ++i) {
    auto& t = plan.tensors[item_tensor[i]];
    const auto& o = t.options[size_t(choice[i])];
    t.format = o.format;
    t.bytes = o.bytes;
    t.loss = o.loss;
  }
  plan.bytes = 0;
  for (const auto& t : plan.tensors) plan.bytes += t.bytes;
  plan.achieved_bpw = 8.0 * double(plan.bytes) / double(plan.params);
  plan.predicted_loss = 0;
  for (const auto& t : plan.tensors) plan.predicted_loss += t.quantized ? t.loss : 0.0;
}

}  // namespace planning

Plan make_plan(const ModelSource& source, const PlanOptions& options_in, Progress& progress) {
  Plan plan{.model = source.label(), .target = PlanTarget::gguf, .target_bpw = options_in.target_bpw,
            .loss_measure = {.output_kld = options_in.probe != nullptr, .imatrix_weighted = options_in.imatrix != nullptr,
                             .probe_positions = options_in.probe ? options_in.probe->positions() : 0,
                             .gptq = options_in.hessian ? options_in.hessian->label() : ""}};
  // A model without output.weight reads its logits through the embedding: protect it as the output
  // layer, as llama.cpp does (q6_K in its mixes).
  PlanOptions options = options_in;
  const auto& all = source.tensors();
  if (std::none_of(all.begin(), all.end(), [](const auto& t) { return t.name == "output.weight"; }))
    options.rules.push_back({.match = "token_embd.weight", .min_bpw = kTiedOutputMinBpw});
  std::optional<GptqTensors> gptq_writer;
  if (options.hessian) gptq_writer.emplace(*options.hessian, options.imatrix);
  progress.begin("measure", int64_t(source.tensors().size()), 0);
  for (const auto& t : source.tensors()) {
    const auto role = classify_tensor(t.name);
    PlannedTensor p{.name = t.name, .role = role.role, .layer = role.layer, .params = t.elements()};
    if (!tensor_allows_quantization(t.name, t.ne)) {
      p.format = format_spec(source.unquantized_type(t));
      p.bytes = gguf::tensor_bytes(source.unquantized_type(t), t.ne);
    } else {
      const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
      const WeighedValues weighed = weighed_values(source, t, options);
      const auto& values = weighed.values;
      const float* importance = weighed.importance;
      const auto sample = planning::sample_rows(values, t.ne[0], importance, t.elements() / t.ne[0] / experts);
      const HessianFile::Input* input = gptq_writer ? gptq_writer->input_of(t, source.label()) : nullptr;
      std::optional<GptqCandidates> gptq;
      if (input) gptq.emplace(GptqCandidates{*gptq_writer, planning::OutputError(sample, input->xtx), source.label()});
      const std::string names[] = {t.name};
      for (GgmlType type : gguf_candidates()) {
        if (t.ne[0] % ggml_type_info(type).block_elements != 0) continue;  // rows this type cannot tile (tensor_bytes throws)
        if (ggml_requires_imatrix(type) && !importance) continue;           // ggml refuses to quantize it without one
        const uint64_t bytes = gguf::tensor_bytes(type, t.ne);
        if (!planning::rules_allow(options.rules, names, role.layer, format_spec(type), 8.0 * double(bytes) / double(p.params))) continue;
        p.options.push_back({format_spec(type), bytes, ggml_loss(sample, type, t, gptq ? &*gptq : nullptr)});
      }
      if (p.options.empty()) throw Error("no candidate format is allowed for this tensor by the rules", {.file = source.label(), .tensor = t.name});
      if (options.probe) {
        // A probe costs forward passes: only candidates that no smaller one beats on relative error are
        // probed (of q4_0, iq4_nl and q4_K, all 4.5 bits, one), and one without error costs nothing.
        p.options = pareto_efficient(std::move(p.options));
        for (auto& o : p.options)
          if (o.loss > 0)
            o.loss = probed_loss(*options.probe, t, values, importance, *format_info(o.format.id).ggml, gptq_writer ? &*gptq_writer : nullptr,
                                 source.label());
      }
      p.quantized = true;
    }
    plan.tensors.push_back(std::move(p));
    progress.advance(t.name, 0);
  }
  progress.end();
  planning::allocate_plan(plan);
  if (options.probe) plan.loss_measure.whole_kld = whole_kld(source, options, gptq_writer ? &*gptq_writer : nullptr, plan);
  return plan;
}

}  // namespace lowbit
