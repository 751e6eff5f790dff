#include "lowbit/pipeline/lora_merge.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>

#include "lowbit/io/hf_names.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"

namespace lowbit {
namespace {

std::vector<float> to_f32(const TensorView& view) {
  std::vector<float> out(size_t(view.elements()));
  convert_to_f32(view.dtype, view.bytes.data(), out.data(), out.size());
  return out;
}

std::optional<DType> float_dtype_of(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return DType::f32;
    case GgmlType::F16: return DType::f16;
    case GgmlType::BF16: return DType::bf16;
    default: return std::nullopt;
  }
}

// What the merge does to one base tensor.
struct Change {
  std::vector<std::pair<const LoraAdapter::Module*, double>> updates;  // module, scale · module.scale
  const LoraAdapter::Replacement* replacement = nullptr;
  int64_t rows_per_head = 0;  // > 0: the base holds this Q/K weight in llama.cpp's permuted row order
};

// Row r of the tensor as the source serves it is row `hf_row(r)` of the Hugging Face matrix.
int64_t hf_row(const Change& change, int64_t r) { return change.rows_per_head ? hf_row_of(r, change.rows_per_head) : r; }

class LoraSource final : public ModelSource {
 public:
  LoraSource(MergeBase base, std::vector<ScaledAdapter> adapters, LoraMergeOptions options)
      : base_(std::move(base)), adapters_(std::move(adapters)), options_(options), tensors_(base_.source->tensors()) {
    if (base_.dequantized && options_.into == MergeInto::original)
      throw Error("a bitsandbytes 4-bit base has only its dequantized weights: merge with --into dequantized",
                  {.file = base_.source->label()});
    std::map<std::string, const Tensor*> by_name;
    for (const auto& t : tensors_) by_name[t.name] = &t;
    const ModelFacts facts = model_facts(*base_.source);
    const auto* arch = base_.source->find("general.architecture");
    const bool permuted_qk = arch && arch->get_if<std::string>() && *arch->get_if<std::string>() == "llama";

    auto base_tensor = [&](const LoraAdapter& adapter, const std::string& hf) -> const Tensor& {
      const auto gguf = gguf_name_of(hf);
      const auto it = gguf ? by_name.find(*gguf) : by_name.end();
      if (it == by_name.end())
        throw Error("the adapter changes a tensor the base model does not have", {.file = adapter.label(), .tensor = hf});
      return *it->second;
    };
    for (const ScaledAdapter& scaled : adapters_) {
      const LoraAdapter& adapter = *scaled.adapter;
      for (const auto& m : adapter.modules()) {
        const Tensor& t = base_tensor(adapter, m.weight);
        if (t.ne.size() != 2 || t.ne[0] != m.a.shape[1] || t.ne[1] != m.b.shape[0])
          throw Error(fmt::format("B·A is [{}, {}] but the base weight is {}", m.b.shape[0], m.a.shape[1],
                                  shape_to_string(Shape(t.ne.rbegin(), t.ne.rend()))),
                      {.file = adapter.label(), .tensor = m.weight});
        if (options_.into == MergeInto::original && ggml_type_info(t.stored_type).quantized)
          throw Error(fmt::format("the base stores this weight as {}, not in 16 bits: merge with --into dequantized",
                                  ggml_type_name(t.stored_type)),
                      {.file = base_.source->label(), .tensor = t.name});
        Change& change = changes_[t.name];
        change.updates.emplace_back(&m, scaled.scale * m.scale);
        const bool q = t.name.ends_with("attn_q.weight"), k = t.name.ends_with("attn_k.weight");
        if (permuted_qk && (q || k)) change.rows_per_head = t.ne[1] / (q ? facts.n_head : facts.n_head_kv);
      }
      for (const auto& r : adapter.replacements()) {
        const Tensor& t = base_tensor(adapter, r.weight);
        if (r.value.elements() != t.elements())
          throw Error(fmt::format("the saved module has {} values, the base tensor {}", r.value.elements(), t.elements()),
                      {.file = adapter.label(), .tensor = r.weight});
        changes_[t.name].replacement = &r;
      }
    }
    // A merged weight is no longer its base's bytes: it is served as floats of the base's float type.
    for (auto& t : tensors_)
      if (changes_.contains(t.name) && ggml_type_info(t.stored_type).quantized) t.stored_type = GgmlType::F32;
  }

  const std::vector<gguf::KeyValue>& metadata() const override { return base_.source->metadata(); }
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  std::span<const std::byte> raw(const Tensor& tensor) const override {
    return changes_.contains(tensor.name) ? std::span<const std::byte>{} : base_.source->raw(base_tensor(tensor));
  }
  GgmlType unquantized_type(const Tensor& tensor) const override { return base_.source->unquantized_type(base_tensor(tensor)); }
  std::string label() const override { return base_.source->label(); }

  std::vector<float> load_f32(const Tensor& tensor) const override {
    const Tensor& base = base_tensor(tensor);
    const auto it = changes_.find(tensor.name);
    if (it == changes_.end()) return base_.source->load_f32(base);
    const Change& change = it->second;
    const int64_t cols = tensor.ne[0], rows = tensor.elements() / cols;
    // Everything is computed in the Hugging Face row order, where the adapter's rows and the 4-bit
    // blocks of training lie, and put back in the source's order at the end.
    std::vector<float> w(size_t(rows * cols));
    if (change.replacement) {
      w = to_f32(change.replacement->value);
    } else {
      const std::vector<float> served = base_.source->load_f32(base);
      for (int64_t r = 0; r < rows; ++r) std::copy_n(served.begin() + r * cols, cols, w.begin() + hf_row(change, r) * cols);
      if (options_.into == MergeInto::dequantized && options_.trained_on && !base_.dequantized && !ggml_type_info(base.stored_type).quantized)
        w = quantize_roundtrip(w, rows, cols, *float_dtype_of(base.stored_type), tensor.name);
    }
    for (const auto& [module, scale] : change.updates) add_update(*module, float(scale), w, cols);
    std::vector<float> out(w.size());
    for (int64_t r = 0; r < rows; ++r) std::copy_n(w.begin() + hf_row(change, r) * cols, cols, out.begin() + r * cols);
    return out;
  }

 private:
  const Tensor& base_tensor(const Tensor& tensor) const {
    const auto it = std::ranges::find(base_.source->tensors(), tensor.name, &Tensor::name);
    return *it;
  }

  // dequant(Q(W)) as training saw it: W in its own dtype quantized to 4 bits, dequantized back to that dtype.
  std::vector<float> quantize_roundtrip(const std::vector<float>& w, int64_t rows, int64_t cols, DType dtype, const std::string& name) const {
    lowbit::Tensor original(dtype, {rows, cols});
    convert_from_f32(w.data(), dtype, original.buffer.data(), w.size());
    const FormatSpec& f = *options_.trained_on;
    const auto q = bnb::quantize_4bit(original.view(), {.quant_type = *bnb::quant_type_of(f.id), .blocksize = f.blocksize, .double_quant = f.double_quant}, name);
    return to_f32(bnb::dequantize_4bit(q.packed, q.state, dtype, name).view());
  }

  // w (rows × cols, Hugging Face order) += scale · B·A, accumulated in float32 as PEFT's merge does.
  static void add_update(const LoraAdapter::Module& m, float scale, std::vector<float>& w, int64_t cols) {
    const std::vector<float> a = to_f32(m.a), b = to_f32(m.b);
    const int64_t rank = m.a.shape[0], rows = m.b.shape[0];
    std::vector<float> delta(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      std::fill(delta.begin(), delta.end(), 0.0f);
      for (int64_t k = 0; k < rank; ++k) {
        const float bk = b[size_t(r * rank + k)];
        const float* ak = a.data() + k * cols;
        for (int64_t c = 0; c < cols; ++c) delta[size_t(c)] += bk * ak[c];
      }
      float* row = w.data() + r * cols;
      for (int64_t c = 0; c < cols; ++c) row[c] += scale * delta[size_t(c)];
    }
  }

  MergeBase base_;
  std::vector<ScaledAdapter> adapters_;
  LoraMergeOptions options_;
  std::vector<Tensor> tensors_;
  std::map<std::string, Change> changes_;  // GGUF name -> what the adapters do to it
};

}  // namespace

std::vector<ScaledAdapter> open_adapters(const std::vector<std::string>& dirs, const std::vector<double>& scales) {
  if (!scales.empty() && scales.size() != dirs.size())
    throw Error(fmt::format("{} scales for {} adapters: give one per adapter, in the same order, or none", scales.size(), dirs.size()));
  std::vector<ScaledAdapter> out;
  for (size_t i = 0; i < dirs.size(); ++i) {
    const double scale = scales.empty() ? 1.0 : scales[i];
    if (!std::isfinite(scale)) throw Error(fmt::format("the scale {} of adapter {} is not a finite number", scale, dirs[i]));
    out.push_back({std::make_shared<LoraAdapter>(dirs[i]), scale});
  }
  return out;
}

MergeBase open_merge_base(const std::filesystem::path& path) {
  return {ModelSource::open(path), std::filesystem::is_directory(path) && is_bnb_checkpoint(path)};
}

std::unique_ptr<ModelSource> merge_lora(const MergeBase& base, std::vector<ScaledAdapter> adapters, const LoraMergeOptions& options) {
  if (adapters.empty()) throw Error("no adapter to merge");
  return std::make_unique<LoraSource>(base, std::move(adapters), options);
}

}  // namespace lowbit
