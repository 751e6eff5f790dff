// The CUDA side's entry points, usable by other programs: plain device pointers and a stream.
// Declared only when lowbit was built with LOWBIT_CUDA (LOWBIT_HAVE_CUDA is then defined).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"

typedef struct CUstream_st* cudaStream_t;

namespace lowbit::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_capability = 0;  // 90 for sm_90
  size_t memory_bytes = 0;
};

// The GPUs the CUDA runtime sees; empty (not an error) on a machine without one or without a driver.
std::vector<DeviceInfo> devices();

// dst[i] = float(src[i]) on the device, exactly as lowbit::convert_to_f32 does on the CPU.
// src and dst are device pointers; throws lowbit::Error on a CUDA error.
void convert_to_f32(DType src_dtype, const void* src, float* dst, size_t count, cudaStream_t stream);
// The reverse, rounding to nearest even.
void convert_from_f32(const float* src, DType dst_dtype, void* dst, size_t count, cudaStream_t stream);

}  // namespace lowbit::cuda
