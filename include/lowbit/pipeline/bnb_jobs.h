// bitsandbytes checkpoints from and to plain ones: `lowbit quantize --format nf4|fp4|int8` and
// `lowbit dequantize` of a bitsandbytes-layout model.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/core/progress.h"
#include "lowbit/formats/format.h"
#include "lowbit/core/nonfinite.h"
#include "lowbit/pipeline/plan.h"

namespace lowbit {

struct BnbQuantizeOptions {
  FormatSpec format;                    // nf4, fp4 (blocksize, double quant) or int8
  std::vector<std::string> skip;        // globs on module or tensor names kept unquantized
  // A plan (target bnb) from lowbit plan: each weight it names gets its own 4-bit format or float type,
  // every other tensor is copied; format and skip are then not used.
  const Plan* plan = nullptr;
  uint64_t max_shard_bytes = 5'000'000'000;  // as save_pretrained's default "5GB"
  NonfinitePolicy nonfinite;  // for tensors kept in float; NF4/FP4/int8 hold no NaN/Inf under any policy
  bool overwrite = false;  // replace an existing output directory (the CLI's --force)
  // A Hessian file (lowbit hessian): every int8 weight, and every nf4/fp4 weight whose blocks lie within its
  // rows, is written by GPTQ (lowbit/formats/gptq.h), the others rounded as usual; a weight the file does
  // not cover (by its llama.cpp name) or covers with other columns is refused before anything is written.
  std::string gptq;
  std::string gptq_label;  // what a .safetensors output's metadata says of the Hessians (default: the file's path)
};

struct JobReport {
  int64_t tensors = 0;
  int64_t quantized = 0;                // weights quantized (or dequantized)
  uint64_t bytes_in = 0, bytes_out = 0;
  int shards = 0;
  NonfiniteCount nonfinite;             // what --allow-nonfinite let through
  int64_t gptq = 0;                     // weights whose codes GPTQ chose
  double seconds = 0;
};

// A Hugging Face directory -> a directory transformers loads as a pre-quantized bitsandbytes model
// (safetensors shards + index, config.json with quantization_config, tokenizer files copied);
// or a bare .safetensors file -> a .safetensors file with every 2-D float tensor quantized.
// Linear weights are quantized; embeddings, lm_head, norms, biases and MoE routers keep their dtype.
// With a plan, transformers still loads the checkpoint with its one 4-bit quantizer: every weight's
// quant state records its own type, blocksize and double quantization, and the weights kept in 16 bits
// are listed in llm_int8_skip_modules.
JobReport quantize_to_bnb(const std::filesystem::path& input, const std::filesystem::path& output,
                          const BnbQuantizeOptions& options, Progress& progress = Progress::none());

// Any bitsandbytes-layout checkpoint (directory or file) -> plain safetensors: each quantized weight
// in its recorded dtype (int8: config.json's torch_dtype, else f16), or in `dtype` when given
// (then every float tensor is converted to it).
// Statistics (absmax, nested absmax, quant maps, SCB) must be finite and SCB within f16, as
// bitsandbytes computes it from float16 weights; `nonfinite` decides, as for quantize.
JobReport dequantize_bnb(const std::filesystem::path& input, const std::filesystem::path& output, std::optional<DType> dtype,
                         Progress& progress = Progress::none(), const NonfinitePolicy& nonfinite = {}, bool overwrite = false);

// True when `path` (a directory or .safetensors file) holds bitsandbytes-quantized weights.
bool is_bnb_checkpoint(const std::filesystem::path& path);

}  // namespace lowbit
