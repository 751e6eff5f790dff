// The one place that opens the CUDA backend: liblowbit_cuda.so's kernels (lowbit/kernels/cuda/backend.h)
// and model runtime (lowbit/model/cuda_runtime.h). Every GPU command goes through it, so a CPU command
// never loads the CUDA runtime, cuBLAS or cuBLASLt.
#pragma once

#include <string>

#include "lowbit/kernels/cuda/backend.h"
#include "lowbit/model/cuda_runtime.h"

namespace lowbit::cuda {

// Load liblowbit_cuda.so on first use. Throw lowbit::Error saying why when lowbit was built without
// CUDA or the module cannot be loaded; a machine without a GPU still gets a backend, whose devices()
// is empty (the runtime then refuses to start, saying so).
const Backend& backend();
const RuntimeBackend& runtime_backend();

}  // namespace lowbit::cuda
