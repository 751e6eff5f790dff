#include "lowbit/pipeline/eval_model.h"

#include <fmt/format.h>

#include <optional>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/pipeline/cuda_backend.h"

namespace lowbit {
namespace {

DType dtype_of(GgmlType type) {
  return type == GgmlType::F16 ? DType::f16 : type == GgmlType::BF16 ? DType::bf16 : DType::f32;
}

// The type the runtime reads a tensor in: vectors in float32, matrices as stored.
GgmlType runtime_type(const ModelSource::Tensor& t) { return t.ne.size() == 1 ? GgmlType::F32 : t.stored_type; }

// The runtime's weights over a converted model: bytes read in place where the source's are GGUF's
// already; otherwise converted into memory — permuted or dequantized matrices in the type they were
// stored in (exact: a permutation, or bitsandbytes' recorded dtype), vectors in float32 as the
// runtime reads them. A bitsandbytes 4-bit weight also keeps a view of its stored bytes, which the
// GPU runtime multiplies by instead (the CPU keeps dequantizing at load: its kernels take ggml types).
ModelWeights weights_of(std::shared_ptr<const ModelSource> source) {
  ModelWeights weights(source->label(), source->metadata());
  const auto& tensors = source->tensors();
  // Converted tensors are made on the thread pool, one tensor a task (an 8B bitsandbytes checkpoint's
  // dequantization, conversions and head permutations took 38 s on one core), then added in order.
  std::vector<std::optional<std::vector<std::byte>>> converted(tensors.size());
  parallel_for(int64_t(tensors.size()), 1, [&](int64_t first, int64_t last) {
    for (int64_t i = first; i < last; ++i) {
      const auto& t = tensors[size_t(i)];
      const GgmlType type = runtime_type(t);
      if (!source->raw(t).empty() && t.stored_type == type) continue;
      const std::vector<float> values = source->load_f32(t);
      std::vector<std::byte> bytes(values.size() * dtype_size(dtype_of(type)));
      convert_from_f32(values.data(), dtype_of(type), bytes.data(), values.size());
      converted[size_t(i)] = std::move(bytes);
    }
  });
  for (size_t i = 0; i < tensors.size(); ++i) {
    const auto& t = tensors[i];
    const GgmlType type = runtime_type(t);
    if (converted[i]) weights.add_owned(t.name, type, t.ne, std::move(*converted[i]), source->packed_4bit(t), source);
    else weights.add_view({t.name, type, t.ne, source->raw(t)}, source);
  }
  return weights;
}

}  // namespace

bool nvidia_driver_present() {
  std::error_code ec;
  return std::filesystem::exists("/dev/nvidiactl", ec) || std::filesystem::exists("/proc/driver/nvidia/version", ec);
}

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
  if (name == "cuda") {
    bool visible = false;
    try {
      cuda::runtime_backend();
      visible = !cuda::backend().devices().empty();
    } catch (const Error& e) {
      throw Error("--device cuda: " + e.problem());
    }
    if (!visible) throw Error("--device cuda: no CUDA device is visible");
    return Device::cuda;
  }
  if (name == "auto") {
    // The CPU when no NVIDIA driver is installed (then the CUDA module, about 200 MB of libraries, is
    // not even loaded), lowbit was built without CUDA, liblowbit_cuda.so cannot be loaded or no GPU
    // is visible.
    if (!nvidia_driver_present()) return Device::cpu;
    try {
      return cuda::backend().devices().empty() ? Device::cpu : Device::cuda;
    } catch (const Error&) {
      return Device::cpu;
    }
  }
  throw Error(fmt::format("unknown device '{}'", name), {.expected = "cpu, cuda or auto"});
}

EvalModel::EvalModel(const std::filesystem::path& path, Device device, DType gpu_activations) : EvalModel(path, {}, device, gpu_activations) {}

EvalModel::EvalModel(const std::filesystem::path& path, const std::vector<ScaledAdapter>& adapters, Device device, DType gpu_activations) {
  load(path);
  apply(adapters);
  // The GPU takes the weights as they are now, adapted ones included.
  if (device == Device::cuda) gpu_ = cuda::runtime_backend().make_llama_runtime(*model_, {.activations = gpu_activations});
}

void EvalModel::load(const std::filesystem::path& path) {
  path_ = path;
  if (path.extension() == ".gguf") {
    model_ = LlamaModel::load(path);
    return;
  }
  if (!std::filesystem::is_directory(path))
    throw Error("not a .gguf file or a model directory", {.file = path.string()});
  source_ = ModelSource::open(path);
  model_ = LlamaModel::load(weights_of(source_));
}

void EvalModel::apply(const std::vector<ScaledAdapter>& adapters) {
  if (adapters.empty()) return;
  const auto base = source_ ? source_ : std::shared_ptr<const ModelSource>(ModelSource::open(path_));
  const auto merged = merge_lora({base, false}, adapters, {.into = MergeInto::dequantized, .trained_on = std::nullopt});
  for (const auto& t : merged->tensors()) {
    if (!merged->raw(t).empty()) continue;  // untouched by every adapter
    adapted_.push_back(merged->load_f32(t));
    const auto& values = adapted_.back();
    model_->swap_weight(t.name, {GgmlType::F32, t.ne[1], t.ne[0], std::as_bytes(std::span(values))});
  }
}

// Members go in reverse order: the GPU copy goes first, then the model, then the source it reads.
EvalModel::~EvalModel() = default;

}  // namespace lowbit
