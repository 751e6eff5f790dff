// What a MatmulContext holds: the cuBLAS handles and device scratch, grown on demand. Scratch is
// freed only with the context; growing it synchronises the device (cudaFree), so callers size it once.
#pragma once

#include <cublasLt.h>
#include <cublas_v2.h>

#include <map>
#include <tuple>
#include <utility>

#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {

struct MatmulContext::Impl {
  cublasHandle_t blas = nullptr;
  cublasLtHandle_t blas_lt = nullptr;

  // Scratch slot i (a few independent buffers: weight copies, int32 sums, workspaces).
  enum Slot { kWeight16, kInt8Activations, kInt8Sums, kOutliers, kLtWorkspace, kSlots };
  void* buffers[kSlots] = {};
  size_t sizes[kSlots] = {};
  void* scratch(Slot slot, size_t bytes);

  // cuBLASLt's chosen int8 algorithm per (rows, cols, tokens), and whether it computes the transposed sums.
  std::map<std::tuple<int64_t, int64_t, int64_t>, std::pair<bool, cublasLtMatmulHeuristicResult_t>> int8_algos;
  Int8Layout int8_layout = Int8Layout::fastest;
};

void check_blas(cublasStatus_t status, const char* what);

}  // namespace lowbit::cuda
