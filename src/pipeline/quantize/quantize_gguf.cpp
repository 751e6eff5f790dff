#include "lowbit/pipeline/quantize_gguf.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/safetensors.h"
#include "pipeline/quantize/gptq_tensors.h"
#include "lowbit/io/value_guard.h"

namespace lowbit {
namespace {

constexpr uint32_t kQuantizationVersion = 2;  // GGML_QNT_VERSION, which llama-quantize records

DType dtype_of_float_type(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return DType::f32;
    case GgmlType::F16: return DType::f16;
    case GgmlType::BF16: return DType::bf16;
    default: throw Error(fmt::format("{} is not a float type", ggml_type_name(type)));
  }
}

bool is_float_type(GgmlType type) { return type == GgmlType::F32 || type == GgmlType::F16 || type == GgmlType::BF16; }

// A tensor's importance weights: its entry in the importance matrix (checked to fit its rows, as
// llama-quantize checks), else with --gptq its input's diag(H) / tokens, the importance vector of the
// Hessian's calibration text (gptq_tensors.h); empty when neither covers it.
struct TensorImportance {
  std::vector<float> weights;
  bool from_imatrix = false;
  const float* data() const { return weights.empty() ? nullptr : weights.data(); }
};

TensorImportance importance_for(const GgufQuantizeOptions& options, const ModelSource::Tensor& t, const std::string& label) {
  if (const ImatrixEntry* entry = options.imatrix ? options.imatrix->find(t.name) : nullptr) {
    const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
    // The legacy form records no expert count: a stacked tensor's entry is all its experts' columns in a row.
    const bool legacy_experts = entry->experts == 1 && experts > 1 && entry->columns == t.ne[0] * experts;
    if (!legacy_experts && (entry->columns != t.ne[0] || entry->experts != experts))
      throw Error(fmt::format("importance matrix has {} columns × {} experts", entry->columns, entry->experts),
                  {.file = label, .tensor = t.name, .expected = fmt::format("{} columns × {} experts", t.ne[0], experts)});
    return {entry->weights, true};
  }
  if (options.hessian) return {hessian_importance(*options.hessian, t), false};
  return {};
}

// Encodes float rows into `type` (a float conversion or ggml's block quantization) in chunks of about
// 64 Ki values; each chunk's values beyond f16 (NaN and Inf included) are counted into `beyond_f16`
// while it sits in cache, just before the codec reads it: the common case pays no second pass.
std::vector<std::byte> encode(const std::vector<float>& values, const ModelSource::Tensor& t, GgmlType type, const float* weights,
                              int64_t& beyond_f16) {
  const uint64_t size = gguf::tensor_bytes(type, t.ne);
  std::vector<std::byte> out(size);
  const int64_t cols = t.ne[0];
  const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
  const int64_t rows_per_expert = int64_t(values.size()) / std::max<int64_t>(cols, 1) / experts;
  const uint64_t expert_bytes = size / uint64_t(experts);
  const size_t row_bytes = cols > 0 ? ggml_row_bytes(type, cols) : 0;
  const int64_t grain = std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(cols, 1));
  std::atomic<int64_t> misfits{0};
  // 3-D expert tensors: each expert's rows with its own slice of the importance weights.
  for (int64_t e = 0; e < experts; ++e) {
    const float* x = values.data() + e * rows_per_expert * cols;
    std::byte* dst = out.data() + uint64_t(e) * expert_bytes;
    parallel_for(rows_per_expert, grain, [&](int64_t begin, int64_t end) {
      if (const int64_t c = count_misfits(x + begin * cols, (end - begin) * cols, ValueRange::f16)) misfits += c;
      if (is_float_type(type))
        convert_from_f32(x + begin * cols, dtype_of_float_type(type), dst + size_t(begin) * row_bytes, size_t((end - begin) * cols));
      else
        quantize_rows(type, x + begin * cols, end - begin, cols, weights ? weights + e * cols : nullptr, dst + size_t(begin) * row_bytes);
    });
  }
  beyond_f16 = misfits.load();
  return out;
}

// llama-quantize refuses to write the 1-2 bit i-quants (and q2_K in Q2_K_S) without importance weights
// for every tensor that gets them, the embeddings and output layer excepted: the result would be
// garbage. ggml itself cannot quantize iq2_xxs, iq2_xs and iq1_s without them, whatever the tensor. So
// lowbit refuses both, before writing anything. With --gptq a tensor the Hessian covers has them (its
// diagonal), whether or not the importance matrix has an entry for it: llama-imatrix leaves
// output.weight out unless asked, the Hessian file does not.
void require_importance_where_needed(const ModelSource& source, const std::vector<GgmlType>& types, uint32_t file_type,
                                     const GgufQuantizeOptions& options) {
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    const bool needed = tensor_requires_imatrix(t.name, types[i], file_type) || ggml_requires_imatrix(types[i]);
    if (types[i] == t.stored_type || !needed) continue;
    if (importance_for(options, t, source.label()).data()) continue;
    const char* why = options.imatrix && options.hessian ? "neither the importance matrix nor the Hessian file has an entry for it"
                      : options.imatrix                  ? "the importance matrix given has no entry for it"
                      : options.hessian                  ? "the Hessian file has no input for it and no importance matrix was given"
                                                         : "no importance matrix was given";
    throw Error(fmt::format("{} needs importance weights for this tensor ({}; llama-quantize refuses too): make them with "
                            "`lowbit imatrix MODEL --text FILE -o imatrix.gguf` and pass --imatrix imatrix.gguf",
                            ggml_type_name(types[i]), why),
                {.file = source.label(), .tensor = t.name});
  }
}

}  // namespace

namespace {

// Writes `source` with tensor i in types[i]: copied when already so, else converted or quantized.
GgufQuantizeReport write_gguf(const ModelSource& source, const std::filesystem::path& out, const std::vector<GgmlType>& types,
                              uint32_t file_type, const GgufQuantizeOptions& options, Progress& progress) {
  const auto start = std::chrono::steady_clock::now();
  require_importance_where_needed(source, types, file_type, options);
  GgufQuantizeReport report;
  uint64_t total_bytes = 0;
  std::optional<GptqTensors> gptq;
  if (options.hessian) gptq.emplace(*options.hessian, options.imatrix);
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    const GgmlType to = types[i];
    if (!is_float_type(to) && (!ggml_codec(to) || !ggml_codec(to)->quantize_row))
      throw Error(fmt::format("lowbit cannot write {} yet", ggml_type_name(to)), {.file = source.label(), .tensor = t.name});
    report.tensors.push_back({t.name, t.stored_type, to, t.elements(), gguf::tensor_bytes(to, t.ne), false});
    total_bytes += report.tensors.back().bytes;
    // Checked for every tensor before anything is written: a Hessian of another model is refused here.
    if (gptq && to != t.stored_type && ggml_type_info(to).quantized) {
      report.tensors.back().used_gptq = gptq->applies(t, to, source.label());
      if (!gptq_supports(to) && std::ranges::find(report.gptq_fallback, to) == report.gptq_fallback.end()) report.gptq_fallback.push_back(to);
    }
  }

  gguf::Writer writer(out);
  for (const auto& kv : source.metadata())
    if (!kv.key.starts_with("split.") && kv.key != "general.alignment") writer.set(kv.key, kv.value);
  writer.set("general.quantization_version", {kQuantizationVersion});
  writer.set("general.file_type", {file_type});
  if (options.imatrix) {
    writer.set("quantize.imatrix.file", {options.imatrix_path.substr(0, 127)});
    if (!options.imatrix->datasets().empty()) writer.set("quantize.imatrix.dataset", {options.imatrix->datasets().front()});
    writer.set("quantize.imatrix.entries_count", {int32_t(options.imatrix->entries().size())});
    writer.set("quantize.imatrix.chunks_count", {int32_t(options.imatrix->chunk_count())});
  }
  if (options.hessian) {
    writer.set("quantize.gptq.hessian.file", {options.hessian_path.substr(0, 127)});
    if (!options.hessian->datasets().empty()) writer.set("quantize.gptq.hessian.dataset", {options.hessian->datasets().front()});
    writer.set("quantize.gptq.hessian.tokens", {uint64_t(options.hessian->tokens())});
  }
  for (size_t i = 0; i < source.tensors().size(); ++i) writer.add_tensor(source.tensors()[i].name, types[i], source.tensors()[i].ne);

  ValueGuard guard(options.nonfinite);
  progress.begin("quantize", int64_t(source.tensors().size()), total_bytes);
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    auto& r = report.tensors[i];
    const ValueSite site{source.label(), t.name, t.ne[0]};
    const bool quantized = ggml_type_info(r.to).quantized;
    const auto raw = r.to == t.stored_type ? source.raw(t) : std::span<const std::byte>{};
    if (!raw.empty()) {
      // Already in its target type: copied as it is, once its values (or scales) pass the policy.
      if (quantized) {
        guard.source_scales(site, t.stored_type, raw);
        ValueGuard::written_scales(site, r.to, raw, nullptr);
      } else {
        guard.stored(site, r.to, raw);
      }
      writer.write_data(t.name, raw);
    } else {
      const TensorImportance importance = quantized ? importance_for(options, t, source.label()) : TensorImportance{};
      r.used_imatrix = importance.from_imatrix;
      if (ggml_type_info(t.stored_type).quantized) guard.source_scales(site, t.stored_type, source.raw(t));
      const std::vector<float> values = source.load_f32(t);
      int64_t beyond_f16 = 0;
      std::vector<std::byte> bytes;
      if (r.used_gptq) {
        beyond_f16 = count_misfits(values.data(), int64_t(values.size()), ValueRange::f16);
        bytes = gptq->encode(t, r.to, values, source.label());
      } else {
        bytes = encode(values, t, r.to, importance.data(), beyond_f16);
      }
      // Only a tensor holding a value beyond f16 can hold one its type cannot: then the full check.
      if (beyond_f16) guard.values(site, values.data(), int64_t(values.size()), value_range_of(r.to), ggml_type_name(r.to));
      // As llama-quantize validates its rows: no non-finite block scale reaches the file.
      if (quantized) ValueGuard::written_scales(site, r.to, bytes, values.data(), beyond_f16 > 0);
      writer.write_data(t.name, bytes);
    }
    report.params += r.params;
    report.bytes += r.bytes;
    progress.advance(t.name, r.bytes);
  }
  writer.finish();
  progress.end();
  report.nonfinite = guard.count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace

GgufQuantizeReport quantize_to_gguf(const ModelSource& source, const std::filesystem::path& out, GgufQuantizeOptions options,
                                    Progress& progress) {
  options.selection.has_imatrix = options.imatrix != nullptr;
  const TypeSelector selector(options.selection, model_facts(source));
  std::vector<GgmlType> types;
  for (const auto& t : source.tensors()) types.push_back(selector.choose(t.name, t.ne).value_or(source.unquantized_type(t)));
  const uint32_t file_type = options.selection.mix ? options.selection.mix->file_type : llama_file_type_of(options.selection.default_type);
  return write_gguf(source, out, types, file_type, options, progress);
}

GgufQuantizeReport dequantize_gguf(const ModelSource& source, const std::filesystem::path& out, DType dtype, Progress& progress,
                                   const NonfinitePolicy& nonfinite) {
  const GgmlType target = dtype == DType::f32 ? GgmlType::F32 : dtype == DType::f16 ? GgmlType::F16 : GgmlType::BF16;
  if (!dtype_is_float(dtype) || dtype == DType::f64) throw Error(fmt::format("cannot dequantize to {}", dtype_name(dtype)), {.expected = "f32, f16 or bf16"});
  if (out.extension() == ".gguf") {
    std::vector<GgmlType> types;
    for (const auto& t : source.tensors()) types.push_back(ggml_type_info(t.stored_type).quantized ? target : t.stored_type);
    return write_gguf(source, out, types, llama_file_type_of(target), {.nonfinite = nonfinite}, progress);
  }
  if (out.extension() != ".safetensors") throw Error("the output must end in .gguf or .safetensors", {.file = out.string()});
  // Plain tensors under their GGUF names, in row-major (PyTorch) dimension order.
  const auto start = std::chrono::steady_clock::now();
  GgufQuantizeReport report;
  std::vector<std::string> names;
  for (const auto& t : source.tensors()) names.push_back(t.name);
  safetensors::Writer writer(out, names, {{"format", "pt"}, {"source", "gguf"}});
  ValueGuard guard(nonfinite);
  progress.begin("dequantize", int64_t(names.size()), 0);
  for (const auto& t : source.tensors()) {
    const GgmlType to = ggml_type_info(t.stored_type).quantized ? target : t.stored_type;
    if (!is_float_type(to)) throw Error(fmt::format("cannot store {} in safetensors", ggml_type_name(to)), {.file = source.label(), .tensor = t.name});
    int64_t beyond_f16 = 0;  // load_checked has applied the policy
    const auto bytes = encode(load_checked(source, t, to, guard), t, to, nullptr, beyond_f16);
    const Shape shape(t.ne.rbegin(), t.ne.rend());
    writer.write(t.name, TensorView::make(dtype_of_float_type(to), shape, bytes));
    report.tensors.push_back({t.name, t.stored_type, to, t.elements(), bytes.size(), false});
    report.params += t.elements();
    report.bytes += bytes.size();
    progress.advance(t.name, bytes.size());
  }
  writer.finish();
  progress.end();
  report.nonfinite = guard.count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
