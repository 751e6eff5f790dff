#include "lowbit/pipeline/quantize_gguf.h"

#include <fmt/format.h>

#include <chrono>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"

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

// The importance weights of a tensor, or nullptr; checks they fit its rows (llama-quantize refuses otherwise).
const float* importance_for(const GgufQuantizeOptions& options, const ModelSource::Tensor& t, const std::string& label) {
  if (!options.imatrix) return nullptr;
  const ImatrixEntry* entry = options.imatrix->find(t.name);
  if (!entry) return nullptr;
  const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
  if (entry->columns != t.ne[0] || entry->experts != experts)
    throw Error(fmt::format("importance matrix has {} columns × {} experts", entry->columns, entry->experts),
                {.file = label, .tensor = t.name, .expected = fmt::format("{} columns × {} experts", t.ne[0], experts)});
  return entry->weights.data();
}

// Encodes float rows into `type`: a float conversion or ggml's block quantization.
std::vector<std::byte> encode(const std::vector<float>& values, const ModelSource::Tensor& t, GgmlType type, const float* weights) {
  const uint64_t size = gguf::tensor_bytes(type, t.ne);
  std::vector<std::byte> out(size);
  if (is_float_type(type)) {
    convert_from_f32(values.data(), dtype_of_float_type(type), out.data(), values.size());
    return out;
  }
  const int64_t cols = t.ne[0];
  const int64_t experts = t.ne.size() > 2 ? t.ne[2] : 1;
  const int64_t rows_per_expert = int64_t(values.size()) / cols / experts;
  const uint64_t expert_bytes = size / uint64_t(experts);
  // 3-D expert tensors: each expert's rows with its own slice of the importance weights.
  for (int64_t e = 0; e < experts; ++e)
    quantize_rows(type, values.data() + e * rows_per_expert * cols, rows_per_expert, cols, weights ? weights + e * cols : nullptr,
                  out.data() + uint64_t(e) * expert_bytes);
  return out;
}

}  // namespace

GgufQuantizeReport quantize_to_gguf(const ModelSource& source, const std::filesystem::path& out, GgufQuantizeOptions options,
                                    Progress& progress) {
  const auto start = std::chrono::steady_clock::now();
  options.selection.has_imatrix = options.imatrix != nullptr;
  const TypeSelector selector(options.selection, source.facts());

  // Decide every tensor's type first: the header lists them all.
  GgufQuantizeReport report;
  uint64_t total_bytes = 0;
  for (const auto& t : source.tensors()) {
    const GgmlType to = selector.choose(t.name, t.ne).value_or(source.unquantized_type(t));
    if (!is_float_type(to) && (!ggml_codec(to) || !ggml_codec(to)->quantize_row))
      throw Error(fmt::format("lowbit cannot write {} yet", ggml_type_name(to)), {.file = source.label(), .tensor = t.name});
    report.tensors.push_back({t.name, t.stored_type, to, t.elements(), gguf::tensor_bytes(to, t.ne), false});
    total_bytes += report.tensors.back().bytes;
  }

  gguf::Writer writer(out);
  for (const auto& kv : source.metadata())
    if (!kv.key.starts_with("split.") && kv.key != "general.alignment") writer.set(kv.key, kv.value);
  writer.set("general.quantization_version", {kQuantizationVersion});
  const uint32_t file_type = options.selection.mix ? options.selection.mix->file_type : llama_file_type_of(options.selection.default_type);
  writer.set("general.file_type", {file_type});
  if (options.imatrix) {
    writer.set("quantize.imatrix.file", {options.imatrix_path.substr(0, 127)});
    if (!options.imatrix->datasets().empty()) writer.set("quantize.imatrix.dataset", {options.imatrix->datasets().front()});
    writer.set("quantize.imatrix.entries_count", {int32_t(options.imatrix->entries().size())});
    writer.set("quantize.imatrix.chunks_count", {int32_t(options.imatrix->chunk_count())});
  }
  for (size_t i = 0; i < source.tensors().size(); ++i) writer.add_tensor(source.tensors()[i].name, report.tensors[i].to, source.tensors()[i].ne);

  progress.begin("quantize", int64_t(source.tensors().size()), total_bytes);
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    auto& r = report.tensors[i];
    const auto raw = r.to == t.stored_type ? source.raw(t) : std::span<const std::byte>{};
    if (!raw.empty()) {
      writer.write_data(t.name, raw);  // already in its target type: copied as it is
    } else {
      const float* weights = ggml_type_info(r.to).quantized ? importance_for(options, t, source.label()) : nullptr;
      r.used_imatrix = weights != nullptr;
      writer.write_data(t.name, encode(source.load_f32(t), t, r.to, weights));
    }
    report.params += r.params;
    report.bytes += r.bytes;
    progress.advance(t.name, r.bytes);
  }
  writer.finish();
  progress.end();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
