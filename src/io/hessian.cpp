#include "lowbit/io/hessian.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit {
namespace {

constexpr std::string_view kXtxSuffix = ".xtx";

std::vector<std::string> string_array(const gguf::File& file, const std::string& key) {
  const gguf::Value* v = file.find(key);
  const gguf::Array* a = v ? v->get_if<gguf::Array>() : nullptr;
  if (!a) throw Error("missing or not an array", {.file = file.label(), .tensor = key, .expected = "an array of strings"});
  std::vector<std::string> out;
  for (const auto& item : a->items) {
    const auto* s = item.get_if<std::string>();
    if (!s) throw Error("not a string", {.file = file.label(), .tensor = key, .expected = "an array of strings"});
    out.push_back(*s);
  }
  return out;
}

}  // namespace

void write_hessians(const std::filesystem::path& path, std::vector<HessianSums> inputs, const std::vector<std::string>& datasets,
                    uint32_t chunk_count, uint32_t chunk_size, uint64_t tokens) {
  std::ranges::sort(inputs, [](const HessianSums& a, const HessianSums& b) { return a.input < b.input; });
  std::vector<std::string> weights, weight_inputs;
  for (const auto& in : inputs) {
    if (in.xtx.size() != size_t(in.columns * in.columns))
      throw Error(fmt::format("{} values for {} columns", in.xtx.size(), in.columns), {.file = path.string(), .tensor = in.input});
    for (const auto& w : in.weights) {
      weights.push_back(w);
      weight_inputs.push_back(in.input);
    }
  }
  gguf::Writer w(path);
  w.set("general.type", {std::string("hessian")});
  w.set("hessian.datasets", gguf::make_string_array(datasets));
  w.set("hessian.chunk_count", {chunk_count});
  w.set("hessian.chunk_size", {chunk_size});
  w.set("hessian.tokens", {tokens});
  w.set("hessian.weights", gguf::make_string_array(weights));
  w.set("hessian.inputs", gguf::make_string_array(weight_inputs));
  for (const auto& in : inputs) w.add_tensor(in.input + std::string(kXtxSuffix), GgmlType::F32, {in.columns, in.columns});
  for (const auto& in : inputs) w.write_data(in.input + std::string(kXtxSuffix), std::as_bytes(std::span(in.xtx)));
  w.finish();
}

HessianFile::HessianFile(const std::filesystem::path& path) : file_(std::make_shared<gguf::File>(path)), label_(path.string()) {
  const gguf::File& f = *file_;
  const gguf::Value* type = f.find("general.type");
  const auto* type_name = type ? type->get_if<std::string>() : nullptr;
  if (!type_name || *type_name != "hessian")
    throw Error("not a Hessian file", {.file = label_, .tensor = "general.type", .expected = "\"hessian\" (a file from lowbit hessian)"});
  const gguf::Value* tokens = f.find("hessian.tokens");
  const auto count = tokens ? tokens->as_int() : std::nullopt;
  if (!count || *count < 1) throw Error("missing or not a positive integer", {.file = label_, .tensor = "hessian.tokens"});
  tokens_ = uint64_t(*count);
  datasets_ = string_array(f, "hessian.datasets");

  for (const auto& t : f.tensors()) {
    if (!t.name.ends_with(kXtxSuffix)) continue;
    const std::string name = t.name.substr(0, t.name.size() - kXtxSuffix.size());
    if (t.type != GgmlType::F32 || t.ne.size() != 2 || t.ne[0] != t.ne[1] || t.ne[0] < 1)
      throw Error(fmt::format("{} {}", ggml_type_name(t.type), shape_to_string(t.ne)),
                  {.file = label_, .tensor = t.name, .expected = "F32 [columns, columns]"});
    const auto bytes = f.data(t);
    const std::span values(reinterpret_cast<const float*>(bytes.data()), size_t(t.elements()));
    // GPTQ factors this matrix: a NaN, an Inf or a negative diagonal (a sum of squares) means a broken file.
    for (int64_t c = 0; c < t.ne[0]; ++c)
      if (const float d = values[size_t(c * t.ne[0] + c)]; !std::isfinite(d) || d < 0)
        throw Error(fmt::format("diagonal value {} at column {}", d, c), {.file = label_, .tensor = t.name, .expected = "finite, non-negative"});
    inputs_[name] = {name, t.ne[0], values};
  }

  const auto weights = string_array(f, "hessian.weights");
  const auto weight_inputs = string_array(f, "hessian.inputs");
  if (weights.size() != weight_inputs.size())
    throw Error(fmt::format("{} weights but {} inputs", weights.size(), weight_inputs.size()), {.file = label_, .tensor = "hessian.inputs"});
  for (size_t i = 0; i < weights.size(); ++i) {
    const auto it = inputs_.find(weight_inputs[i]);
    if (it == inputs_.end())
      throw Error(fmt::format("weight {} reads input {}, which has no tensor", weights[i], weight_inputs[i]),
                  {.file = label_, .tensor = weight_inputs[i] + std::string(kXtxSuffix)});
    weights_[weights[i]] = weight_inputs[i];
  }
}

const HessianFile::Input* HessianFile::find(std::string_view weight) const {
  const auto it = weights_.find(weight);
  return it == weights_.end() ? nullptr : &inputs_.find(it->second)->second;
}

}  // namespace lowbit
