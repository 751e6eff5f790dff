// The entry point liblowbit_cuda.so exports: the Backend interface over this module's kernels.
#include "lowbit/kernels/cuda/backend.h"

#include <cuda_runtime.h>

#include <map>
#include <memory>

#include "check.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {
namespace {

// Makes `device` the thread's current GPU for one call and restores the caller's (a framework such as
// torch keeps its own notion of the current device, which a call on another GPU's tensors must not move).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    check(cudaGetDevice(&previous_));
    if (device != previous_) check(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = 0;
};

class ModuleBackend final : public Backend {
  // cuBLAS handles and scratch, made once per thread and device (a context serves one stream at a time).
  static MatmulContext& context(int device) {
    thread_local std::map<int, std::unique_ptr<MatmulContext>> contexts;
    auto& context = contexts[device];
    if (!context) context = std::make_unique<MatmulContext>();
    return *context;
  }

 public:
  std::vector<DeviceInfo> devices() const override { return cuda::devices(); }
  std::string bench_device_description() const override { return cuda::bench_device_description(); }
  void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row) const override {
    cuda::run_benchmarks(options, on_row);
  }

  void dequantize_4bit(int device, bnb::QuantType type, const uint8_t* packed, const float* absmax, const NestedScales* nested, int64_t n,
                       int64_t blocksize, DType out_dtype, void* out, cudaStream_t stream) const override {
    const DeviceGuard on(device);
    if (nested)
      cuda::dequantize_4bit(type, packed, *nested, n, blocksize, out_dtype, out, stream);
    else
      cuda::dequantize_4bit(type, packed, absmax, n, blocksize, out_dtype, out, stream);
  }
  void quantize_4bit(int device, bnb::QuantType type, DType in_dtype, const void* input, int64_t n, int64_t blocksize, bool double_quant,
                     const Quantized4bitBuffers& out, cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::quantize_4bit(type, in_dtype, input, n, blocksize, double_quant, out, stream);
  }
  void quantize_int8_rowwise(int device, DType in_dtype, const void* input, int64_t rows, int64_t cols, int8_t* cb, float* scb,
                             cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::quantize_int8_rowwise(in_dtype, input, rows, cols, cb, scb, stream);
  }
  void dequantize_int8_rowwise(int device, const int8_t* cb, const float* scb, int64_t rows, int64_t cols, DType out_dtype, void* out,
                               cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::dequantize_int8_rowwise(cb, scb, rows, cols, out_dtype, out, stream);
  }
  void llm_int8_matmul(int device, const int8_t* cb, const float* scb, int64_t rows, int64_t cols, const void* x, int64_t tokens,
                       float threshold, void* y, cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::llm_int8_matmul(context(device), {.cb = cb, .scb = scb, .rows = rows, .cols = cols}, x, tokens, threshold, y, stream);
  }
  std::shared_ptr<const Fused4bitWeight> prepare_fused_4bit(int device, const Bnb4bitWeight& weight, cudaStream_t stream) const override {
    const DeviceGuard on(device);
    return std::make_shared<const Fused4bitWeight>(cuda::prepare_fused(weight, stream));
  }
  void matmul_4bit(int device, const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, void* y,
                   cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::matmul_4bit(context(device), weight, dtype, x, tokens, y, stream);
  }
  bool has_ggml_dequantize(GgmlType type) const override { return cuda::has_ggml_dequantize(type); }
  void dequantize_ggml(int device, GgmlType type, const void* blocks, int64_t rows, int64_t cols, DType out_dtype, void* out,
                       cudaStream_t stream) const override {
    const DeviceGuard on(device);
    cuda::dequantize_ggml(type, blocks, rows, cols, out_dtype, out, stream);
  }
};

}  // namespace
}  // namespace lowbit::cuda

// nullptr when the caller was built against another version of the interface.
extern "C" __attribute__((visibility("default"))) const lowbit::cuda::Backend* lowbit_cuda_backend(int abi) {
  static const lowbit::cuda::ModuleBackend backend;
  return abi == lowbit::cuda::kBackendAbi ? &backend : nullptr;
}
