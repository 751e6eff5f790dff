// The CUDA backend as the rest of lowbit sees it: one interface, implemented inside
// liblowbit_cuda.so (src/kernels/cuda/backend.cu), which a program opens only when a GPU command
// runs (lowbit/pipeline/cuda_backend.h). The CUDA runtime, cuBLAS and cuBLASLt are linked into that
// module alone: a CPU command (inspect, quantize, eval on the CPU) never maps them, and a machine
// without them runs every CPU command. A new GPU entry point is a new virtual here, implemented in
// backend.cu; bump kBackendAbi when the interface changes, so that a stale module is refused.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/kernels/cuda/benchmark.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/device.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {

inline constexpr int kBackendAbi = 2;
// The module's one exported symbol: extern "C" const Backend* lowbit_cuda_backend(int abi).
inline constexpr const char* kBackendEntry = "lowbit_cuda_backend";

class Backend {
 public:
  virtual ~Backend() = default;
  // The GPUs the CUDA runtime sees; empty without a device or a driver.
  virtual std::vector<DeviceInfo> devices() const = 0;
  // benchmark.h: the device in one line, and every kernel beside its reference.
  virtual std::string bench_device_description() const = 0;
  virtual void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row) const = 0;

  // The codecs and products on caller-owned device memory (the Python package's CUDA tensors), as
  // codecs.h and matmul.h declare them; each call runs on `device` and restores the thread's current GPU.
  virtual void dequantize_4bit(int device, bnb::QuantType type, const uint8_t* packed, const float* absmax, const NestedScales* nested,
                               int64_t n, int64_t blocksize, DType out_dtype, void* out, cudaStream_t stream) const = 0;
  virtual void quantize_4bit(int device, bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize,
                             bool double_quant, const Quantized4bitBuffers& out, cudaStream_t stream) const = 0;
  virtual void quantize_int8_rowwise(int device, DType in_dtype, const void* input, int64_t rows, int64_t cols, int8_t* cb, float* scb,
                                     cudaStream_t stream) const = 0;
  virtual void dequantize_int8_rowwise(int device, const int8_t* cb, const float* scb, int64_t rows, int64_t cols, DType out_dtype,
                                       void* out, cudaStream_t stream) const = 0;
  // LLM.int8 (matmul.h's llm_int8_matmul), with a cuBLAS context per thread and device kept by the module.
  virtual void llm_int8_matmul(int device, const int8_t* cb, const float* scb, int64_t rows, int64_t cols, const void* x, int64_t tokens,
                               float threshold, void* y, cudaStream_t stream) const = 0;
  // matmul.h's 4-bit product: a bitsandbytes weight re-laid once for the fused kernel (it refers to `weight`'s
  // device memory, which must outlive it), then y = x · Wᵀ, fused for few tokens, dequantize + cuBLAS for many.
  virtual std::shared_ptr<const Fused4bitWeight> prepare_fused_4bit(int device, const Bnb4bitWeight& weight, cudaStream_t stream) const = 0;
  virtual void matmul_4bit(int device, const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, void* y,
                           cudaStream_t stream) const = 0;
  virtual bool has_ggml_dequantize(GgmlType type) const = 0;
  virtual void dequantize_ggml(int device, GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                               cudaStream_t stream) const = 0;
};

}  // namespace lowbit::cuda
