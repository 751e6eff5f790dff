// AVX-512 dequantizers of the ggml types whose scalar loops (ggml_legacy.cpp, ggml_kquants.cpp) only
// matched ggml's speed: 16 values per instruction, the same float operations per value (so the same
// bits). Chosen at run time; the scalar loops stay the reference and run when the CPU lacks AVX-512 or
// the vector kernels are switched off (tests run both). Private to src/formats.
#pragma once

#include <cstdint>

namespace lowbit::ggml {

// Dequantizes `blocks` consecutive blocks of the type into y.
using DequantizeBlocksFn = void (*)(const void* blocks_in, float* y, int64_t blocks);

struct DequantVectorKernels {
  DequantizeBlocksFn q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q4_K, q5_K;
};

// The vector kernels, or null where the CPU lacks AVX-512 or ggml_search's vector kernels are disabled.
const DequantVectorKernels* dequant_vector_kernels();

}  // namespace lowbit::ggml
