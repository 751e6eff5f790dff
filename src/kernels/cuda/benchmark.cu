// GPU kernels beside references measured in the same run (include/lowbit/kernels/cuda/benchmark.h).
// Bytes counted for the codecs = what the kernel must move at least: codes and scales read, input
// read, output written; the reference copy kernel moves the same number of bytes per launch.
// Matmuls: a 4-bit weight's bytes = packed codes + scales; the reference is cuBLAS with the weight in
// 16 bits, the product bitsandbytes and transformers compute for an unquantized layer.
#include "lowbit/kernels/cuda/benchmark.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "check.h"
#include "lowbit/formats/format.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {
namespace {

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

__global__ void bf16_to_f16(const uint16_t* in, uint16_t* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = __half_as_ushort(__float2half_rn(__uint_as_float(uint32_t(in[i]) << 16)));
}
// Blocks of random bytes with the f16 scale at `offset` made a small finite value (a random scale could
// be Inf or NaN, which no quantizer writes).
__global__ void fix_f16_field(uint8_t* blocks, int64_t count, int64_t block_bytes, int offset) {
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < count; b += int64_t(gridDim.x) * blockDim.x) {
    auto* field = reinterpret_cast<uint16_t*>(blocks + b * block_bytes + offset);
    *field = uint16_t(0x1000 | (*field & 0x7ff));
  }
}
// LLM.int8-like activations, f16 [tokens, cols]: normal values (|x| < 5.5) with every 256th column
// ten times larger, the few outlier columns a 6.0 threshold then finds.
__global__ void fill_activations_f16(uint16_t* x, int64_t tokens, int64_t cols, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < tokens * cols; i += int64_t(gridDim.x) * blockDim.x) {
    const uint64_t r = mix(seed ^ uint64_t(i));
    const float u1 = (float(uint32_t(r)) + 1.0f) * 2.3283064e-10f, u2 = float(uint32_t(r >> 32)) * 2.3283064e-10f;
    float v = fminf(fmaxf(sqrtf(-2.0f * logf(u1)) * cospif(2.0f * u2), -5.5f), 5.5f);
    if (i % cols % 256 == 7) v *= 10.0f;
    x[i] = __half_as_ushort(__float2half_rn(v));
  }
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

constexpr int64_t kL2Twice = int64_t(100) << 20;

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { check(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  template <class T> T* as() const { return static_cast<T*>(p); }
};
using Buffers = std::vector<std::unique_ptr<DeviceBuffer>>;
Buffers buffers(int sets, size_t bytes) {
  Buffers b;
  for (int s = 0; s < sets; ++s) b.push_back(std::make_unique<DeviceBuffer>(bytes));
  return b;
}

int sets_for(int64_t bytes_per_set) { return int(std::clamp<int64_t>(kL2Twice / bytes_per_set + 1, 2, 64)); }

// Median microseconds of launch(set, stream): one eager call per set (it may allocate scratch), then
// each set's call captured into a graph; 5 warm-up replays, the median of 30 timed ones.
double median_us(int sets, const std::function<void(int, cudaStream_t)>& launch) {
  cudaStream_t stream = nullptr;
  check(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  for (int s = 0; s < sets; ++s) launch(s, stream);
  check(cudaStreamSynchronize(stream));
  std::vector<cudaGraphExec_t> graphs(size_t(sets), nullptr);
  for (int s = 0; s < sets; ++s) {
    cudaGraph_t graph = nullptr;
    check(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    launch(s, stream);
    check(cudaStreamEndCapture(stream, &graph));
    check(cudaGraphInstantiate(&graphs[size_t(s)], graph, 0));
    check(cudaGraphDestroy(graph));
  }
  for (int i = 0; i < 5; ++i) check(cudaGraphLaunch(graphs[size_t(i % sets)], stream));
  constexpr int kReps = 30;
  std::vector<cudaEvent_t> events(2 * kReps);
  for (auto& e : events) check(cudaEventCreate(&e));
  for (int i = 0; i < kReps; ++i) {
    check(cudaEventRecord(events[2 * size_t(i)], stream));
    check(cudaGraphLaunch(graphs[size_t(i % sets)], stream));
    check(cudaEventRecord(events[2 * size_t(i) + 1], stream));
  }
  check(cudaStreamSynchronize(stream));
  std::vector<double> us(kReps);
  for (int i = 0; i < kReps; ++i) {
    float ms = 0;
    check(cudaEventElapsedTime(&ms, events[2 * size_t(i)], events[2 * size_t(i) + 1]));
    us[size_t(i)] = ms * 1e3;
  }
  for (auto& e : events) cudaEventDestroy(e);
  for (auto& g : graphs) cudaGraphExecDestroy(g);
  cudaStreamDestroy(stream);
  std::nth_element(us.begin(), us.begin() + kReps / 2, us.end());
  return us[kReps / 2];
}

struct Bench {
  const BenchOptions& options;
  const std::function<void(const BenchRow&)>& on_row;
  int sms = 0;
  std::vector<std::pair<int64_t, double>> copy_cache;
  MatmulContext context;

  // GB/s of the copy kernel moving `bytes` (read + written) per launch; cached per size.
  double copy_gbps(int64_t bytes) {
    for (auto& [b, g] : copy_cache)
      if (b == bytes) return g;
    const int64_t half = bytes / 2 / 16 * 16;
    const int sets = sets_for(2 * half);
    Buffers src = buffers(sets, size_t(half)), dst = buffers(sets, size_t(half));
    for (int s = 0; s < sets; ++s) fill_bytes<<<1024, 256>>>(src[size_t(s)]->as<uint32_t>(), half / 4, 7 + s);
    const double us = median_us(sets, [&](int s, cudaStream_t stream) {
      copy16<<<unsigned(sms * 8), 256, 0, stream>>>(src[size_t(s)]->as<uint4>(), dst[size_t(s)]->as<uint4>(), half / 16);
    });
    const double gbps = double(2 * half) / us / 1e3;
    copy_cache.push_back({bytes, gbps});
    return gbps;
  }

  void codec_row(const std::string& kernel, const std::string& shape, int64_t bytes, double us) {
    BenchRow row{.kernel = kernel, .shape = shape, .us = us, .gbps = double(bytes) / us / 1e3, .reference = "copy"};
    row.reference_gbps = copy_gbps(bytes);
    row.reference_us = double(bytes) / row.reference_gbps / 1e3;
    row.ratio = row.gbps / row.reference_gbps;
    on_row(row);
  }

  struct MatrixSize {
    int64_t rows, cols;
    std::string name() const { return std::to_string(rows) + "x" + std::to_string(cols); }
    int64_t n() const { return rows * cols; }
  };

  // Random nf4/fp4 weights with plain and double-quantized scales, `sets` copies.
  struct Bnb4bitSets {
    Buffers packed, absmax, codes, nested_absmax, offset;
    Bnb4bitSets(int sets, int64_t n, int64_t blocksize) {
      const int64_t blocks = n / blocksize, nested = (blocks + 255) / 256;
      packed = buffers(sets, size_t(n / 2)), absmax = buffers(sets, size_t(blocks) * 4);
      codes = buffers(sets, size_t(blocks)), nested_absmax = buffers(sets, size_t(nested) * 4), offset = buffers(sets, 4);
      for (int s = 0; s < sets; ++s) {
        fill_bytes<<<1024, 256>>>(packed[size_t(s)]->as<uint32_t>(), n / 8, 100 + s);
        fill_bytes<<<1024, 256>>>(codes[size_t(s)]->as<uint32_t>(), blocks / 4, 200 + s);
        fill_floats<<<1024, 256>>>(absmax[size_t(s)]->as<float>(), blocks, 300 + s, true);
        fill_floats<<<1024, 256>>>(nested_absmax[size_t(s)]->as<float>(), nested, 400 + s, true);
        fill_floats<<<1, 1>>>(offset[size_t(s)]->as<float>(), 1, 500 + s, true);
      }
    }
    NestedScales nested(int s) const {
      return {codes[size_t(s)]->as<uint8_t>(), nested_absmax[size_t(s)]->as<float>(), offset[size_t(s)]->as<float>()};
    }
  };

  void dequantize_4bit_row(MatrixSize m, bnb::QuantType type, bool double_quant, DType out_dtype) {
    const int64_t n = m.n(), blocksize = 64, blocks = n / blocksize, nested = (blocks + 255) / 256;
    const int64_t out_bytes = n * int64_t(dtype_size(out_dtype));
    const int64_t scale_bytes = double_quant ? blocks + nested * 4 + 4 : blocks * 4;
    const int64_t bytes = n / 2 + scale_bytes + out_bytes;
    const int sets = sets_for(bytes);
    const Bnb4bitSets weights(sets, n, blocksize);
    Buffers out = buffers(sets, size_t(out_bytes));
    const double us = median_us(sets, [&](int s, cudaStream_t stream) {
      const uint8_t* packed = weights.packed[size_t(s)]->as<uint8_t>();
      if (double_quant)
        dequantize_4bit(type, packed, weights.nested(s), n, blocksize, out_dtype, out[size_t(s)]->p, stream);
      else
        dequantize_4bit(type, packed, weights.absmax[size_t(s)]->as<float>(), n, blocksize, out_dtype, out[size_t(s)]->p,
                        stream);
    });
    codec_row(std::string("dequant ") + std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : "") + " -> " +
                  std::string(dtype_name(out_dtype)),
              m.name(), bytes, us);
  }

  // bf16 heavy-tailed values, `sets` copies of n.
  Buffers bf16_sets(int sets, int64_t n, uint64_t seed) {
    Buffers input = buffers(sets, size_t(n) * 2);
    DeviceBuffer scratch(size_t(n) * 4);
    for (int s = 0; s < sets; ++s) {
      fill_floats<<<1024, 256>>>(scratch.as<float>(), n, seed + uint64_t(s), false);
      to_bf16<<<1024, 256>>>(scratch.as<float>(), input[size_t(s)]->as<uint16_t>(), n);
    }
    check(cudaDeviceSynchronize());
    return input;
  }

  void quantize_4bit_row(MatrixSize m, bnb::QuantType type, bool double_quant) {
    const int64_t n = m.n(), blocksize = 64, blocks = n / blocksize, nested = (blocks + 255) / 256;
    // Read the bf16 input; write packed codes and the scales (absmax, or the nested codes and scales).
    const int64_t bytes = 2 * n + n / 2 + (double_quant ? blocks + nested * 4 + 4 : blocks * 4);
    const int sets = sets_for(bytes);
    const Buffers input = bf16_sets(sets, n, 600);
    const Bnb4bitSets out(sets, n, blocksize);
    const double us = median_us(sets, [&](int s, cudaStream_t stream) {
      const size_t i = size_t(s);
      quantize_4bit(type, DType::bf16, input[i]->p, n, blocksize, double_quant,
                    {out.packed[i]->as<uint8_t>(), out.absmax[i]->as<float>(), out.codes[i]->as<uint8_t>(),
                     out.nested_absmax[i]->as<float>(), out.offset[i]->as<float>()},
                    stream);
    });
    codec_row(std::string("quant bf16 -> ") + std::string(bnb::quant_type_name(type)) + (double_quant ? "+dq" : ""),
              m.name(), bytes, us);
  }

  void int8_rows(MatrixSize m) {
    const int64_t n = m.n();
    const int sets = sets_for(3 * n);
    const Buffers input = bf16_sets(sets, n, 700);
    Buffers cb = buffers(sets, size_t(n)), scb = buffers(sets, size_t(m.rows) * 4), out = buffers(sets, size_t(n) * 2);
    const int64_t bytes = 2 * n + n + m.rows * 4;  // bf16 in (out), int8 codes, SCB
    double us = median_us(sets, [&](int s, cudaStream_t stream) {
      quantize_int8_rowwise(DType::bf16, input[size_t(s)]->p, m.rows, m.cols, cb[size_t(s)]->as<int8_t>(),
                            scb[size_t(s)]->as<float>(), stream);
    });
    codec_row("quant bf16 -> int8 rowwise", m.name(), bytes, us);
    us = median_us(sets, [&](int s, cudaStream_t stream) {
      dequantize_int8_rowwise(cb[size_t(s)]->as<int8_t>(), scb[size_t(s)]->as<float>(), m.rows, m.cols, DType::bf16,
                              out[size_t(s)]->p, stream);
    });
    codec_row("dequant int8 rowwise -> bf16", m.name(), bytes, us);
  }

  void dequantize_ggml_row(MatrixSize m, GgmlType type) {
    const FormatInfo& info = ggml_type_info(type);
    const int64_t n = m.n(), block_bytes = n / info.block_elements * info.block_bytes;
    const int64_t bytes = block_bytes + 2 * n;
    const int sets = sets_for(bytes);
    Buffers blocks = buffers(sets, size_t(block_bytes) + 4), out = buffers(sets, size_t(n) * 2);
    for (int s = 0; s < sets; ++s) fill_bytes<<<1024, 256>>>(blocks[size_t(s)]->as<uint32_t>(), block_bytes / 4 + 1, 800 + s);
    const double us = median_us(sets, [&](int s, cudaStream_t stream) {
      dequantize_ggml(type, blocks[size_t(s)]->p, m.rows, m.cols, DType::bf16, out[size_t(s)]->p, stream);
    });
    codec_row("dequant " + std::string(info.name) + " -> bf16", m.name(), bytes, us);
  }

  void codecs() {
    const int64_t big = int64_t(256) << 20;  // the copy kernel alone at 256 MB moved, for reference
    const double copy = copy_gbps(big);
    on_row({.kernel = "copy16 (256 MB moved)", .shape = "-", .us = double(big) / copy / 1e3, .gbps = copy,
            .reference = "copy", .reference_us = double(big) / copy / 1e3, .reference_gbps = copy, .ratio = 1.0});
    std::vector<MatrixSize> sizes = {{4096, 4096}, {4096, 14336}};
    if (options.quick) sizes.resize(1);
    if (options.large) sizes.erase(sizes.begin());
    for (const MatrixSize& m : sizes) {
      for (bnb::QuantType type : {bnb::QuantType::nf4, bnb::QuantType::fp4})
        for (bool dq : {false, true}) dequantize_4bit_row(m, type, dq, DType::bf16);
      dequantize_4bit_row(m, bnb::QuantType::nf4, false, DType::f16);
      dequantize_4bit_row(m, bnb::QuantType::nf4, false, DType::f32);
      for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K,
                            GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::IQ4_XS, GgmlType::IQ4_NL, GgmlType::IQ3_S,
                            GgmlType::IQ3_XXS, GgmlType::IQ2_S, GgmlType::IQ2_XS, GgmlType::IQ2_XXS, GgmlType::IQ1_M,
                            GgmlType::IQ1_S, GgmlType::TQ2_0, GgmlType::TQ1_0, GgmlType::MXFP4, GgmlType::NVFP4,
                            GgmlType::Q2_0, GgmlType::Q1_0})
        dequantize_ggml_row(m, type);
      int8_rows(m);
      for (bool dq : {false, true}) quantize_4bit_row(m, bnb::QuantType::nf4, dq);
      quantize_4bit_row(m, bnb::QuantType::fp4, false);
    }
    if (!options.quick) int8_rows({14336, 4096});
  }

  // ---- matmuls: y [tokens, rows] = x [tokens, cols] · Wᵀ ----

  void matmul_row(const std::string& kernel, MatrixSize m, int64_t tokens, int64_t weight_bytes, double us,
                  const std::string& reference, double reference_us) {
    on_row({.kernel = kernel, .shape = m.name(), .tokens = tokens, .us = us,
            .gbps = double(weight_bytes + 2 * tokens * (m.rows + m.cols)) / us / 1e3, .reference = reference,
            .reference_us = reference_us, .ratio = reference_us / us});
  }

  void matmul_4bit_rows(MatrixSize m, const std::vector<int64_t>& token_counts) {
    const int64_t n = m.n(), blocks = n / 64, nested = (blocks + 255) / 256;
    const int64_t nf4_bytes = n / 2 + blocks + nested * 4 + 4;
    const int64_t q4k_bytes = n / 256 * 144;
    const int weight16_sets = sets_for(2 * n), nf4_sets = sets_for(nf4_bytes), q4k_sets = sets_for(q4k_bytes);
    const Buffers weight16 = bf16_sets(weight16_sets, n, 900);
    const Bnb4bitSets nf4(nf4_sets, n, 64);
    Buffers q4k = buffers(q4k_sets, size_t(q4k_bytes));
    for (int s = 0; s < q4k_sets; ++s) {
      // Random codes and scales with finite, small d and dmin (f16 0x1000-0x17ff at bytes 0-3 of a block).
      fill_bytes<<<1024, 256>>>(q4k[size_t(s)]->as<uint32_t>(), q4k_bytes / 4, 1000 + s);
      for (int offset : {0, 2}) fix_f16_field<<<1024, 256>>>(q4k[size_t(s)]->as<uint8_t>(), n / 256, 144, offset);  // d, dmin
    }
    // The fused layout, made once per weight as a loader would (the cuBLAS path reads the originals).
    std::vector<Fused4bitWeight> nf4_fused, q4k_fused;
    for (int s = 0; s < nf4_sets; ++s)
      nf4_fused.push_back(prepare_fused(
          Bnb4bitWeight{.packed = nf4.packed[size_t(s)]->as<uint8_t>(), .nested = nf4.nested(s), .rows = m.rows, .cols = m.cols},
          nullptr));
    for (int s = 0; s < q4k_sets; ++s) q4k_fused.push_back(prepare_fused(Q4KWeight{q4k[size_t(s)]->p, m.rows, m.cols}, nullptr));
    const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
    const Buffers x = bf16_sets(2, max_tokens * m.cols, 1100);
    Buffers y = buffers(2, size_t(max_tokens * m.rows) * 2);
    for (int64_t tokens : token_counts) {
      const double cublas = median_us(weight16_sets, [&](int s, cudaStream_t stream) {
        matmul_16bit(context, DType::bf16, weight16[size_t(s)]->p, m.rows, m.cols, x[size_t(s % 2)]->p, tokens,
                     y[size_t(s % 2)]->p, stream);
      });
      matmul_row("cuBLAS bf16", m, tokens, 2 * n, cublas, "cuBLAS bf16", cublas);
      const double nf4_us = median_us(nf4_sets, [&](int s, cudaStream_t stream) {
        matmul_4bit(context, nf4_fused[size_t(s)], DType::bf16, x[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->p, stream);
      });
      matmul_row("matmul nf4+dq bf16", m, tokens, nf4_bytes, nf4_us, "cuBLAS bf16", cublas);
      const double q4k_us = median_us(q4k_sets, [&](int s, cudaStream_t stream) {
        matmul_4bit(context, q4k_fused[size_t(s)], DType::bf16, x[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->p, stream);
      });
      matmul_row("matmul q4_K bf16", m, tokens, q4k_bytes, q4k_us, "cuBLAS bf16", cublas);
      if (tokens < 16 || !wide_4bit_available(m.rows)) continue;
      const double nf4_wide_us = median_us(nf4_sets, [&](int s, cudaStream_t stream) {
        matmul_4bit_wide(nf4_fused[size_t(s)], DType::bf16, x[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->p, stream);
      });
      matmul_row("wgmma nf4+dq bf16", m, tokens, nf4_bytes, nf4_wide_us, "cuBLAS bf16", cublas);
      const double q4k_wide_us = median_us(q4k_sets, [&](int s, cudaStream_t stream) {
        matmul_4bit_wide(q4k_fused[size_t(s)], DType::bf16, x[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->p, stream);
      });
      matmul_row("wgmma q4_K bf16", m, tokens, q4k_bytes, q4k_wide_us, "cuBLAS bf16", cublas);
    }
  }

  // Decoding's products (matvec_ggml: any block type, float32 activations) and the fused 4-bit kernel,
  // beside cuBLAS bf16 on the same shape and tokens.
  void ggml_matvec_rows(MatrixSize m, const std::vector<int64_t>& token_counts) {
    const int64_t n = m.n();
    const Buffers weight16 = bf16_sets(sets_for(2 * n), n, 1400);
    const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
    const Buffers x16 = bf16_sets(2, max_tokens * m.cols, 1500);
    Buffers x32 = buffers(2, size_t(max_tokens * m.cols) * 4), y = buffers(2, size_t(max_tokens * m.rows) * 4);
    for (int s = 0; s < 2; ++s) fill_floats<<<1024, 256>>>(x32[size_t(s)]->as<float>(), max_tokens * m.cols, 1600 + uint64_t(s), false);
    struct Stored {
      GgmlType type;
      std::vector<int> scale_offsets;
    };
    for (const Stored& stored : {Stored{GgmlType::Q4_K, {0, 2}}, Stored{GgmlType::Q6_K, {208}}, Stored{GgmlType::Q8_0, {0}},
                                 Stored{GgmlType::Q2_K, {80, 82}}, Stored{GgmlType::Q3_K, {108}}, Stored{GgmlType::Q5_K, {0, 2}},
                                 Stored{GgmlType::Q4_0, {0}}, Stored{GgmlType::IQ4_XS, {0}}, Stored{GgmlType::IQ4_NL, {0}},
                                 Stored{GgmlType::IQ3_S, {0}}, Stored{GgmlType::IQ2_XXS, {0}}, Stored{GgmlType::IQ1_M, {}}}) {
      const FormatInfo& info = ggml_type_info(stored.type);
      const int64_t blocks = n / info.block_elements, bytes = blocks * info.block_bytes;
      const int sets = sets_for(bytes);
      Buffers weight = buffers(sets, size_t(bytes));
      for (int s = 0; s < sets; ++s) {
        fill_bytes<<<1024, 256>>>(weight[size_t(s)]->as<uint32_t>(), bytes / 4, 1700 + uint64_t(s));
        for (int offset : stored.scale_offsets) fix_f16_field<<<1024, 256>>>(weight[size_t(s)]->as<uint8_t>(), blocks, info.block_bytes, offset);
      }
      std::vector<Fused4bitWeight> fused;
      if (stored.type == GgmlType::Q4_K)
        for (int s = 0; s < sets; ++s) fused.push_back(prepare_fused(Q4KWeight{weight[size_t(s)]->p, m.rows, m.cols}, nullptr));
      for (int64_t tokens : token_counts) {
        const double cublas = median_us(sets_for(2 * n), [&](int s, cudaStream_t stream) {
          matmul_16bit(context, DType::bf16, weight16[size_t(s)]->p, m.rows, m.cols, x16[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->p, stream);
        });
        const double us = median_us(sets, [&](int s, cudaStream_t stream) {
          matvec_ggml(stored.type, weight[size_t(s)]->p, m.rows, m.cols, x32[size_t(s % 2)]->as<float>(), tokens,
                      y[size_t(s % 2)]->as<float>(), false, stream);
        });
        matmul_row("matvec " + std::string(info.name) + " f32", m, tokens, bytes, us, "cuBLAS bf16", cublas);
        codec_row("matvec " + std::string(info.name) + " f32, " + std::to_string(tokens) + " tok", m.name(), bytes, us);  // its weight's bytes beside the copy
        if (fused.empty()) continue;
        const double fused_us = median_us(sets, [&](int s, cudaStream_t stream) {
          matmul_4bit_fused_f32(fused[size_t(s)], DType::bf16, x16[size_t(s % 2)]->p, tokens, y[size_t(s % 2)]->as<float>(), false, stream);
        });
        matmul_row("fused q4_K f32 out", m, tokens, bytes, fused_us, "cuBLAS bf16", cublas);
        codec_row("fused q4_K f32 out, " + std::to_string(tokens) + " tok", m.name(), bytes, fused_us);
      }
    }
  }

  void int8_matmul_rows(MatrixSize m, const std::vector<int64_t>& token_counts) {
    const int64_t n = m.n();
    const int sets = sets_for(3 * n);
    Buffers weight16 = buffers(sets, size_t(n) * 2), cb = buffers(sets, size_t(n)), scb = buffers(sets, size_t(m.rows) * 4);
    {
      const Buffers bf16 = bf16_sets(sets, n, 1200);
      for (int s = 0; s < sets; ++s) {  // f16 weights, and their row-wise int8 codes
        bf16_to_f16<<<1024, 256>>>(bf16[size_t(s)]->as<uint16_t>(), weight16[size_t(s)]->as<uint16_t>(), n);
        quantize_int8_rowwise(DType::f16, weight16[size_t(s)]->p, m.rows, m.cols, cb[size_t(s)]->as<int8_t>(),
                              scb[size_t(s)]->as<float>(), nullptr);
      }
    }
    const int64_t max_tokens = *std::max_element(token_counts.begin(), token_counts.end());
    Buffers x = buffers(2, size_t(max_tokens * m.cols) * 2), y = buffers(2, size_t(max_tokens * m.rows) * 2);
    for (int s = 0; s < 2; ++s)  // activations of scale ~1 with a few columns past 6: LLM.int8's outliers
      fill_activations_f16<<<1024, 256>>>(x[size_t(s)]->as<uint16_t>(), max_tokens, m.cols, 1300 + uint64_t(s));
    for (int64_t tokens : token_counts) {
      const double cublas = median_us(sets, [&](int s, cudaStream_t stream) {
        matmul_16bit(context, DType::f16, weight16[size_t(s)]->p, m.rows, m.cols, x[size_t(s % 2)]->p, tokens,
                     y[size_t(s % 2)]->p, stream);
      });
      matmul_row("cuBLAS f16", m, tokens, 2 * n, cublas, "cuBLAS f16", cublas);
      for (float threshold : {0.0f, 6.0f}) {
        const double us = median_us(sets, [&](int s, cudaStream_t stream) {
          llm_int8_matmul(context, {cb[size_t(s)]->as<int8_t>(), scb[size_t(s)]->as<float>(), m.rows, m.cols},
                          x[size_t(s % 2)]->p, tokens, threshold, y[size_t(s % 2)]->p, stream);
        });
        matmul_row(threshold > 0 ? "LLM.int8 threshold 6" : "LLM.int8 threshold 0", m, tokens, n + 4 * m.rows, us,
                   "cuBLAS f16", cublas);
      }
    }
  }

  void matmuls() {
    const std::vector<int64_t> tokens =
        !options.tokens.empty() ? options.tokens
        : options.quick         ? std::vector<int64_t>{1, 8, 16, 64}
                                : std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
    using Products = BenchOptions::Products;
    const std::vector<int64_t> int8_tokens = options.quick ? std::vector<int64_t>{512} : std::vector<int64_t>{1, 16, 128, 512};
    const MatrixSize shapes[] = {{14336, 4096}, {4096, 14336}, {4096, 4096}};
    if (options.products == Products::four_bit) {
      for (MatrixSize m : shapes) matmul_4bit_rows(m, tokens);
      return;
    }
    if (options.products == Products::int8) return int8_matmul_rows({4096, 4096}, int8_tokens);
    for (MatrixSize m : shapes) ggml_matvec_rows(m, options.quick ? std::vector<int64_t>{1} : std::vector<int64_t>{1, 2, 4, 8});
    if (options.products == Products::decode) return;
    for (MatrixSize m : {MatrixSize{14336, 4096}, MatrixSize{4096, 14336}}) matmul_4bit_rows(m, tokens);
    int8_matmul_rows({4096, 4096}, int8_tokens);
  }
};

}  // namespace

std::string bench_device_description() {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0));
  return std::string(prop.name) + ", " + std::to_string(prop.multiProcessorCount) + " SMs, L2 " +
         std::to_string(prop.l2CacheSize >> 20) + " MB";
}

void run_benchmarks(const BenchOptions& options, const std::function<void(const BenchRow&)>& on_row) {
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0));
  Bench bench{options, on_row, prop.multiProcessorCount};
  if (options.codecs) bench.codecs();
  if (options.matmul) bench.matmuls();
  check(cudaDeviceSynchronize());
}

}  // namespace lowbit::cuda
