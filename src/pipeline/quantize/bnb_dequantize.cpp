// lowbit dequantize of a bitsandbytes checkpoint: each quantized weight back to its recorded dtype.
#include <fmt/format.h>

#include <chrono>
#include <cstring>
#include <unordered_map>

#include "lowbit/core/error.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/io/value_guard.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "pipeline/outputs/checkpoint_output.h"

namespace lowbit {
namespace {

GgmlType stored_float_type(DType dtype) {
  return dtype == DType::f16 ? GgmlType::F16 : dtype == DType::bf16 ? GgmlType::BF16 : dtype == DType::f32 ? GgmlType::F32 : GgmlType::I8;
}

}  // namespace

bool is_bnb_checkpoint(const std::filesystem::path& path) { return BnbReader::holds_quantized_weights(Checkpoint(path)); }

JobReport dequantize_bnb(const std::filesystem::path& input, const std::filesystem::path& output, std::optional<DType> dtype,
                         Progress& progress, const NonfinitePolicy& nonfinite, bool overwrite) {
  const auto start = std::chrono::steady_clock::now();
  if (dtype && !dtype_is_float(*dtype)) throw Error(fmt::format("--dtype {} is not a float type", dtype_name(*dtype)));
  const Checkpoint ckpt(input);
  const BnbReader reader(ckpt);

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
    if (reader.quantized(name)) {
      emit(name, reader.dequantize(name, dtype, guard).view());
      ++report.quantized;
    } else if (dtype && dtype_is_float(v.dtype) && v.dtype != *dtype) {
      emit(name, convert_checked(v, *dtype, site, guard).view());
    } else {
      guard.stored(site, stored_float_type(v.dtype), v.bytes);
      emit(name, v);
    }
    ++report.tensors;
    progress.advance(name, v.bytes.size());
  };
  auto write_group = [&](size_t g, const std::function<void(const std::string&, const TensorView&)>& emit) { write_tensor(*kept[g], emit); };

  nlohmann::ordered_json config = nlohmann::ordered_json::parse(ckpt.config().dump());
  config.erase("quantization_config");
  report.shards = write_checkpoint(input, output, groups, write_group, {{"format", "pt"}}, config, 5'000'000'000, report.bytes_out, overwrite);
  progress.end();
  report.nonfinite = guard.count();
  report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return report;
}

}  // namespace lowbit
