#include "kernels/cpu/cpu_kernels.h"

#include <array>
#include <string>

#include "kernels/cpu/simd_kernels.h"
#include "lowbit/core/error.h"

namespace lowbit::cpu {
namespace {

// The AVX-512 dequantizers, with the AVX2 ones where it has none (q3_K, q6_K).
const ggml::DequantVectorKernels* avx512_dequant_with_avx2() {
  static const ggml::DequantVectorKernels merged = [] {
    ggml::DequantVectorKernels k = *ggml::avx512_dequant_kernels();
    const ggml::DequantVectorKernels& avx2 = *ggml::avx2_dequant_kernels();
    if (!k.q3_K) k.q3_K = avx2.q3_K;
    if (!k.q6_K) k.q6_K = avx2.q6_K;
    return k;
  }();
  return &merged;
}

// A target runs its own kernels and, for a family with none of its own, those of the targets below it.
CpuKernels kernels_for(CpuTarget target) {
  CpuKernels k;
  if (target >= CpuTarget::avx2) {
    k.dequantize = ggml::avx2_dequant_kernels();
    k.iq_dequantize = ggml::avx2_iq_dequant_kernels();
    k.ternary_fp4_dequantize = ggml::avx2_ternary_fp4_dequant_kernels();
    k.bnb_dequantize_4bit = bnb::detail::avx2_dequantize_4bit_blocks();
    k.iq2_search = ggml::iq2::avx2_search_kernels();
    k.iq1_split = ggml::iq1::avx2_split_search();
    k.iq1_nearest = ggml::iq1::avx2_nearest_candidate();
    k.iq1_ascending = ggml::iq1::avx2_ascending_order();
    k.iq3_all_trials = ggml::iq3::avx2_all_trials();
    k.iq3_snap_units = ggml::iq3::avx2_snap_units();
  }
  if (target >= CpuTarget::avx512) {
    k.search_batches = ggml_search::avx512_batch_kernels();
    k.search_lanes = ggml_search::avx512_lane_kernels();
    k.legacy_quantize = ggml::avx512_legacy_kernels();
    k.dequantize = ggml::avx512_dequant_kernels() ? avx512_dequant_with_avx2() : nullptr;
    k.iq2_search = ggml::iq2::avx512_search_kernels();
    k.iq1_split = ggml::iq1::avx512_split_search();
    k.iq1_nearest = ggml::iq1::avx512_nearest_candidate();
    k.iq3_all_trials = ggml::iq3::avx512_all_trials();
    k.bnb_quantize_4bit = bnb::detail::avx512_quantize_4bit_blocks();
    k.bnb_quantize_dynamic_8bit = bnb::detail::avx512_quantize_dynamic_8bit();
    k.bnb_dequantize_4bit = bnb::detail::avx512_dequantize_4bit_blocks();
    k.bnb_nested_scales = bnb::detail::avx512_dequantize_absmax_nested();
    k.bnb_quantize_int8_rows = bnb::detail::avx512_quantize_int8_rows();
    k.bnb_dequantize_int8_rows = bnb::detail::avx512_dequantize_int8_rows();
  }
  return k;
}

}  // namespace

const CpuKernels& cpu_kernels(CpuTarget target) {
  if (!cpu_supports(target))
    throw Error("this CPU cannot run the " + std::string(cpu_target_name(target)) + " kernels");
  static const std::array<CpuKernels, 3> tables = {kernels_for(CpuTarget::scalar), kernels_for(CpuTarget::avx2),
                                                   kernels_for(CpuTarget::avx512)};
  return tables[size_t(target)];
}

}  // namespace lowbit::cpu
