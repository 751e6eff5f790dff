// GPU codec throughput beside a 16-byte-vector copy kernel measured in the same run.
//
// Each kernel is timed with CUDA events around every launch: 5 warm-up launches, then the median of
// 30, rotating among enough input/output sets that the working set exceeds twice the L2 (a kernel
// never finds its data already cached). Bytes counted = what the kernel must move at least: codes
// and scales read, input read, output written (GB/s = 1e9 bytes/s). The ratio compares with the
// copy kernel moving the same number of bytes per launch (read + written), measured in this run.
// Data: device-generated random bytes for codes, random positive scales, heavy-tailed values for
// quantization inputs (never zeros). Prints one markdown table.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/formats/ggml_types.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace {

using namespace lowbit;

void check(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    std::fprintf(stderr, "CUDA error %s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
  }
}

__device__ uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
__global__ void fill_bytes(uint32_t* p, int64_t words, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < words; i += int64_t(gridDim.x) * blockDim.x)
    p[i] = uint32_t(mix(seed ^ uint64_t(i)));
}
// Heavy tails: a normal over the square root of a uniform (a t-like ratio); positive: |x| + 1e-3.
__global__ void fill_floats(float* p, int64_t n, uint64_t seed, bool positive) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix(seed ^ uint64_t(i));
    const float u1 = (float(uint32_t(r)) + 1.0f) * 2.3283064e-10f, u2 = float(uint32_t(r >> 32)) * 2.3283064e-10f;
    float x = sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2) / sqrtf(u1 + 1e-4f);
    x = fminf(fmaxf(x, -60000.0f), 60000.0f);
    p[i] = positive ? fabsf(x) + 1e-3f : x;
  }
}
__global__ void to_bf16(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = uint16_t((__float_as_uint(in[i]) + 0x7fff + ((__float_as_uint(in[i]) >> 16) & 1)) >> 16);
}

// The reference: 16-byte vector loads and stores, grid-stride, four loads in flight per thread
// before the first store, one resident wave of blocks.
__global__ void __launch_bounds__(256) copy16(const uint4* __restrict__ src, uint4* __restrict__ dst, int64_t count) {
  constexpr int kUnroll = 4;
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += kUnroll * stride) {
    uint4 v[kUnroll];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (i + u * stride < count) v[u] = src[i + u * stride];
#pragma unroll
    for (int u = 0; u < kUnroll; ++u)
      if (i + u * stride < count) dst[i + u * stride] = v[u];
  }
}

int g_sms = 0;
constexpr int64_t kL2Twice = int64_t(100) << 20;

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&p, std::max<size_t>(bytes, 16)), "malloc"); }
  ~DeviceBuffer() { cudaFree(p); }
  template <class T> T* as() const { return static_cast<T*>(p); }
};

// Median milliseconds of `launch(set)` over rotated sets.
double median_ms(int sets, const std::function<void(int)>& launch) {
  for (int i = 0; i < 5; ++i) launch(i % sets);
  check(cudaDeviceSynchronize(), "warm-up");
  constexpr int kReps = 30;
  std::vector<cudaEvent_t> ev(2 * kReps);
  for (auto& e : ev) check(cudaEventCreate(&e), "event");
  for (int i = 0; i < kReps; ++i) {
    check(cudaEventRecord(ev[2 * i]), "record");
    launch(i % sets);
    check(cudaEventRecord(ev[2 * i + 1]), "record");
  }
  check(cudaEventSynchronize(ev.back()), "sync");
  check(cudaGetLastError(), "launch");
  std::vector<double> ms(kReps);
  for (int i = 0; i < kReps; ++i) {
    float t = 0;
    check(cudaEventElapsedTime(&t, ev[2 * i], ev[2 * i + 1]), "elapsed");
    ms[i] = t;
  }
  for (auto& e : ev) cudaEventDestroy(e);
  std::nth_element(ms.begin(), ms.begin() + kReps / 2, ms.end());
  return ms[kReps / 2];
}

int sets_for(int64_t bytes_per_set) { return int(std::clamp<int64_t>(kL2Twice / bytes_per_set + 1, 2, 64)); }

// GB/s of the copy kernel moving `bytes` (read + written) per launch; cached per size.
double copy_gbps(int64_t bytes) {
  static std::vector<std::pair<int64_t, double>> cache;
  for (auto& [b, g] : cache)
    if (b == bytes) return g;
  const int64_t half = bytes / 2 / 16 * 16;
  const int sets = sets_for(2 * half);
  std::vector<std::unique_ptr<DeviceBuffer>> src, dst;
  for (int s = 0; s < sets; ++s) {
    src.push_back(std::make_unique<DeviceBuffer>(half));
    dst.push_back(std::make_unique<DeviceBuffer>(half));
    fill_bytes<<<1024, 256>>>(src.back()->as<uint32_t>(), half / 4, 7 + s);
  }
  const unsigned grid = unsigned(g_sms * 8);
  const double ms = median_ms(sets, [&](int s) {
    copy16<<<grid, 256>>>(src[s]->as<uint4>(), dst[s]->as<uint4>(), half / 16);
  });
  const double gbps = double(2 * half) / ms / 1e6;
  cache.push_back({bytes, gbps});
  return gbps;
}

void report(const std::string& kernel, const std::string& size, int64_t bytes, double ms) {
  const double gbps = double(bytes) / ms / 1e6, copy = copy_gbps(bytes);
  std::printf("| %-26s | %-11s | %8.1f | %7.0f | %7.0f | %5.2f |\n", kernel.c_str(), size.c_str(), ms * 1e3, gbps, copy,
              gbps / copy);
  std::fflush(stdout);
}

struct MatrixSize {
  int64_t rows, cols;
  std::string name() const { return std::to_string(rows) + "x" + std::to_string(cols); }
  int64_t n() const { return rows * cols; }
};

void bench_bnb_4bit(MatrixSize m, bnb::QuantType type, bool double_quant, DType out_dtype) {
  const int64_t n = m.n(), blocksize = 64, blocks = n / blocksize, nested = (blocks + 255) / 256;
  const int64_t out_bytes = n * int64_t(dtype_size(out_dtype));
  const int64_t scale_bytes = double_quant ? blocks + nested * 4 + 4 : blocks * 4;
  const int64_t bytes = n / 2 + scale_bytes + out_bytes;
  const int sets = sets_for(bytes);
  std::vector<std::unique_ptr<DeviceBuffer>> packed, absmax, codes, nested_absmax, offset, out;
  for (int s = 0; s < sets; ++s) {
    packed.push_back(std::make_unique<DeviceBuffer>(n / 2));
    absmax.push_back(std::make_unique<DeviceBuffer>(blocks * 4));
    codes.push_back(std::make_unique<DeviceBuffer>(blocks));
    nested_absmax.push_back(std::make_unique<DeviceBuffer>(nested * 4));
    offset.push_back(std::make_unique<DeviceBuffer>(4));
    out.push_back(std::make_unique<DeviceBuffer>(out_bytes));
    fill_bytes<<<1024, 256>>>(packed[s]->as<uint32_t>(), n / 8, 100 + s);
    fill_bytes<<<1024, 256>>>(codes[s]->as<uint32_t>(), blocks / 4, 200 + s);
    fill_floats<<<1024, 256>>>(absmax[s]->as<float>(), blocks, 300 + s, true);
    fill_floats<<<1024, 256>>>(nested_absmax[s]->as<float>(), nested, 400 + s, true);
    fill_floats<<<1, 1>>>(offset[s]->as<float>(), 1, 500 + s, true);
  }
  const double ms = median_ms(sets, [&](int s) {
    if (double_quant)
      cuda::dequantize_4bit(type, packed[s]->as<uint8_t>(),
                            cuda::NestedScales{codes[s]->as<uint8_t>(), nested_absmax[s]->as<float>(), offset[s]->as<float>()},
                            n, blocksize, out_dtype, out[s]->p, nullptr);
    else
      cuda::dequantize_4bit(type, packed[s]->as<uint8_t>(), absmax[s]->as<float>(), n, blocksize, out_dtype, out[s]->p,
                            nullptr);
  });
  report(std::string("dequant ") + std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : "") + " -> " +
             std::string(dtype_name(out_dtype)),
         m.name(), bytes, ms);
}

void bench_quantize_4bit(MatrixSize m, bnb::QuantType type, bool double_quant) {
  const int64_t n = m.n(), blocksize = 64, blocks = n / blocksize, nested = (blocks + 255) / 256;
  // Read the bf16 input; write packed codes and the scales (absmax, or the nested codes and scales).
  const int64_t bytes = 2 * n + n / 2 + (double_quant ? blocks + nested * 4 + 4 : blocks * 4);
  const int sets = sets_for(bytes);
  std::vector<std::unique_ptr<DeviceBuffer>> input, packed, absmax, codes, nested_absmax, offset;
  DeviceBuffer scratch(n * 4);
  for (int s = 0; s < sets; ++s) {
    input.push_back(std::make_unique<DeviceBuffer>(n * 2));
    packed.push_back(std::make_unique<DeviceBuffer>(n / 2));
    absmax.push_back(std::make_unique<DeviceBuffer>(blocks * 4));
    codes.push_back(std::make_unique<DeviceBuffer>(blocks));
    nested_absmax.push_back(std::make_unique<DeviceBuffer>(nested * 4));
    offset.push_back(std::make_unique<DeviceBuffer>(4));
    fill_floats<<<1024, 256>>>(scratch.as<float>(), n, 600 + s, false);
    to_bf16<<<1024, 256>>>(scratch.as<float>(), input[s]->as<uint16_t>(), n);
  }
  const double ms = median_ms(sets, [&](int s) {
    cuda::quantize_4bit(type, DType::bf16, input[s]->p, n, blocksize, double_quant,
                        {packed[s]->as<uint8_t>(), absmax[s]->as<float>(), codes[s]->as<uint8_t>(),
                         nested_absmax[s]->as<float>(), offset[s]->as<float>()},
                        nullptr);
  });
  report(std::string("quant bf16 -> ") + std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : ""), m.name(),
         bytes, ms);
}

void bench_int8(MatrixSize m) {
  const int64_t n = m.n();
  const int sets = sets_for(3 * n);
  std::vector<std::unique_ptr<DeviceBuffer>> input, cb, scb, out;
  DeviceBuffer scratch(n * 4);
  for (int s = 0; s < sets; ++s) {
    input.push_back(std::make_unique<DeviceBuffer>(n * 2));
    cb.push_back(std::make_unique<DeviceBuffer>(n));
    scb.push_back(std::make_unique<DeviceBuffer>(m.rows * 4));
    out.push_back(std::make_unique<DeviceBuffer>(n * 2));
    fill_floats<<<1024, 256>>>(scratch.as<float>(), n, 700 + s, false);
    to_bf16<<<1024, 256>>>(scratch.as<float>(), input[s]->as<uint16_t>(), n);
  }
  const int64_t bytes = 2 * n + n + m.rows * 4;  // bf16 in (out), int8 codes, SCB
  double ms = median_ms(sets, [&](int s) {
    cuda::quantize_int8_rowwise(DType::bf16, input[s]->p, m.rows, m.cols, cb[s]->as<int8_t>(), scb[s]->as<float>(), nullptr);
  });
  report("quant bf16 -> int8 rowwise", m.name(), bytes, ms);
  ms = median_ms(sets, [&](int s) {
    cuda::dequantize_int8_rowwise(cb[s]->as<int8_t>(), scb[s]->as<float>(), m.rows, m.cols, DType::bf16, out[s]->p, nullptr);
  });
  report("dequant int8 rowwise -> bf16", m.name(), bytes, ms);
}

void bench_ggml(MatrixSize m, GgmlType type) {
  const GgmlTypeInfo& info = ggml_type_info(type);
  const int64_t n = m.n(), block_bytes = n / info.block_elements * info.block_bytes;
  const int64_t bytes = block_bytes + 2 * n;
  const int sets = sets_for(bytes);
  std::vector<std::unique_ptr<DeviceBuffer>> blocks, out;
  for (int s = 0; s < sets; ++s) {
    blocks.push_back(std::make_unique<DeviceBuffer>(block_bytes + 4));
    out.push_back(std::make_unique<DeviceBuffer>(n * 2));
    fill_bytes<<<1024, 256>>>(blocks[s]->as<uint32_t>(), block_bytes / 4 + 1, 800 + s);
  }
  const double ms = median_ms(sets, [&](int s) {
    cuda::dequantize_ggml(type, blocks[s]->p, m.rows, m.cols, DType::bf16, out[s]->p, nullptr);
  });
  report("dequant " + std::string(info.name) + " -> bf16", m.name(), bytes, ms);
}

}  // namespace

int main(int argc, char** argv) {
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";  // one size, for a smoke run
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "properties");
  g_sms = prop.multiProcessorCount;
  std::printf("device: %s, %d SMs, L2 %d MB\n\n", prop.name, g_sms, prop.l2CacheSize >> 20);
  std::printf("| %-26s | %-11s | %8s | %7s | %7s | %5s |\n", "kernel", "size", "us", "GB/s", "copy", "ratio");
  std::printf("|%s|%s|%s|%s|%s|%s|\n", std::string(28, '-').c_str(), std::string(13, '-').c_str(),
              std::string(10, '-').c_str(), std::string(9, '-').c_str(), std::string(9, '-').c_str(),
              std::string(7, '-').c_str());
  std::vector<MatrixSize> sizes = {{4096, 4096}, {4096, 14336}};
  if (quick) sizes.resize(1);
  const int64_t big = int64_t(256) << 20;  // the copy kernel alone at 256 MB moved, for reference
  std::printf("| %-26s | %-11s | %8s | %7.0f | %7.0f | %5.2f |\n", "copy16 (256 MB moved)", "-", "-", copy_gbps(big),
              copy_gbps(big), 1.0);
  {  // cudaMemcpyAsync device to device at the same size, for context only
    const int64_t half = big / 2;
    DeviceBuffer a(half), b(half), c(half), d(half);
    const double ms = median_ms(2, [&](int s) {
      check(cudaMemcpyAsync(s ? c.p : a.p, s ? d.p : b.p, half, cudaMemcpyDeviceToDevice), "memcpy");
    });
    std::printf("| %-26s | %-11s | %8s | %7.0f | %7.0f | %5.2f |\n", "cudaMemcpy (256 MB moved)", "-", "-",
                double(big) / ms / 1e6, copy_gbps(big), double(big) / ms / 1e6 / copy_gbps(big));
  }
  for (const MatrixSize& m : sizes) {
    for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
      for (bool dq : {false, true}) bench_bnb_4bit(m, type, dq, DType::bf16);
    bench_bnb_4bit(m, bnb::QuantType::nf4, false, DType::f16);
    bench_bnb_4bit(m, bnb::QuantType::nf4, false, DType::f32);
    for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                          GgmlType::Q2_K, GgmlType::Q3_K})
      bench_ggml(m, type);
    bench_int8(m);
    for (bool dq : {false, true}) bench_quantize_4bit(m, bnb::QuantType::nf4, dq);
    bench_quantize_4bit(m, bnb::QuantType::fp4, false);
  }
  if (!quick) bench_int8({14336, 4096});
  check(cudaDeviceSynchronize(), "end");
  return 0;
}
