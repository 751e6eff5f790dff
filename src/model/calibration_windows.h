// The calibration pass shared by the importance-matrix and Hessian collectors: the model run over a
// text in windows of n_ctx tokens (each window's first token replaced by BOS, as llama-imatrix does),
// with an observer that sees the input of every matrix product, in order.
#pragma once

#include <cstdint>
#include <optional>
#include <span>

#include "lowbit/core/progress.h"
#include "lowbit/model/runtime.h"

namespace lowbit {

// Returns the number of whole windows observed; throws lowbit::Error for a context under 16 tokens
// (llama.cpp ignores such batches) or a text shorter than one window.
int64_t observe_windows(const LlamaRuntime& runtime, std::span<const int32_t> tokens, int n_ctx, std::optional<int32_t> bos,
                        const ActivationObserver& observe, Progress& progress, const char* stage);

}  // namespace lowbit
