// AVX2 dequantizers of the iq2 and iq1 types, whose scalar loops only matched ggml's speed: one 8-value
// grid point per instruction (the point's bytes widened to floats, times the scale, the sign bits
// applied as a mask), the same float operations per value as the scalar loops (so the same bits).
// Chosen at run time like the AVX-512 ones (ggml_dequant_avx512.h); the scalar loops stay the reference
// and run when the CPU lacks AVX2 or the vector kernels are switched off (tests run both). Private to
// src/formats.
#pragma once

#include "kernels/cpu/ggml_dequant_avx512.h"

namespace lowbit::ggml {

struct IqDequantVectorKernels {
  DequantizeBlocksFn iq2_xxs, iq2_xs, iq2_s, iq1_s, iq1_m;
};

// The vector kernels, or null where the CPU lacks AVX2 or ggml_search's vector kernels are disabled.
const IqDequantVectorKernels* iq_dequant_vector_kernels();

}  // namespace lowbit::ggml
