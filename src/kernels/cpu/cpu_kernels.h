// The CPU backend's dispatch: for each CpuTarget, one table of every SIMD kernel the codecs in src/formats
// can hand work to. A null entry means the scalar reference runs. This is the one header of the backend
// that src/formats includes; each kernel gives the reference's bytes, so the target only changes the speed.
#pragma once

#include <cstddef>
#include <cstdint>

#include "formats/bnb_4bit_blocks.h"
#include "formats/bnb_int8_rows.h"
#include "formats/ggml_iq1_search.h"
#include "formats/ggml_iq2_search.h"
#include "formats/ggml_iq3_search.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_features.h"

namespace lowbit::ggml {

// Dequantizes `blocks` consecutive blocks of the type into y, with the stores `stores` asks for.
using DequantizeBlocksFn = void (*)(const void* blocks_in, float* y, int64_t blocks, cpu::OutputStores stores);
// Quantizes `blocks` consecutive 32-value blocks of x into the type's blocks (no importance weights).
using LegacyBlocksFn = void (*)(const float* x, void* blocks_out, int64_t blocks);

// The block loops of the ggml codecs (ggml_legacy.cpp, ggml_kquants.cpp, the i-quants\', ternary, fp4 and
// q1/q2 files) that a kernel runs faster: the same float operations per value, so the same bits.
struct DequantVectorKernels {
  DequantizeBlocksFn q4_0, q4_1, q5_0, q5_1, q8_0, q2_K, q4_K, q5_K, q3_K, q6_K;
};
struct LegacyVectorKernels {
  LegacyBlocksFn q4_0, q4_1, q5_0, q5_1, q8_0;
};
struct IqDequantVectorKernels {
  DequantizeBlocksFn iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq1_s, iq1_m, iq4_nl, iq4_xs;
};
struct TernaryFp4DequantVectorKernels {
  DequantizeBlocksFn tq1_0, tq2_0, q1_0, q2_0, mxfp4, nvfp4;
};

}  // namespace lowbit::ggml

namespace lowbit::cpu {

struct CpuKernels {
  // ggml's scale searches (ggml_kquants_search.h): one candidate per lane, one group per lane.
  const ggml_search::BatchKernels* search_batches = nullptr;
  const ggml_search::LaneKernels* search_lanes = nullptr;
  // ggml's block loops.
  const ggml::LegacyVectorKernels* legacy_quantize = nullptr;
  const ggml::DequantVectorKernels* dequantize = nullptr;
  const ggml::IqDequantVectorKernels* iq_dequantize = nullptr;
  const ggml::TernaryFp4DequantVectorKernels* ternary_fp4_dequantize = nullptr;
  // The iq quantizers' grid searches (null iq2_search: the portable kernels of ggml_iq2_search.cpp).
  const ggml::iq2::SearchKernels* iq2_search = nullptr;
  ggml::iq1::SplitSearchFn iq1_split = nullptr;
  ggml::iq1::NearestCandidateFn iq1_nearest = nullptr;
  ggml::iq1::AscendingOrderFn iq1_ascending = nullptr;
  ggml::iq3::AllTrialsFn iq3_all_trials = nullptr;
  ggml::iq3::SnapUnitsFn iq3_snap_units = nullptr;
  // bitsandbytes (bnb_4bit_blocks.h, bnb_int8_rows.h).
  bnb::detail::QuantizeBlocksFn bnb_quantize_4bit = nullptr;
  bnb::detail::QuantizeDynamic8bitFn bnb_quantize_dynamic_8bit = nullptr;
  bnb::detail::DequantizeBlocksFn bnb_dequantize_4bit = nullptr;
  bnb::detail::NestedScalesFn bnb_nested_scales = nullptr;
  bnb::detail::QuantizeInt8RowsFn bnb_quantize_int8_rows = nullptr;
  bnb::detail::DequantizeInt8RowsFn bnb_dequantize_int8_rows = nullptr;
};

// The kernels of `target` (the table for the scalar target is empty). Throws lowbit::Error for a target
// this CPU cannot run (cpu_supports): every codec with kernels picks them here, so each refuses it.
const CpuKernels& cpu_kernels(CpuTarget target);

// Kernels given an output at least this large write it with non-temporal stores: 16x a core's L2 and half
// the L3 (32 MiB on the EPYC VMs), its first lines are evicted before the last are written, so no reader
// would find them in cache. glibc's memcpy streams by the same rule, past 3/4 of what it counts as the
// shared cache (192 MiB on these VMs). A model's tiles (src/model/matmul.cpp: 16 rows, under 1 MiB) stay
// far below, so the matmul reads them back from cache.
inline constexpr size_t kStreamingBytes = size_t(16) << 20;

}  // namespace lowbit::cpu
