#include "pipeline/quantize/gptq_tensors.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"

namespace lowbit {

const HessianFile::Input& hessian_input_of(const HessianFile& hessian, std::string_view gguf_name, int64_t cols,
                                           const std::string& tensor, const std::string& model) {
  const HessianFile::Input* input = hessian.find(gguf_name);
  if (!input)
    throw Error("the Hessian file has no input for this weight",
                {.file = hessian.label(), .tensor = tensor, .expected = fmt::format("a Hessian collected from {} (lowbit hessian)", model)});
  if (input->columns != cols)
    throw Error(fmt::format("its input {} has {} columns", input->name, input->columns),
                {.file = hessian.label(), .tensor = tensor, .expected = fmt::format("{} columns, as the weight's rows in {}", cols, model)});
  return *input;
}

std::vector<float> hessian_importance(const HessianFile& hessian, const ModelSource::Tensor& t) {
  const HessianFile::Input* input = hessian.find(t.name);
  std::vector<float> importance;
  if (!input || t.ne.size() != 2 || input->columns != t.ne[0] || hessian.tokens() == 0) return importance;
  for (int64_t c = 0; c < input->columns; ++c) importance.push_back(input->xtx[size_t(c * input->columns + c)] / float(hessian.tokens()));
  return importance;
}

const HessianFile::Input* GptqTensors::input_of(const ModelSource::Tensor& t, const std::string& label) const {
  if (t.ne.size() != 2) return nullptr;
  if (!hessian_.find(t.name) && !t.name.starts_with("blk.")) return nullptr;  // outside the layers: rounded as usual
  return &hessian_input_of(hessian_, t.name, t.ne[0], t.name, label);
}

std::vector<std::byte> GptqTensors::encode_rows(const ModelSource::Tensor& t, GgmlType to, const float* values, int64_t rows,
                                                const std::string& label) {
  for (int64_t i = 0; i < rows * t.ne[0]; ++i)
    if (!std::isfinite(values[i]))
      throw Error(fmt::format("{} at row {}, column {}", values[i], i / t.ne[0], i % t.ne[0]),
                  {.file = label, .tensor = t.name, .expected = "finite weights: GPTQ spreads each value's error over its row"});
  const HessianFile::Input& input = *hessian_.find(t.name);
  const GptqFactor& factor = factor_of_(input);
  std::vector<float> importance;
  if (const ImatrixEntry* e = imatrix_ ? imatrix_->find(t.name) : nullptr; e && e->experts == 1 && e->columns == t.ne[0]) {
    importance = e->weights;
  } else {
    importance = hessian_importance(hessian_, t);
  }
  std::vector<std::byte> out(size_t(rows) * ggml_row_bytes(to, t.ne[0]));
  gptq_quantize_rows(to, values, rows, t.ne[0], factor, importance.data(), out.data());
  return out;
}

const GptqFactor& GptqFactorCache::operator()(const HessianFile::Input& input) {
  const auto kept = std::ranges::find(factors_, input.name, &std::pair<std::string, GptqFactor>::first);
  if (kept != factors_.end()) {
    factors_.splice(factors_.begin(), factors_, kept);
    return factors_.front().second;
  }
  if (factors_.size() == 2) factors_.pop_back();  // before the new one is made: at most two in memory
  factors_.emplace_front(input.name, GptqFactor(input.xtx, input.columns));
  return factors_.front().second;
}

}  // namespace lowbit
