// What each SIMD file of the CPU backend exports: its kernels, with no check of the CPU (cpu_kernels.cpp
// hands them out only to a target that runs them). Each is null on a build without the x86 kernels.
// Private to src/kernels/cpu.
#pragma once

#include "kernels/cpu/cpu_kernels.h"

namespace lowbit::ggml_search {
const BatchKernels* avx512_batch_kernels();  // ggml_kquants_search_avx512.cpp
const LaneKernels* avx512_lane_kernels();    // ggml_kquants_search_lanes_avx512.cpp
}  // namespace lowbit::ggml_search

namespace lowbit::ggml {
const LegacyVectorKernels* avx512_legacy_kernels();     // ggml_legacy_avx512.cpp
const DequantVectorKernels* avx512_dequant_kernels();   // ggml_dequant_avx512.cpp
const DequantVectorKernels* avx2_dequant_kernels();     // ggml_dequant_avx2.cpp
const IqDequantVectorKernels* avx2_iq_dequant_kernels();  // ggml_iq_dequant_avx2.cpp
const TernaryFp4DequantVectorKernels* avx2_ternary_fp4_dequant_kernels();  // ggml_ternary_fp4_dequant_avx2.cpp
}  // namespace lowbit::ggml

namespace lowbit::ggml::iq1 {
SplitSearchFn avx512_split_search();            // ggml_iq1_search_avx512.cpp
NearestCandidateFn avx512_nearest_candidate();  // ggml_iq1_search_avx512.cpp
SplitSearchFn avx2_split_search();              // ggml_iq1_search_avx2.cpp: 8 splits per vector
NearestCandidateFn avx2_nearest_candidate();    // ggml_iq1_search_avx2.cpp: 8 candidates per vector
AscendingOrderFn avx2_ascending_order();        // ggml_iq1_search_avx2.cpp (the AVX-512 target too)
}  // namespace lowbit::ggml::iq1

namespace lowbit::ggml::iq2 {
const SearchKernels* avx512_search_kernels();  // ggml_iq2_search_avx512.cpp
const SearchKernels* avx2_search_kernels();    // ggml_iq2_search_avx2.cpp: the portable ones, 8 trials per vector
}  // namespace lowbit::ggml::iq2

namespace lowbit::ggml::iq3 {
AllTrialsFn avx512_all_trials();                // ggml_iq3_search_avx512.cpp: every trial scale of a group
AllTrialsFn avx2_all_trials();                  // ggml_iq3_search_avx2.cpp: 8 trials per vector
SnapUnitsFn avx2_snap_units();                  // ggml_iq3_search_avx2.cpp: a group's 8 units at once
}  // namespace lowbit::ggml::iq3

namespace lowbit::bnb::detail {
QuantizeBlocksFn avx512_quantize_4bit_blocks();         // bnb_4bit_avx512.cpp
QuantizeDynamic8bitFn avx512_quantize_dynamic_8bit();   // bnb_4bit_avx512.cpp
DequantizeBlocksFn avx512_dequantize_4bit_blocks();     // bnb_4bit_dequant_avx512.cpp
DequantizeBlocksFn avx2_dequantize_4bit_blocks();       // bnb_4bit_dequant_avx2.cpp
NestedScalesFn avx512_dequantize_absmax_nested();       // bnb_4bit_dequant_avx512.cpp
QuantizeInt8RowsFn avx512_quantize_int8_rows();         // bnb_int8_avx512.cpp
DequantizeInt8RowsFn avx512_dequantize_int8_rows();     // bnb_int8_avx512.cpp
}  // namespace lowbit::bnb::detail
