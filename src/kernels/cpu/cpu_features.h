// The CPU backends and the one place lowbit asks the processor what it runs. The features are read once;
// every SIMD kernel is then picked by a CpuTarget through cpu_kernels.h, never by a check of its own.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace lowbit::cpu {

// The kernel sets, each running the kernels of the ones below it where it has none of its own:
//   scalar  the references in src/formats, on every CPU
//   avx2    AVX2: the iq searches and dequantizers written for CPUs without AVX-512
//   avx512  AVX-512 F, BW and VL with BMI2 (every CPU with AVX-512 BW has them all): every AVX-512 kernel
// All give the same bytes; only the speed differs.
enum class CpuTarget : uint8_t { scalar, avx2, avx512 };

std::string_view cpu_target_name(CpuTarget target);

// The features the kernels need, as the CPU reports them (all false off x86-64).
struct CpuFeatures {
  bool avx2 = false, avx512f = false, avx512bw = false, avx512vl = false, bmi2 = false;
};
const CpuFeatures& cpu_features();

bool cpu_supports(CpuTarget target);
CpuTarget best_cpu_target();
std::vector<CpuTarget> supported_cpu_targets();  // scalar first

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
