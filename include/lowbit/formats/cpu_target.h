// The CPU kernel sets a codec can run on. Every codec entry point takes a CpuTarget as its last argument
// (or in its options; best_cpu_target() when left out); all targets give the same bytes, only the speed
// differs. A codec with SIMD kernels refuses a target this CPU cannot run (lowbit::Error); one without
// runs its scalar code whatever the target.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace lowbit::cpu {

// The kernel sets, each running the kernels of the ones below it where it has none of its own:
//   scalar  the references in src/formats, on every CPU
//   avx2    AVX2: the iq searches and dequantizers written for CPUs without AVX-512
//   avx512  AVX-512 F, BW and VL with BMI2 (every CPU with AVX-512 BW has them all): every AVX-512 kernel
enum class CpuTarget : uint8_t { scalar, avx2, avx512 };

// How a dequantizer's vector kernels write its output: `cached` for one read back soon (a tile), `streaming`
// for part of an output far larger than the caches (dequantize_rows picks it for 16 MiB or more): non-temporal
// stores then skip reading each line before writing it, and leave the caches alone. The same bytes either way.
enum class OutputStores : uint8_t { cached, streaming };

std::string_view cpu_target_name(CpuTarget target);

bool cpu_supports(CpuTarget target);
CpuTarget best_cpu_target();                     // the fastest target this CPU supports
std::vector<CpuTarget> supported_cpu_targets();  // scalar first

}  // namespace lowbit::cpu
