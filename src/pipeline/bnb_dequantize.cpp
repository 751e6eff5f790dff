// lowbit dequantize of a bitsandbytes checkpoint: each quantized weight back to its recorded dtype.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <unordered_map>

#include "checkpoint_output.h"
#include "lowbit/core/atomic_file.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "value_guard.h"

namespace lowbit {
namespace {

using bnb::module_of;

// The checkpoint's tensors by name, and what each bitsandbytes weight is made of.
class BnbReader {
 public:
  explicit BnbReader(const Checkpoint& ckpt) : ckpt_(ckpt) {
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
    if (const auto* e = find(module_of(weight) + ".SCB")) return e;
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
      if (find(module_of(weight) + ".weight_format")) out.push_back(module_of(weight) + ".weight_format");
    }
    return out;
  }

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
  std::unordered_map<std::string, const Checkpoint::Entry*> by_name_;
};

// A float tensor converted to `to`, its values checked for what `to` holds.
Tensor convert(const TensorView& v, DType to, const ValueSite& site, ValueGuard& guard) {
  Tensor out(to, v.shape);
  std::vector<float> f32(size_t(v.elements()));
  convert_to_f32(v.dtype, v.bytes.data(), f32.data(), f32.size());
  guard.values(site, f32.data(), int64_t(f32.size()), value_range_of(to), dtype_name(to));
  convert_from_f32(f32.data(), to, out.buffer.data(), f32.size());
  return out;
}

GgmlType stored_float_type(DType dtype) {
  return dtype == DType::f16 ? GgmlType::F16 : dtype == DType::bf16 ? GgmlType::BF16 : dtype == DType::f32 ? GgmlType::F32 : GgmlType::I8;
}

// A 4-bit weight's statistics: the code map and every block's scale (nested ones dequantized) must
// be finite, and the scales within `out`'s range (the block's largest value is ±scale exactly).
void check_4bit_state(const bnb::Bnb4bitState& state, DType out, const ValueSite& site, ValueGuard& guard) {
  guard.statistics(site, "quant_map", state.code, ValueRange::finite);
  if (state.nested) {
    guard.statistics(site, "nested_quant_map", state.nested->code, ValueRange::finite);
    guard.statistics(site, "nested_absmax", state.nested->nested_absmax, ValueRange::finite);
    guard.statistics(site, "nested offset", std::span(&state.nested->offset, 1), ValueRange::finite);
  }
  guard.statistics(site, "absmax", state.block_scales(), value_range_of(out));
}

}  // namespace

bool is_bnb_checkpoint(const std::filesystem::path& path) {
  const Checkpoint ckpt(path);
  for (const auto& e : ckpt.tensors()) {
    const auto& name = e.info->name;
    if (name.find(".quant_state.bitsandbytes__") != std::string::npos || name.ends_with(".SCB")) return true;
  }
  return false;
}

JobReport dequantize_bnb(const std::filesystem::path& input, const std::filesystem::path& output, std::optional<DType> dtype,
                         Progress& progress, const NonfinitePolicy& nonfinite, bool overwrite) {
  const auto start = std::chrono::steady_clock::now();
  if (dtype && !dtype_is_float(*dtype)) throw Error(fmt::format("--dtype {} is not a float type", dtype_name(*dtype)));
  const Checkpoint ckpt(input);
  const BnbReader reader(ckpt);
  // int8 weights record no dtype: the model's own (config.json), else float16 as bitsandbytes computes in.
  const DType int8_dtype = ckpt.torch_dtype().value_or(DType::f16);

  std::unordered_map<std::string, bool> dropped;
  for (const auto& e : ckpt.tensors())
    for (const auto& c : reader.companions(e.info->name)) dropped[c] = true;
  std::vector<const Checkpoint::Entry*> kept;
  std::vector<TensorGroup> groups;
  JobReport report;
  for (const auto& e : ckpt.tensors()) {
    report.bytes_in += e.info->size();
    if (dropped.count(e.info->name)) continue;
    kept.push_back(&e);
    groups.push_back({{e.info->name}, e.info->size() * 4});
  }

  ValueGuard guard(nonfinite);
  progress.begin("dequantize", int64_t(kept.size()), 0);
  auto write_tensor = [&](const Checkpoint::Entry& e, const std::function<void(const std::string&, const TensorView&)>& emit) {
    const auto& name = e.info->name;
    const TensorView v = reader.view(e);
    const ValueSite site{e.shard->label(), name, v.shape.size() >= 2 ? v.shape.back() : 0};
    if (reader.quant_state(name)) {
      const auto state = reader.state_4bit(name);
      check_4bit_state(state, dtype.value_or(state.dtype), site, guard);
      const std::span<const uint8_t> packed(reinterpret_cast<const uint8_t*>(v.bytes.data()), v.bytes.size());
      const Tensor t = bnb::dequantize_4bit(packed, state, dtype.value_or(state.dtype), name);
      emit(name, t.view());
      ++report.quantized;
    } else if (v.dtype == DType::i8 && reader.scb(name)) {
      if (v.shape.size() != 2) throw Error("int8 weight is not 2-D", {.file = e.shard->label(), .tensor = name});
      bnb::Int8RowwiseQuantized q{.rows = v.shape[0], .cols = v.shape[1]};
      q.cb.resize(v.bytes.size());
      std::memcpy(q.cb.data(), v.bytes.data(), v.bytes.size());
      const TensorView scb = reader.view(*reader.scb(name));
      if (scb.dtype != DType::f32 || scb.elements() != q.rows)
        throw Error("SCB must hold one float32 per row", {.file = e.shard->label(), .tensor = reader.scb(name)->info->name});
      q.scb.resize(size_t(q.rows));
      std::memcpy(q.scb.data(), scb.bytes.data(), scb.bytes.size());
      // SCB is the largest |w| of a float16 row: beyond f16 it was never written by bitsandbytes.
      guard.statistics({e.shard->label(), reader.scb(name)->info->name, 0}, "SCB", q.scb, ValueRange::f16);
      const Tensor f32 = bnb::dequantize_int8_rowwise(q);
      const DType to = dtype.value_or(int8_dtype);
      emit(name, to == DType::f32 ? f32.view() : convert(f32.view(), to, site, guard).view());
      ++report.quantized;
    } else if (dtype && dtype_is_float(v.dtype) && v.dtype != *dtype) {
      emit(name, convert(v, *dtype, site, guard).view());
    } else {
      guard.stored(site, stored_float_type(v.dtype), v.bytes);
      emit(name, v);
    }
    ++report.tensors;
    progress.advance(name, v.bytes.size());
  };
  auto write_group = [&](size_t g, const std::function<void(const std::string&, const TensorView&)>& emit) {
    try {
      write_tensor(*kept[g], emit);
    } catch (const Error& error) {  // the codecs name the tensor; the user needs the file too
      if (!error.context().file.empty()) throw;
      ErrorContext c = error.context();
      c.file = kept[g]->shard->label();
      throw Error(error.problem(), c);
    }
  };

  nlohmann::ordered_json config = nlohmann::ordered_json::parse(ckpt.config().dump());
  config.erase("quantization_config");
  report.shards = write_checkpoint(input, output, groups, write_group, {{"format", "pt"}}, config, 5'000'000'000, report.bytes_out, overwrite);
  progress.end();
  report.nonfinite = guard.count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
