// Collecting GPTQ's Hessians: for each input of the model's linear layers, XᵀX over the rows of a
// calibration text (X: tokens × columns), added up window by window as the model runs, in float32.
// io/hessian.h stores them. The windows are those of collect_imatrix, so each Hessian's diagonal is
// the importance matrix's sum of squares of every weight reading that input.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/io/hessian.h"
#include "lowbit/model/runtime.h"

namespace lowbit {

struct HessianRun {
  std::vector<HessianSums> inputs;
  int64_t chunks = 0;
  uint64_t tokens = 0;  // rows of X every input saw
};

// The input a weight reads, named as in a Hessian file: attention's q, k and v read one
// ("blk.N.attn_qkv"), the feed-forward's gate and up another ("blk.N.ffn_gate_up"); any other weight
// reads its own ("blk.N.ffn_down" for "blk.N.ffn_down.weight", "output" for "output.weight").
std::string hessian_input_of(std::string_view weight);

// Every matrix product of the forward pass, the output layer included.
HessianRun collect_hessians(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                            Progress& progress = Progress::none());

}  // namespace lowbit
