// lowbit quantize --format nf4|fp4|int8: a plain checkpoint into bitsandbytes' serialized layout.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>

#include "pipeline/quantize/bnb_linear.h"
#include "pipeline/quantize/gptq_tensors.h"
#include "lowbit/io/hf_names.h"
#include "pipeline/outputs/checkpoint_output.h"
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
#include "lowbit/io/value_guard.h"

namespace lowbit {
namespace {

using bnb::module_of;

bool matches_any(const std::vector<std::string>& globs, const std::string& name) {
  for (const auto& g : globs)
    if (glob_match(g, name) || glob_match(g, module_of(name))) return true;
  return false;
}

// What happens to one tensor of the input.
struct Step {
  enum class Kind { copy, convert, four_bit, int8 };
  const Checkpoint::Entry* entry;
  Kind kind = Kind::copy;
  FormatSpec four_bit;      // Kind::four_bit: nf4 or fp4
  DType dtype = DType::f32; // Kind::convert: the float type the tensor is written in
  const HessianFile::Input* gptq = nullptr;  // Kind::four_bit or int8 written by GPTQ with this input's Hessian
};

// The Hessian input of every step GPTQ can write (int8 rows; 4-bit weights whose blocks lie within rows);
// throws for a quantized weight the file does not cover or covers with other columns.
void bind_hessians(std::vector<Step>& steps, const HessianFile& hessian, const std::string& model) {
  for (Step& step : steps) {
    if (step.kind != Step::Kind::four_bit && step.kind != Step::Kind::int8) continue;
    const std::string& name = step.entry->info->name;
    const int64_t cols = step.entry->info->shape.back();
    const HessianFile::Input& input = hessian_input_of(hessian, gguf_name_of(name).value_or(""), cols, name, model);
    if (step.kind == Step::Kind::four_bit && cols % step.four_bit.blocksize != 0) continue;  // blocks across rows: rounded as usual
    step.gptq = &input;
  }
}

std::vector<std::string> output_names(const std::string& name, const Step& step) {
  switch (step.kind) {
    case Step::Kind::copy:
    case Step::Kind::convert: return {name};
    case Step::Kind::int8: return {name, module_of(name) + ".SCB", module_of(name) + ".weight_format"};
    case Step::Kind::four_bit: break;
  }
  std::vector<std::string> names{name, name + std::string(bnb::kAbsmax), name + std::string(bnb::kQuantMap)};
  if (step.four_bit.double_quant) {
    names.push_back(name + std::string(bnb::kNestedAbsmax));
    names.push_back(name + std::string(bnb::kNestedQuantMap));
  }
  names.push_back(name + bnb::quant_state_key(format_name(step.four_bit.id)));
  return names;
}

uint64_t estimated_bytes(const TensorView& t, const Step& step) {
  const uint64_t n = uint64_t(t.elements());
  switch (step.kind) {
    case Step::Kind::copy: return t.bytes.size();
    case Step::Kind::convert: return n * dtype_size(step.dtype);
    case Step::Kind::int8: return n + 4 * uint64_t(t.shape[0]) + 1;
    case Step::Kind::four_bit: break;
  }
  const uint64_t blocks = (n + uint64_t(step.four_bit.blocksize) - 1) / uint64_t(step.four_bit.blocksize);
  return (n + 1) / 2 + (step.four_bit.double_quant ? blocks + 4 * (blocks / 256 + 1) + 1024 : 4 * blocks) + 64 + 256;
}

// The codecs name the tensor and the element; the file is the pipeline's to add.
template <class F>
auto with_file(const std::string& file, F&& f) {
  try {
    return f();
  } catch (const Error& e) {
    if (!e.context().file.empty()) throw;
    ErrorContext context = e.context();
    context.file = file;
    throw Error(e.problem(), context);
  }
}

GgmlType ggml_float_type(DType dtype) {
  return dtype == DType::f16 ? GgmlType::F16 : dtype == DType::bf16 ? GgmlType::BF16 : dtype == DType::f32 ? GgmlType::F32 : GgmlType::I8;
}

// Quantizes (or converts) one weight of `file` and hands each output tensor to `emit`, in
// output_names' order; its values pass `guard` first (the 4-bit codec checks its own, fused).
void emit_step(const std::string& file, const std::string& name, const TensorView& weight, const Step& step, ValueGuard& guard,
               GptqFactorCache& factors, const std::function<void(const std::string&, const TensorView&)>& emit) {
  auto bytes_of = [](const auto& vec) { return std::as_bytes(std::span(vec)); };
  const ValueSite site{file, name, weight.shape.size() >= 2 ? weight.shape.back() : 0};
  if (step.kind == Step::Kind::copy) {
    guard.stored(site, ggml_float_type(weight.dtype), weight.bytes);  // integer tensors hold no misfit
    emit(name, weight);
    return;
  }
  if (step.kind == Step::Kind::convert || step.kind == Step::Kind::int8) {
    // bitsandbytes' Int8Params casts the weight to float16 before quantizing it: it must fit f16.
    const DType dtype = step.kind == Step::Kind::int8 ? DType::f16 : step.dtype;
    Tensor converted(dtype, weight.shape);
    if (weight.dtype == dtype && step.kind == Step::Kind::convert) {
      guard.stored(site, ggml_float_type(dtype), weight.bytes);
      std::copy(weight.bytes.begin(), weight.bytes.end(), converted.buffer.data());
    } else {
      std::vector<float> f32(size_t(weight.elements()));
      convert_to_f32(weight.dtype, weight.bytes.data(), f32.data(), f32.size());
      const bool int8 = step.kind == Step::Kind::int8;
      guard.values(site, f32.data(), int64_t(f32.size()), value_range_of(dtype),
                   int8 ? "int8 (bitsandbytes quantizes the weight cast to float16)" : dtype_name(dtype), !int8);
      convert_from_f32(f32.data(), dtype, converted.buffer.data(), f32.size());
    }
    if (step.kind == Step::Kind::convert) {
      emit(name, converted.view());
      return;
    }
    const auto q = step.gptq ? gptq_quantize_int8_rows(converted.view(), factors(*step.gptq), name)
                             : bnb::quantize_int8_rowwise(converted.view(), 0.0f, name);
    const uint8_t row_format = 0;  // "row", the only layout bitsandbytes >= 0.45 loads
    emit(name, TensorView::make(DType::i8, weight.shape, bytes_of(q.cb)));
    emit(module_of(name) + ".SCB", TensorView::make(DType::f32, {q.rows}, bytes_of(q.scb)));
    emit(module_of(name) + ".weight_format", TensorView::make(DType::u8, {}, std::as_bytes(std::span(&row_format, 1))));
    return;
  }
  const FormatSpec& f = step.four_bit;
  const auto q = with_file(file, [&] {
    const bnb::Bnb4bitOptions options{.quant_type = *bnb::quant_type_of(f.id), .blocksize = f.blocksize, .double_quant = f.double_quant};
    return step.gptq ? gptq_quantize_4bit(weight, options, factors(*step.gptq), name) : bnb::quantize_4bit(weight, options, name);
  });
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
  const std::string quant_type(format_name(f.id));
  const std::string state = bnb::pack_quant_state({.quant_type = quant_type, .blocksize = int(f.blocksize), .dtype = weight.dtype,
                                                   .shape = weight.shape,
                                                   .nested_offset = s.nested ? std::optional<float>(s.nested->offset) : std::nullopt});
  emit(name + bnb::quant_state_key(quant_type), TensorView::make(DType::u8, {int64_t(state.size())}, std::as_bytes(std::span(state))));
}

DType float_dtype_of(GgmlType type) {
  switch (type) {
    case GgmlType::F16: return DType::f16;
    case GgmlType::BF16: return DType::bf16;
    default: return DType::f32;
  }
}

// The step of every tensor named in a bitsandbytes plan; throws when the plan does not fit the checkpoint.
std::map<std::string, Step, std::less<>> planned_steps(const Plan& plan, const Checkpoint& ckpt, bool directory) {
  if (plan.target != PlanTarget::bnb) throw Error("the plan is for a GGUF output, not a bitsandbytes checkpoint", {.file = plan.model});
  std::map<std::string, Step, std::less<>> steps;
  for (const auto& t : plan.tensors) {
    if (!t.quantized) continue;
    const auto* entry = ckpt.find(t.name);
    if (!entry) throw Error("the plan names a tensor the checkpoint does not have", {.file = ckpt.path().string(), .tensor = t.name});
    Step step{.entry = entry};
    if (is_bnb_4bit(t.format)) {
      if (!is_bnb_linear_weight(t.name, entry->shard->view(*entry->info), directory))
        throw Error("the plan quantizes a tensor that is not a Linear weight", {.file = ckpt.path().string(), .tensor = t.name});
      bnb::check_blocksize_4bit(t.format.blocksize, t.name);
      step.kind = Step::Kind::four_bit;
      step.four_bit = t.format;
    } else {
      step.kind = Step::Kind::convert;
      step.dtype = float_dtype_of(*format_info(t.format.id).ggml);
      if (step.dtype == entry->info->dtype) step.kind = Step::Kind::copy;
    }
    steps[t.name] = step;
  }
  return steps;
}

// quantization_config's 4-bit type and double quant for a planned checkpoint: those of the most
// parameters (transformers builds its Linear4bit layers with them; each weight's own quant state,
// which it loads, overrides them).
std::pair<FormatId, bool> prevailing_4bit(const std::vector<Step>& steps) {
  std::map<std::pair<FormatId, bool>, int64_t> params;
  for (const auto& s : steps)
    if (s.kind == Step::Kind::four_bit)
      params[{s.four_bit.id, s.four_bit.double_quant}] += s.entry->shard->view(*s.entry->info).elements();
  if (params.empty()) return {FormatId::nf4, false};
  return std::ranges::max_element(params, {}, [](const auto& p) { return p.second; })->first;
}

}  // namespace

JobReport quantize_to_bnb(const std::filesystem::path& input, const std::filesystem::path& output, const BnbQuantizeOptions& o,
                          Progress& progress) {
  const auto start = std::chrono::steady_clock::now();
  if (!o.plan) {
    if (!is_bnb_format(o.format.id))
      throw Error(fmt::format("'{}' is not a bitsandbytes format", format_name(o.format.id)), {.expected = "nf4, fp4 or int8"});
    if (o.format.id != FormatId::int8) bnb::check_blocksize_4bit(o.format.blocksize);
  }
  const bool directory = std::filesystem::is_directory(input);
  if (!directory && input.extension() != ".safetensors")
    throw Error("a bitsandbytes checkpoint is made from a Hugging Face directory or a .safetensors file", {.file = input.string()});
  if (is_bnb_checkpoint(input)) throw Error("the input is already bitsandbytes-quantized", {.file = input.string()});
  const Checkpoint ckpt(input);
  const auto planned = o.plan ? planned_steps(*o.plan, ckpt, directory) : std::map<std::string, Step, std::less<>>{};

  // What to do with each tensor, and the modules left unquantized that transformers must not convert.
  std::vector<Step> steps;
  std::vector<std::string> skipped_modules;
  JobReport report;
  for (const auto& e : ckpt.tensors()) {
    const auto& name = e.info->name;
    const TensorView view = e.shard->view(*e.info);
    Step step{.entry = &e};
    if (o.plan) {
      if (const auto it = planned.find(name); it != planned.end()) step = it->second;
    } else if (is_bnb_linear_weight(name, view, directory) && !matches_any(o.skip, name)) {
      step.kind = o.format.id == FormatId::int8 ? Step::Kind::int8 : Step::Kind::four_bit;
      if (step.kind == Step::Kind::four_bit) step.four_bit = o.format;
    }
    const bool quantized = step.kind == Step::Kind::four_bit || step.kind == Step::Kind::int8;
    const bool linear_like = view.shape.size() == 2 && name.ends_with(".weight") && name.find("embed") == std::string::npos &&
                             name.find("norm") == std::string::npos;
    if (!quantized && linear_like) skipped_modules.push_back(module_of(name));
    steps.push_back(step);
    report.bytes_in += view.bytes.size();
  }

  std::ranges::sort(skipped_modules);
  std::vector<TensorGroup> groups;
  uint64_t total_estimate = 0;
  for (const auto& step : steps) {
    const TensorView view = step.entry->shard->view(*step.entry->info);
    groups.push_back({output_names(step.entry->info->name, step), estimated_bytes(view, step)});
    total_estimate += groups.back().bytes;
  }
  // The named Hessian file, else the one a plan made with GPTQ records.
  const std::string hessian_path = !o.gptq.empty() ? o.gptq : o.plan ? o.plan->loss_measure.gptq : "";
  std::optional<HessianFile> hessian;
  if (!hessian_path.empty()) {
    hessian.emplace(hessian_path);
    bind_hessians(steps, *hessian, input.string());
  }
  GptqFactorCache factors;
  ValueGuard guard(o.nonfinite);
  progress.begin("quantize", int64_t(steps.size()), total_estimate);
  auto write_group = [&](size_t g, const std::function<void(const std::string&, const TensorView&)>& emit) {
    const auto& step = steps[g];
    const auto& name = step.entry->info->name;
    emit_step(step.entry->shard->label(), name, step.entry->shard->view(*step.entry->info), step, guard, factors, emit);
    if (step.kind == Step::Kind::four_bit || step.kind == Step::Kind::int8) ++report.quantized;
    if (step.gptq) ++report.gptq;
    ++report.tensors;
    progress.advance(name, groups[g].bytes);
  };

  const auto [format, double_quant] = o.plan ? prevailing_4bit(steps) : std::pair{o.format.id, o.format.double_quant};
  nlohmann::ordered_json config = nlohmann::ordered_json::parse(ckpt.config().dump());
  config["quantization_config"] = bnb::quantization_config({.format = format, .double_quant = double_quant,
                                                            .compute_dtype = ckpt.torch_dtype().value_or(DType::bf16),
                                                            .skip_modules = skipped_modules});
  std::string description = o.plan ? "bitsandbytes 4-bit, planned per tensor" : "bitsandbytes " + std::string(format_name(o.format.id));
  // A .safetensors output's metadata says so (a directory's shards keep save_pretrained's {"format": "pt"}).
  if (hessian) description += ", codes chosen by GPTQ (Hessians: " + (o.gptq_label.empty() ? hessian_path : o.gptq_label) + ")";
  report.shards = write_checkpoint(input, output, groups, write_group, {{"format", "pt"}, {"quantization", description}}, config,
                                   o.max_shard_bytes, report.bytes_out, o.overwrite);
  progress.end();
  report.nonfinite = guard.count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
