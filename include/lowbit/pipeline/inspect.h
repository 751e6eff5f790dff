// Honest accounting of a checkpoint: logical parameters vs stored elements vs bytes vs bits per weight.
//
// params           the logical element count of the weight (a 4096x4096 matrix has 16.8M, however stored)
// stored_elements  what numel() of the stored tensor reports: a bitsandbytes 4-bit weight is a uint8
//                  tensor of n/2 elements; a GGUF block-quantized tensor is read as its raw bytes (uint8)
// bytes            everything stored for the weight, its quantization state included
// bpw              8 * bytes / params
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "lowbit/core/tensor.h"

namespace lowbit {

struct TensorSummary {
  std::string name;
  std::string format;      // "bf16", "q4_K", "nf4", "int8" ...
  Shape shape;             // logical shape, outermost dimension first (PyTorch order, also for GGUF)
  int64_t params = 0;
  int64_t stored_elements = 0;
  uint64_t bytes = 0;
  double bpw() const { return params ? 8.0 * double(bytes) / double(params) : 0.0; }
};

struct ModelSummary {
  std::string path;
  std::string container;   // "safetensors", "gguf"
  std::vector<TensorSummary> tensors;
  int64_t params = 0;
  int64_t stored_elements = 0;
  uint64_t bytes = 0;
  double bpw() const { return params ? 8.0 * double(bytes) / double(params) : 0.0; }
};

// Summarises a .gguf file, a .safetensors file, or a (sharded) Hugging Face model directory.
// bitsandbytes companions (W.absmax, W.quant_map, W.nested_*, W.quant_state.*, SCB, weight_format)
// are counted in their weight's bytes, not as tensors of their own.
ModelSummary inspect(const std::filesystem::path& path);

}  // namespace lowbit
