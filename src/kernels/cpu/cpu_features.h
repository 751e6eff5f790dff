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

// The target the codecs run: best_cpu_target(), unless set_active_cpu_target chose another. This is the
// process-wide switch (the tests compare the targets through it); a target the CPU lacks is
// refused with lowbit::Error.
CpuTarget active_cpu_target();
void set_active_cpu_target(CpuTarget target);

// set_active_cpu_target for a scope, restoring the previous target at its end.
class ScopedCpuTarget {
 public:
  explicit ScopedCpuTarget(CpuTarget target) : previous_(active_cpu_target()) { set_active_cpu_target(target); }
  ~ScopedCpuTarget() { set_active_cpu_target(previous_); }
  ScopedCpuTarget(const ScopedCpuTarget&) = delete;
  ScopedCpuTarget& operator=(const ScopedCpuTarget&) = delete;

 private:
  CpuTarget previous_;
};

}  // namespace lowbit::cpu
