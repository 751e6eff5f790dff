// The GPU's dtype conversions give the same bits as the CPU's, for every 16-bit pattern.
// Skips on machines without a GPU (CI); run on the device machine by scripts/device-check.sh.
#include <gtest/gtest.h>

#ifdef LOWBIT_HAVE_CUDA
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/kernels/cuda/device.h"

namespace lowbit {
namespace {

template <class T>
struct DeviceArray {
  T* ptr = nullptr;
  explicit DeviceArray(size_t n) { EXPECT_EQ(cudaMalloc(&ptr, n * sizeof(T)), cudaSuccess); }
  ~DeviceArray() { cudaFree(ptr); }
};

TEST(CudaConvert, MatchesCpuForAllSixteenBitPatterns) {
  if (cuda::devices().empty()) GTEST_SKIP() << "no CUDA device";
  constexpr size_t n = 65536;
  std::vector<uint16_t> patterns(n);
  for (size_t i = 0; i < n; ++i) patterns[i] = uint16_t(i);
  DeviceArray<uint16_t> d_src(n), d_back(n);
  DeviceArray<float> d_f32(n);
  ASSERT_EQ(cudaMemcpy(d_src.ptr, patterns.data(), n * 2, cudaMemcpyHostToDevice), cudaSuccess);
  for (DType t : {DType::f16, DType::bf16}) {
    std::vector<float> cpu(n), gpu(n);
    convert_to_f32(t, patterns.data(), cpu.data(), n);
    cuda::convert_to_f32(t, d_src.ptr, d_f32.ptr, n, nullptr);
    ASSERT_EQ(cudaMemcpy(gpu.data(), d_f32.ptr, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(std::memcmp(cpu.data(), gpu.data(), n * 4), 0) << dtype_name(t);

    std::vector<uint16_t> cpu_back(n), gpu_back(n);
    convert_from_f32(cpu.data(), t, cpu_back.data(), n);
    cuda::convert_from_f32(d_f32.ptr, t, d_back.ptr, n, nullptr);
    ASSERT_EQ(cudaMemcpy(gpu_back.data(), d_back.ptr, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
    EXPECT_EQ(cpu_back, gpu_back) << dtype_name(t);
  }
}

TEST(CudaDevices, ReportsComputeCapability) {
  const auto devices = cuda::devices();
  if (devices.empty()) GTEST_SKIP() << "no CUDA device";
  for (const auto& d : devices) {
    EXPECT_GT(d.compute_capability, 0);
    EXPECT_GT(d.memory_bytes, 0u);
    std::printf("device %d: %s, sm_%d, %.1f GiB\n", d.index, d.name.c_str(), d.compute_capability,
                double(d.memory_bytes) / double(1 << 30));
  }
}

}  // namespace
}  // namespace lowbit
#else
TEST(CudaConvert, NotBuilt) { GTEST_SKIP() << "lowbit was built without CUDA (LOWBIT_CUDA=OFF)"; }
#endif
