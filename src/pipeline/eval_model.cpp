#include "lowbit/pipeline/eval_model.h"

#include <fmt/format.h>

#include <random>

#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"
#ifdef LOWBIT_HAVE_CUDA
#include "lowbit/kernels/cuda/device.h"
#include "lowbit/model/cuda_runtime.h"
#endif

namespace lowbit {

Device resolve_device(const std::string& name) {
  if (name == "cpu") return Device::cpu;
#ifdef LOWBIT_HAVE_CUDA
  if (name == "cuda") return Device::cuda;
  if (name == "auto") return cuda::devices().empty() ? Device::cpu : Device::cuda;
#else
  if (name == "auto") return Device::cpu;
  if (name == "cuda") throw Error("--device cuda: this lowbit was built without CUDA (configure with -DLOWBIT_CUDA=ON)");
#endif
  throw Error(fmt::format("unknown device '{}'", name), {.expected = "cpu, cuda or auto"});
}

EvalModel::EvalModel(const std::filesystem::path& path, Device device, DType gpu_activations) : EvalModel(path, {}, device, gpu_activations) {}

EvalModel::EvalModel(const std::filesystem::path& path, const std::vector<ScaledAdapter>& adapters, Device device, DType gpu_activations) {
  load(path);
  apply(adapters);
  // The GPU takes the weights as they are now, adapted ones included.
  if (device == Device::cuda) {
#ifdef LOWBIT_HAVE_CUDA
    gpu_ = cuda::make_llama_runtime(*model_, {.activations = gpu_activations});
#else
    (void)gpu_activations;
    throw Error("--device cuda: this lowbit was built without CUDA (configure with -DLOWBIT_CUDA=ON)");
#endif
  }
}

void EvalModel::load(const std::filesystem::path& path) {
  if (path.extension() == ".gguf") {
    gguf_ = path;
    model_ = LlamaModel::load(path);
    return;
  }
  if (!std::filesystem::is_directory(path))
    throw Error("not a .gguf file or a model directory", {.file = path.string()});
  std::random_device rd;
  scratch_ = std::filesystem::temp_directory_path() / ("lowbit-eval-" + std::to_string(rd()));
  std::filesystem::create_directories(scratch_);
  std::filesystem::path hf = path;
  if (is_bnb_checkpoint(path)) {
    hf = scratch_ / "dequantized";
    dequantize_bnb(path, hf, DType::f32);
  }
  const auto gguf = scratch_ / "model.gguf";
  GgufQuantizeOptions options;
  options.selection.default_type = GgmlType::F32;
  quantize_to_gguf(*ModelSource::open(hf), gguf, options);
  gguf_ = gguf;
  model_ = LlamaModel::load(gguf);
}

void EvalModel::apply(const std::vector<ScaledAdapter>& adapters) {
  if (adapters.empty()) return;
  const auto merged = merge_lora({ModelSource::open(gguf_), false}, adapters, {.into = MergeInto::dequantized, .trained_on = std::nullopt});
  for (const auto& t : merged->tensors()) {
    if (!merged->raw(t).empty()) continue;  // untouched by every adapter
    adapted_.push_back(merged->load_f32(t));
    const auto& values = adapted_.back();
    model_->swap_weight(t.name, {GgmlType::F32, t.ne[1], t.ne[0], std::as_bytes(std::span(values))});
  }
}

EvalModel::~EvalModel() {
  gpu_.reset();
  model_.reset();
  if (!scratch_.empty()) {
    std::error_code ignored;
    std::filesystem::remove_all(scratch_, ignored);
  }
}

}  // namespace lowbit
