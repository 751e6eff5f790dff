// Turns a CUDA status into a lowbit::Error that says which call failed and where.
#pragma once

#include <cuda_runtime.h>

#include <source_location>
#include <string>

#include "lowbit/core/error.h"

namespace lowbit::cuda {

inline void check(cudaError_t status, const std::source_location where = std::source_location::current()) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA error: ") + cudaGetErrorString(status) + " at " + where.file_name() + ":" +
                std::to_string(where.line()));
}

}  // namespace lowbit::cuda
