// The one place lowbit asks the processor what it runs. The features are read once; every SIMD kernel
// is then picked by a CpuTarget (lowbit/formats/cpu_target.h) through cpu_kernels.h, never by a check of
// its own.
#pragma once

#include "lowbit/formats/cpu_target.h"

namespace lowbit::cpu {

// The features the kernels need, as the CPU reports them (all false off x86-64).
struct CpuFeatures {
  bool avx2 = false, avx512f = false, avx512bw = false, avx512vl = false, bmi2 = false;
};
const CpuFeatures& cpu_features();

}  // namespace lowbit::cpu
