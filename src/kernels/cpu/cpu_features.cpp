#include "kernels/cpu/cpu_features.h"

namespace lowbit::cpu {
namespace {

CpuFeatures detect() {
  CpuFeatures f;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();  // the features may be read before the runtime's own initialisation has run
  f.avx2 = __builtin_cpu_supports("avx2");
  f.avx512f = __builtin_cpu_supports("avx512f");
  f.avx512bw = __builtin_cpu_supports("avx512bw");
  f.avx512vl = __builtin_cpu_supports("avx512vl");
  f.bmi2 = __builtin_cpu_supports("bmi2");
#endif
  return f;
}

}  // namespace

std::string_view cpu_target_name(CpuTarget target) {
  switch (target) {
    case CpuTarget::scalar: return "scalar";
    case CpuTarget::avx2: return "avx2";
    case CpuTarget::avx512: return "avx512";
  }
  return "unknown";
}

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

bool cpu_supports(CpuTarget target) {
  const CpuFeatures& f = cpu_features();
  switch (target) {
    case CpuTarget::scalar: return true;
    case CpuTarget::avx2: return f.avx2;
    case CpuTarget::avx512: return f.avx2 && f.avx512f && f.avx512bw && f.avx512vl && f.bmi2;
  }
  return false;
}

CpuTarget best_cpu_target() {
  static const CpuTarget best = cpu_supports(CpuTarget::avx512) ? CpuTarget::avx512
                                : cpu_supports(CpuTarget::avx2) ? CpuTarget::avx2
                                                                : CpuTarget::scalar;
  return best;
}

std::vector<CpuTarget> supported_cpu_targets() {
  std::vector<CpuTarget> targets;
  for (const CpuTarget t : {CpuTarget::scalar, CpuTarget::avx2, CpuTarget::avx512})
    if (cpu_supports(t)) targets.push_back(t);
  return targets;
}

}  // namespace lowbit::cpu
