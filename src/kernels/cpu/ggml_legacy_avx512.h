// AVX-512 quantizers of the legacy types without importance weights (quantize_row_*_ref of ggml): one
// 32-value block is two vectors. They give the bytes of the scalar loops in ggml_legacy.cpp, which stay
// the reference and run when the CPU lacks AVX-512 or the vector kernels are switched off (tests run
// both). Private to src/formats.
#pragma once

#include <cstdint>

namespace lowbit::ggml {

// Quantizes `blocks` consecutive 32-value blocks of x into the type's blocks.
using LegacyBlocksFn = void (*)(const float* x, void* blocks_out, int64_t blocks);

struct LegacyVectorKernels {
  LegacyBlocksFn q4_0, q4_1, q5_0, q5_1, q8_0;
};

// The vector kernels, or null where the CPU lacks AVX-512 or ggml_search's vector kernels are disabled.
const LegacyVectorKernels* legacy_vector_kernels();

}  // namespace lowbit::ggml
