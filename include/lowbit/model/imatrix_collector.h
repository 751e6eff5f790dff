// Collecting an importance matrix the way llama.cpp's llama-imatrix does: run the model over a text
// in windows of n_ctx tokens (each window's first token replaced by BOS) and, for every matrix in the
// layers, add up the square of each input column over every token row.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/model/runtime.h"

namespace lowbit {

struct ImatrixRun {
  std::vector<ImatrixSums> entries;
  int64_t chunks = 0;
};

// Like llama-imatrix, only the weights of the layers ("blk.*") are collected: the output layer is not.
ImatrixRun collect_imatrix(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                           Progress& progress = Progress::none());

}  // namespace lowbit
