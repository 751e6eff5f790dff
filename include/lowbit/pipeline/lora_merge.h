// LoRA adapters merged into a model's weights, as a ModelSource: every writer that reads a
// ModelSource (GGUF quantization with any type, mix or plan; the Hugging Face export) writes the merged
// model in one streaming pass, a tensor at a time.
//
// Two merges (W the base weight, s·B·A each adapter's update times its --scale):
//   into original:     W' = W + Σ s·B·A           the 16-bit base as it is
//   into dequantized:  W' = dequant(Q(W)) + Σ s·B·A
// where Q is the 4-bit quantization the adapter was trained on (QLoRA: NF4, blocksize 64, double
// quant). An adapter trained on a 4-bit base learned to correct dequant(Q(W)), not W, so merging into
// the dequantized weights gives the model that was trained. A bitsandbytes 4-bit base, or a GGUF whose
// adapted weights are block-quantized, only has its dequantized weights: only `dequantized` applies.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "lowbit/io/lora_adapter.h"
#include "lowbit/io/model_source.h"
#include "lowbit/plan/tensor_format.h"

namespace lowbit {

enum class MergeInto { original, dequantized };

struct ScaledAdapter {
  std::shared_ptr<const LoraAdapter> adapter;
  double scale = 1.0;  // multiplies the adapter's own lora_alpha / r
};

// Opens adapters with one scale each (`scales` empty: all 1); throws when the counts differ or a
// scale is not finite.
std::vector<ScaledAdapter> open_adapters(const std::vector<std::string>& dirs, const std::vector<double>& scales);

struct LoraMergeOptions {
  MergeInto into = MergeInto::original;
  // With `dequantized` and a 16-bit base: the 4-bit format Q the adapter was trained against; none:
  // float weights are taken as they are (what a runtime holding the base computes with).
  std::optional<FormatSpec> trained_on = FormatSpec{.id = FormatId::nf4, .blocksize = 64, .double_quant = true};
};

struct MergeBase {
  std::shared_ptr<const ModelSource> source;
  bool dequantized = false;  // the source serves a 4-bit checkpoint's dequantized weights
};

// Opens a merge base: a .gguf, a Hugging Face directory, or a bitsandbytes checkpoint (its weights
// served dequantized to their recorded dtype, a tensor at a time).
MergeBase open_merge_base(const std::filesystem::path& path);

// The base with every adapter applied. Checks before any work that every adapted module exists in the
// base with the adapter's shape, and that `into` is possible for the base's storage; throws
// lowbit::Error naming the adapter file and tensor otherwise.
std::unique_ptr<ModelSource> merge_lora(const MergeBase& base, std::vector<ScaledAdapter> adapters, const LoraMergeOptions& options);

}  // namespace lowbit
