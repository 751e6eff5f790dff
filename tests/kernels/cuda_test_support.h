// What the GPU tests share: poisoned device buffers, byte comparison, a seeded random source
// (printed, new each run) and heavy-tailed data.
#pragma once

#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/core/tensor.h"
#include "lowbit/kernels/cuda/device.h"

namespace lowbit {

// Device memory filled with 0xFF, so an element the kernel does not write shows as a mismatch.
struct DeviceBytes {
  void* ptr = nullptr;
  size_t size = 0;
  explicit DeviceBytes(size_t n) : size(n) {
    EXPECT_EQ(cudaMalloc(&ptr, n + 16), cudaSuccess);
    poison();
  }
  ~DeviceBytes() { cudaFree(ptr); }
  void poison() { EXPECT_EQ(cudaMemset(ptr, 0xFF, size + 16), cudaSuccess); }
  template <class T>
  T* as(size_t byte_offset = 0) { return reinterpret_cast<T*>(static_cast<std::byte*>(ptr) + byte_offset); }
  void upload(const void* src, size_t n) { ASSERT_EQ(cudaMemcpy(ptr, src, n, cudaMemcpyHostToDevice), cudaSuccess); }
  std::vector<std::byte> download(size_t n, size_t byte_offset = 0) {
    std::vector<std::byte> out(n);
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(out.data(), as<std::byte>(byte_offset), n, cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
};

template <class T>
std::vector<std::byte> bytes_of(const T* data, size_t count) {
  const auto* p = reinterpret_cast<const std::byte*>(data);
  return {p, p + count * sizeof(T)};
}

// Index of the first differing element of `element_size` bytes, or -1.
inline int64_t first_mismatch(const std::vector<std::byte>& a, const std::vector<std::byte>& b, size_t element_size) {
  if (a.size() != b.size()) return 0;
  for (size_t i = 0; i < a.size(); ++i)
    if (a[i] != b[i]) return int64_t(i / element_size);
  return -1;
}

#define EXPECT_SAME_BYTES(cpu, gpu, element_size, what) \
  EXPECT_EQ(first_mismatch(cpu, gpu, element_size), -1) << (what) << ": first differing element"

inline std::mt19937_64& rng() {
  static std::mt19937_64 engine = [] {
    const uint64_t seed = std::random_device{}();
    std::printf("cuda test seed %llu\n", static_cast<unsigned long long>(seed));
    return std::mt19937_64(seed);
  }();
  return engine;
}

// Student-t (3 degrees of freedom) times a random per-tensor scale: heavy tails, outliers, signs.
inline std::vector<float> heavy_tailed(size_t n) {
  std::student_t_distribution<float> t(3.0f);
  std::uniform_real_distribution<float> log_scale(-8.0f, 4.0f);
  const float scale = std::exp2(log_scale(rng()));
  std::vector<float> x(n);
  // Clamped inside f16's range, so every dtype holds finite values (the CPU codecs reject Inf).
  for (float& v : x) v = std::clamp(t(rng()) * scale, -60000.0f, 60000.0f);
  return x;
}

// The values in `dtype`, and the float32 values the CPU codecs then see.
inline Tensor as_dtype(const std::vector<float>& x, DType dtype) {
  Tensor t(dtype, {int64_t(x.size())});
  convert_from_f32(x.data(), dtype, t.buffer.data(), x.size());
  return t;
}

inline bool has_gpu() { return !cuda::devices().empty(); }

}  // namespace lowbit
