#include "lowbit/pipeline/eval_model.h"

#include <fmt/format.h>

#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/cuda_backend.h"
#include "lowbit/pipeline/quantize_gguf.h"

namespace lowbit {
namespace {

// An error about the scratch conversion is about the user's model: say so with the user's path.
[[noreturn]] void rethrow_for_input(const Error& e, const std::filesystem::path& scratch, const std::filesystem::path& input) {
  ErrorContext context = e.context();
  if (context.file.empty() || context.file.starts_with(scratch.string())) context.file = input.string();
  throw Error(e.problem(), context);
}

}  // namespace

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
    // The CPU when lowbit was built without CUDA, liblowbit_cuda.so cannot be loaded or no GPU is visible.
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
  if (path.extension() == ".gguf") {
    gguf_ = path;
    model_ = LlamaModel::load(path);
    return;
  }
  if (!std::filesystem::is_directory(path))
    throw Error("not a .gguf file or a model directory", {.file = path.string()});
  scratch_.emplace("eval");
  try {
    std::filesystem::path hf = path;
    if (is_bnb_checkpoint(path)) {
      hf = *scratch_ / "dequantized";
      dequantize_bnb(path, hf, DType::f32);
    }
    const auto gguf = *scratch_ / "model.gguf";
    GgufQuantizeOptions options;
    options.selection.default_type = GgmlType::F32;
    quantize_to_gguf(*ModelSource::open(hf), gguf, options);
    gguf_ = gguf;
    model_ = LlamaModel::load(gguf);
  } catch (const Error& e) {
    rethrow_for_input(e, scratch_->path(), path);
  }
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

// Members go in reverse order: the GPU copy goes first, and the model unmaps the scratch GGUF before
// the scratch directory goes.
EvalModel::~EvalModel() = default;

}  // namespace lowbit
