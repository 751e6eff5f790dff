#include "lowbit/pipeline/eval_model.h"

#include "lowbit/core/error.h"
#include "lowbit/pipeline/bnb_jobs.h"
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

EvalModel::EvalModel(const std::filesystem::path& path) {
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

EvalModel::EvalModel(const std::filesystem::path& path, const std::vector<ScaledAdapter>& adapters) : EvalModel(path) {
  if (adapters.empty()) return;
  const auto merged = merge_lora({ModelSource::open(gguf_), false}, adapters, {.into = MergeInto::dequantized, .trained_on = std::nullopt});
  for (const auto& t : merged->tensors()) {
    if (!merged->raw(t).empty()) continue;  // untouched by every adapter
    adapted_.push_back(merged->load_f32(t));
    const auto& values = adapted_.back();
    model_->swap_weight(t.name, {GgmlType::F32, t.ne[1], t.ne[0], std::as_bytes(std::span(values))});
  }
}

// Members go in reverse order: the model unmaps the scratch GGUF before the scratch directory goes.
EvalModel::~EvalModel() = default;

}  // namespace lowbit
