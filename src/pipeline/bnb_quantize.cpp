// lowbit quantize --format nf4|fp4|int8: a plain checkpoint into bitsandbytes' serialized layout.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>

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
#include "lowbit/plan/llama_cpp_mix.h"

namespace lowbit {
namespace {

using bnb::module_of;

bool matches_any(const std::vector<std::string>& globs, const std::string& name) {
  for (const auto& g : globs)
    if (glob_match(g, name) || glob_match(g, module_of(name))) return true;
  return false;
}

// A Linear layer's weight in a transformers model: 2-D, float, "*.weight", and not an embedding,
// the output head, a norm or an MoE router (Qwen-MoE/Mixtral "*.gate", DeepSeek "*.gate" too).
bool is_linear_weight(const std::string& name, const TensorView& t) {
  if (t.shape.size() != 2 || !dtype_is_float(t.dtype) || !name.ends_with(".weight")) return false;
  for (std::string_view keep : {"embed", "lm_head", "norm", "router", "wte", "wpe"})
    if (name.find(keep) != std::string::npos) return false;
  return !name.ends_with(".gate.weight");
}

enum class Action { Copy, Quantize };

struct Planned {
  const Checkpoint::Entry* entry;
  Action action;
};

std::vector<std::string> output_names(const std::string& name, Action action, const BnbQuantizeOptions& o) {
  if (action == Action::Copy) return {name};
  if (o.format == "int8") return {name, module_of(name) + ".SCB", module_of(name) + ".weight_format"};
  std::vector<std::string> names{name, name + std::string(bnb::kAbsmax), name + std::string(bnb::kQuantMap)};
  if (o.double_quant) {
    names.push_back(name + std::string(bnb::kNestedAbsmax));
    names.push_back(name + std::string(bnb::kNestedQuantMap));
  }
  names.push_back(name + bnb::quant_state_key(o.format));
  return names;
}

uint64_t estimated_bytes(const TensorView& t, Action action, const BnbQuantizeOptions& o) {
  const uint64_t n = uint64_t(t.elements());
  if (action == Action::Copy) return t.bytes.size();
  if (o.format == "int8") return n + 4 * uint64_t(t.shape[0]) + 1;
  const uint64_t blocks = (n + uint64_t(o.blocksize) - 1) / uint64_t(o.blocksize);
  return (n + 1) / 2 + (o.double_quant ? blocks + 4 * (blocks / 256 + 1) + 1024 : 4 * blocks) + 64 + 256;
}

// Quantizes one weight and hands each output tensor to `emit`, in output_names' order.
void emit_quantized(const std::string& name, const TensorView& weight, const BnbQuantizeOptions& o,
                    const std::function<void(const std::string&, const TensorView&)>& emit) {
  auto bytes_of = [](const auto& vec) { return std::as_bytes(std::span(vec)); };
  if (o.format == "int8") {
    // bitsandbytes' Int8Params casts the weight to float16 before quantizing it.
    Tensor f16(DType::f16, weight.shape);
    if (weight.dtype == DType::f16) {
      std::copy(weight.bytes.begin(), weight.bytes.end(), f16.buffer.data());
    } else {
      std::vector<float> f32(size_t(weight.elements()));
      convert_to_f32(weight.dtype, weight.bytes.data(), f32.data(), f32.size());
      convert_from_f32(f32.data(), DType::f16, f16.buffer.data(), f32.size());
    }
    const auto q = bnb::quantize_int8_rowwise(f16.view(), 0.0f, name);
    const uint8_t row_format = 0;  // "row", the only layout bitsandbytes >= 0.45 loads
    emit(name, TensorView::make(DType::i8, weight.shape, bytes_of(q.cb)));
    emit(module_of(name) + ".SCB", TensorView::make(DType::f32, {q.rows}, bytes_of(q.scb)));
    emit(module_of(name) + ".weight_format", TensorView::make(DType::u8, {}, std::as_bytes(std::span(&row_format, 1))));
    return;
  }
  bnb::Bnb4bitOptions options{.quant_type = o.format == "nf4" ? bnb::QuantType::nf4 : bnb::QuantType::fp4,
                              .blocksize = o.blocksize, .double_quant = o.double_quant};
  const auto q = bnb::quantize_4bit(weight, options, name);
  const auto& s = q.state;
  emit(name, TensorView::make(DType::u8, {int64_t(q.packed.size()), 1}, bytes_of(q.packed)));
  if (s.nested) {
    emit(name + std::string(bnb::kAbsmax), TensorView::make(DType::u8, {int64_t(s.nested->codes.size())}, bytes_of(s.nested->codes)));
  } else {
    emit(name + std::string(bnb::kAbsmax), TensorView::make(DType::f32, {int64_t(s.absmax.size())}, bytes_of(s.absmax)));
  }
  emit(name + std::string(bnb::kQuantMap), TensorView::make(DType::f32, {16}, bytes_of(s.code)));
  if (s.nested) {
    emit(name + std::string(bnb::kNestedAbsmax),
         TensorView::make(DType::f32, {int64_t(s.nested->nested_absmax.size())}, bytes_of(s.nested->nested_absmax)));
    emit(name + std::string(bnb::kNestedQuantMap), TensorView::make(DType::f32, {256}, bytes_of(s.nested->code)));
  }
  const std::string state = bnb::pack_quant_state({.quant_type = o.format, .blocksize = int(o.blocksize), .dtype = weight.dtype,
                                                   .shape = weight.shape,
                                                   .nested_offset = s.nested ? std::optional<float>(s.nested->offset) : std::nullopt});
  emit(name + bnb::quant_state_key(o.format), TensorView::make(DType::u8, {int64_t(state.size())}, std::as_bytes(std::span(state))));
}

}  // namespace

JobReport quantize_to_bnb(const std::filesystem::path& input, const std::filesystem::path& output, const BnbQuantizeOptions& o,
                          Progress& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (o.format != "nf4" && o.format != "fp4" && o.format != "int8")
    throw Error(fmt::format("'{}' is not a bitsandbytes format", o.format), {.expected = "nf4, fp4 or int8"});
  if (o.format != "int8") bnb::check_blocksize_4bit(o.blocksize);
  const bool directory = std::filesystem::is_directory(input);
  if (is_bnb_checkpoint(input)) throw Error("the input is already bitsandbytes-quantized", {.file = input.string()});
  const Checkpoint ckpt(input);

  // Which tensors to quantize, and the modules left unquantized that transformers must not convert.
  std::vector<Planned> plan;
  std::vector<std::string> skipped_modules;
  JobReport report;
  for (const auto& e : ckpt.tensors()) {
    const auto& name = e.info->name;
    const TensorView view = e.shard->view(*e.info);
    const bool candidate = directory ? is_linear_weight(name, view) : (view.shape.size() == 2 && dtype_is_float(view.dtype));
    const bool quantize = candidate && !matches_any(o.skip, name);
    plan.push_back({&e, quantize ? Action::Quantize : Action::Copy});
    const bool linear_like = view.shape.size() == 2 && name.ends_with(".weight") && name.find("embed") == std::string::npos &&
                             name.find("norm") == std::string::npos;
    if (!quantize && linear_like) skipped_modules.push_back(module_of(name));
    report.bytes_in += view.bytes.size();
  }

  std::ranges::sort(skipped_modules);
  std::vector<TensorGroup> groups;
  uint64_t total_estimate = 0;
  for (const auto& p : plan) {
    const TensorView view = p.entry->shard->view(*p.entry->info);
    groups.push_back({output_names(p.entry->info->name, p.action, o), estimated_bytes(view, p.action, o)});
    total_estimate += groups.back().bytes;
  }
  progress.begin("quantize", int64_t(plan.size()), total_estimate);
  auto write_group = [&](size_t g, const std::function<void(const std::string&, const TensorView&)>& emit) {
    const auto& p = plan[g];
    const auto& name = p.entry->info->name;
    const TensorView view = p.entry->shard->view(*p.entry->info);
    if (p.action == Action::Copy) {
      emit(name, view);
    } else {
      emit_quantized(name, view, o, emit);
      ++report.quantized;
    }
    ++report.tensors;
    progress.advance(name, groups[g].bytes);
  };

  nlohmann::ordered_json config = nlohmann::ordered_json::parse(ckpt.config().dump());
  config["quantization_config"] = bnb::quantization_config({.format = o.format, .double_quant = o.double_quant,
                                                            .compute_dtype = ckpt.torch_dtype().value_or(DType::bf16),
                                                            .skip_modules = skipped_modules});
  report.shards = write_checkpoint(input, output, groups, write_group, {{"format", "pt"}, {"quantization", "bitsandbytes " + o.format}},
                                   config, o.max_shard_bytes, report.bytes_out);
  progress.end();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
