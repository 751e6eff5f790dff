// The bitsandbytes planner: for every Linear weight of a Hugging Face checkpoint, NF4 or FP4 at blocksize
// 64, 128 or 256, with or without double quantization, or the weight kept in its own dtype.
#include <fmt/format.h>

#include <vector>

#include "pipeline/quantize/bnb_linear.h"
#include "pipeline/quantize/gptq_tensors.h"
#include "lowbit/io/hf_names.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/gptq.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/pipeline/plan.h"
#include "pipeline/planning/plan_internal.h"

namespace lowbit {
namespace {

constexpr int64_t kBlocksizes[] = {64, 128, 256};

// The ggml type naming a plain float dtype (a kept tensor's format); integer tensors by their width.
GgmlType plain_type_of(DType dtype) {
  switch (dtype) {
    case DType::f32: return GgmlType::F32;
    case DType::f16: return GgmlType::F16;
    case DType::bf16: return GgmlType::BF16;
    case DType::f64: return GgmlType::F64;
    case DType::i16: return GgmlType::I16;
    case DType::i32: return GgmlType::I32;
    case DType::i64: return GgmlType::I64;
    default: return GgmlType::I8;  // i8, u8, bool: one byte each
  }
}

// Bytes of a 4-bit weight as a bitsandbytes checkpoint stores it (bnb_checkpoint.h): the packed codes,
// the absmax (float32 per block, or with double quant a byte per block plus float32 nested absmax per
// 256 blocks and the 256-entry nested code map), the 16-entry code map and the quant state's JSON.
uint64_t stored_bytes_4bit(const TensorView& weight, const FormatSpec& f, float nested_offset) {
  const uint64_t n = uint64_t(weight.elements()), blocks = (n + uint64_t(f.blocksize) - 1) / uint64_t(f.blocksize);
  const uint64_t nested_blocks = (blocks + uint64_t(bnb::kNestedBlocksize) - 1) / uint64_t(bnb::kNestedBlocksize);
  uint64_t bytes = (n + 1) / 2 + 4 * 16;
  bytes += f.double_quant ? blocks + 4 * nested_blocks + 4 * 256 : 4 * blocks;
  const std::string state = bnb::pack_quant_state({.quant_type = std::string(format_name(f.id)), .blocksize = int(f.blocksize),
                                                   .dtype = weight.dtype, .shape = weight.shape,
                                                   .nested_offset = f.double_quant ? std::optional<float>(nested_offset) : std::nullopt});
  return bytes + state.size();
}

// The importance weights of a Hugging Face weight's columns, found under its GGUF name (one expert's
// slice of a merged expert entry), or nullptr.
const float* importance_of(const ImportanceMatrix* imatrix, const std::optional<GgufPlace>& place, int64_t cols) {
  if (!imatrix || !place) return nullptr;
  const ImatrixEntry* entry = imatrix->find(place->name);
  if (!entry || entry->columns != cols) return nullptr;
  if (place->expert < 0) return entry->experts == 1 ? entry->weights.data() : nullptr;
  return place->expert < entry->experts ? entry->weights.data() + int64_t(place->expert) * cols : nullptr;
}

}  // namespace

Plan make_bnb_plan(const Checkpoint& checkpoint, const PlanOptions& options, Progress& progress) {
  if (options.probe) throw Error("the output KL-divergence probe plans GGUF outputs only", {.file = checkpoint.path().string()});
  Plan plan{.model = checkpoint.path().string(), .target = PlanTarget::bnb, .target_bpw = options.target_bpw,
            .loss_measure = {.imatrix_weighted = options.imatrix != nullptr,
                             .gptq = options.hessian ? options.hessian->label() : ""}};
  GptqFactorCache factors;  // with a Hessian file: candidates written as quantize --gptq writes them
  const bool directory = std::filesystem::is_directory(checkpoint.path());
  progress.begin("measure", int64_t(checkpoint.tensors().size()), 0);
  for (const auto& e : checkpoint.tensors()) {
    const std::string& name = e.info->name;
    const TensorView view = e.shard->view(*e.info);
    const auto role = role_of_tensor(name);
    PlannedTensor p{.name = name, .role = role.role, .layer = role.layer, .format = format_spec(plain_type_of(view.dtype)), .params = view.elements(),
                    .bytes = view.bytes.size()};
    if (is_bnb_linear_weight(name, view, directory) && view.elements() > 0) {
      const auto place = gguf_place_of(name);
      std::vector<std::string> names{name};
      if (place) names.push_back(place->name);
      const int64_t cols = view.shape[1];
      std::vector<float> values(size_t(view.elements()));
      convert_to_f32(view.dtype, view.bytes.data(), values.data(), values.size());
      const auto sample = planning::sample_rows(values, cols, importance_of(options.imatrix, place, cols), view.shape[0]);
      const TensorView sample_view = TensorView::make(DType::f32, {sample.rows(), cols}, std::as_bytes(std::span(sample.values)));
      // With GPTQ each candidate is written by it and measured on the layer's output, as on GGUF plans.
      const HessianFile::Input* input = nullptr;
      std::optional<planning::OutputError> output_error;
      if (options.hessian) {
        input = &hessian_input_of(*options.hessian, place ? place->name : "", cols, name, plan.model);
        output_error.emplace(sample, input->xtx);
      }
      auto consider = [&](const FormatSpec& format, uint64_t bytes, auto&& measure) {
        if (planning::rules_allow(options.rules, names, role.layer, format, 8.0 * double(bytes) / double(p.params)))
          p.options.push_back({format, bytes, measure()});
      };
      for (int64_t blocksize : kBlocksizes) {
        // Double quantization subtracts the mean of the whole tensor's block absmaxes, as quantizing it will.
        const float offset = bnb::mean_to_nearest_float(bnb::block_absmax(view, blocksize, name));
        for (auto quant_type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
          for (bool double_quant : {false, true}) {
            const FormatSpec f{.id = bnb::format_id(quant_type), .blocksize = blocksize, .double_quant = double_quant};
            consider(f, stored_bytes_4bit(view, f, offset), [&] {
              const bnb::Bnb4bitOptions o{.quant_type = quant_type, .blocksize = blocksize, .double_quant = double_quant,
                                          .nested_offset = offset};
              const auto q = input && cols % blocksize == 0 ? gptq_quantize_4bit(sample_view, o, factors(*input), name)
                                                            : bnb::quantize_4bit(sample_view, o, name);
              const Tensor back = bnb::dequantize_4bit(q.packed, q.state, DType::f32, name);
              const auto* data = reinterpret_cast<const float*>(back.buffer.data());
              const std::vector<float> reconstruction(data, data + sample.values.size());
              return output_error ? output_error->relative(reconstruction) : planning::relative_error(sample, reconstruction);
            });
          }
      }
      consider(p.format, p.bytes, [] { return 0.0; });  // kept in its own dtype: no loss
      if (p.options.empty()) throw Error("no candidate format is allowed for this tensor by the rules", {.file = plan.model, .tensor = name});
      p.quantized = true;
    }
    plan.tensors.push_back(std::move(p));
    progress.advance(name, 0);
  }
  progress.end();
  planning::allocate_plan(plan);
  return plan;
}

}  // namespace lowbit
