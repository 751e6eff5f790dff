// Reading a bitsandbytes checkpoint (names and companions in lowbit/io/bnb_checkpoint.h): what
// `lowbit dequantize` writes and what a ModelSource over the checkpoint serves, read by one reader.
#pragma once

#include <fmt/format.h>

#include <array>
#include <cstring>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/format.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/checkpoint.h"
#include "pipeline/outputs/value_guard.h"

namespace lowbit {

// The one reader of a bitsandbytes checkpoint's weights: the checkpoint's tensors by name, what each
// bitsandbytes weight is made of, and its values in its recorded dtype.
class BnbReader {
 public:
  explicit BnbReader(const Checkpoint& ckpt) : ckpt_(ckpt), int8_dtype_(ckpt.torch_dtype().value_or(DType::f16)) {
    for (const auto& e : ckpt.tensors()) by_name_[e.info->name] = &e;
  }
  const Checkpoint::Entry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  TensorView view(const Checkpoint::Entry& e) const { return e.shard->view(*e.info); }

  // The quant state tensor of a 4-bit weight, or null.
  const Checkpoint::Entry* quant_state(const std::string& weight) const {
    for (const bnb::QuantType type : bnb::kQuantTypes)
      if (const auto* e = find(weight + bnb::quant_state_key(bnb::quant_type_name(type)))) return e;
    return nullptr;
  }
  // The SCB of an int8 weight, or null.
  const Checkpoint::Entry* scb(const std::string& weight) const {
    if (const auto* e = find(bnb::module_of(weight) + ".SCB")) return e;
    return find(weight + ".SCB");
  }

  // Names of the companion tensors: they disappear from the output.
  std::vector<std::string> companions(const std::string& weight) const {
    std::vector<std::string> out;
    if (const auto* state = quant_state(weight)) {
      out.push_back(state->info->name);
      for (auto suffix : {bnb::kAbsmax, bnb::kQuantMap, bnb::kNestedAbsmax, bnb::kNestedQuantMap})
        if (find(weight + std::string(suffix))) out.push_back(weight + std::string(suffix));
    } else if (const auto* s = scb(weight); s && view(*find(weight)).dtype == DType::i8) {
      out.push_back(s->info->name);
      if (find(bnb::module_of(weight) + ".weight_format")) out.push_back(bnb::module_of(weight) + ".weight_format");
    }
    return out;
  }

  // Whether `weight` is a 4-bit or an LLM.int8 weight (not a float tensor or a companion).
  bool quantized(const std::string& weight) const;
  // A quantized weight's logical shape and the dtype it dequantizes to: a 4-bit weight's recorded one;
  // for int8, which records none, the model's own (config.json), else float16 as bitsandbytes computes in.
  Shape logical_shape(const std::string& weight) const;
  DType recorded_dtype(const std::string& weight) const;
  // A quantized weight dequantized to `to` (its recorded dtype by default), its statistics checked by
  // `guard` first; the file is named in every error.
  Tensor dequantize(const std::string& weight, std::optional<DType> to, ValueGuard& guard) const;

  // Rebuilds bitsandbytes' QuantState from the companions of a 4-bit weight.
  bnb::Bnb4bitState state_4bit(const std::string& weight) const {
    const auto* state_entry = quant_state(weight);
    const ErrorContext where{.file = state_entry->shard->label(), .tensor = state_entry->info->name};
    const TensorView state_view = view(*state_entry);
    const auto json = bnb::parse_quant_state({reinterpret_cast<const char*>(state_view.bytes.data()), state_view.bytes.size()}, where);
    bnb::Bnb4bitState s;
    s.quant_type = *bnb::quant_type_of(*parse_format_id(json.quant_type));  // parse_quant_state accepts nf4 and fp4 only
    s.blocksize = json.blocksize;
    s.dtype = json.dtype;
    s.shape = json.shape;
    s.code = floats<16>(weight + std::string(bnb::kQuantMap));
    const auto* absmax = require(weight + std::string(bnb::kAbsmax));
    const TensorView a = view(*absmax);
    if (json.nested_offset) {
      bnb::NestedAbsmax nested;
      if (a.dtype != DType::u8) throw Error("absmax of a double-quantized weight must be uint8 codes", {.file = absmax->shard->label(), .tensor = absmax->info->name});
      nested.codes.assign(reinterpret_cast<const uint8_t*>(a.bytes.data()), reinterpret_cast<const uint8_t*>(a.bytes.data()) + a.bytes.size());
      nested.nested_absmax = float_vector(weight + std::string(bnb::kNestedAbsmax));
      nested.code = floats<256>(weight + std::string(bnb::kNestedQuantMap));
      nested.offset = *json.nested_offset;
      nested.blocksize = json.nested_blocksize;
      s.nested = std::move(nested);
    } else {
      s.absmax = float_vector(weight + std::string(bnb::kAbsmax));
    }
    return s;
  }

 private:
  const Checkpoint::Entry* require(const std::string& name) const {
    const auto* e = find(name);
    if (!e) throw Error("bitsandbytes companion tensor is missing", {.file = ckpt_.path().string(), .tensor = name});
    return e;
  }
  std::vector<float> float_vector(const std::string& name) const {
    const auto* e = require(name);
    const TensorView v = view(*e);
    if (v.dtype != DType::f32) throw Error("expected a float32 tensor", {.file = e->shard->label(), .tensor = name});
    std::vector<float> out(v.bytes.size() / 4);
    std::memcpy(out.data(), v.bytes.data(), v.bytes.size());
    return out;
  }
  template <size_t N>
  std::array<float, N> floats(const std::string& name) const {
    const auto values = float_vector(name);
    if (values.size() != N)
      throw Error(fmt::format("{} values", values.size()), {.file = ckpt_.path().string(), .tensor = name, .expected = fmt::format("{}", N)});
    std::array<float, N> out{};
    std::copy(values.begin(), values.end(), out.begin());
    return out;
  }

  const Checkpoint& ckpt_;
  DType int8_dtype_;
  std::unordered_map<std::string, const Checkpoint::Entry*> by_name_;
};

// A float tensor converted to `to`, its values checked by `guard` for what `to` holds.
Tensor convert_checked(const TensorView& v, DType to, const ValueSite& site, ValueGuard& guard);

}  // namespace lowbit
