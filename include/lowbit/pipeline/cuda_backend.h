// The one place that opens the CUDA backend (lowbit/kernels/cuda/backend.h). Every GPU command goes
// through it, so a CPU command never loads the CUDA runtime, cuBLAS or cuBLASLt.
#pragma once

#include <string>

#include "lowbit/kernels/cuda/backend.h"

namespace lowbit::cuda {

// Loads liblowbit_cuda.so on first use. Throws lowbit::Error saying why when lowbit was built
// without CUDA or the module cannot be loaded; a machine without a GPU still gets a backend, whose
// devices() is empty.
const Backend& backend();

}  // namespace lowbit::cuda
