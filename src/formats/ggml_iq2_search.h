// The two inner steps of the iq2 quantizers' grid search, as swappable kernels: rounding a group's
// magnitudes to levels at a trial scale, and finding the nearest grid point among a key's neighbours.
// The scalar kernels (ggml_iq2_search.cpp) follow ggml-quants.c; the AVX-512 ones
// (ggml_iq2_search_avx512.cpp) give the same bits and are used where the CPU has AVX-512, unless
// ggml_search::set_vector_kernels_enabled(false) (the tests run both).
#pragma once

#include <cstdint>

#include "formats/ggml_iq2_grids.h"

namespace lowbit::ggml::iq2 {

struct SearchKernels {
  // Levels l = clamp(nearest_int(0.5 * (id * xval[i] - 1)), 0, 2) of n values (n = 16 or 32), and the
  // key (level of value j at bits 2j) of each 8-value subgroup.
  void (*round_levels)(const float* xval, int n, float id, int8_t* levels, uint32_t* keys);
  // Over a list's candidates (lane-major levels, SearchTables::lane_levels), the position of the first
  // with the least sum over j of waux[j] * (scaled[level] - xval[j])^2 (each product rounded, summed in
  // order of j: ggml's iq2_find_best_neighbour); -1 if none is below FLT_MAX. scaled[l] = scale * (2l+1).
  int (*nearest_candidate)(const uint8_t* lane_levels, int count, const float* xval, const float* waux,
                           const float* scaled);
};

const SearchKernels& search_kernels();
const SearchKernels* avx512_search_kernels();  // null when not compiled in or not supported by this CPU

}  // namespace lowbit::ggml::iq2
