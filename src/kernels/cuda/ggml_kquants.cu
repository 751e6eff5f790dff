// ggml's k-quants on the GPU: dequantize q2_K, q3_K, q4_K, q5_K and q6_K as
// lowbit::ggml::dequantize_row_* does (layouts: include/lowbit/formats/ggml_kquants.h).
// A 256-value super-block has 32 groups of 8 values: group g = values [8g, 8g + 8), which always lie
// in one 16- or 32-value sub-block, so a group needs one scale (and min). The scales, mins and value
// formulas are ggml::kquants' rules, the CPU's own; what is here is how a group's bytes are loaded and
// its eight codes cut out of them (byte-parallel, code_minus).

#include "ggml_dequantize.cuh"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_kquants.h"

namespace lowbit::cuda::detail {
namespace {

namespace kquants = ggml::kquants;

// q2_K and q3_K's 2-bit codes: group g is half of 16-value sub-block g / 2 (kquants::two_bit_offset
// and two_bit_shift), the second half 8 bytes further.
__device__ __forceinline__ int two_bit_qs_offset(int g) { return kquants::two_bit_offset(g / 2) + 8 * (g % 2); }
__device__ __forceinline__ int two_bit_shift(int g) { return kquants::two_bit_shift(g / 2); }

struct Q2K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ2K);
  struct Raw { uint32_t dm, sc; uint2 qs; };  // dm: d low half, dmin high half
  static __device__ Raw load(const uint8_t* b, int g) {
    return {ld32(b + 80), b[g / 2], ld64_a4(b + 16 + two_bit_qs_offset(g))};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const kquants::ScaleMin sm = kquants::scale_min_q2(r.sc);
    const float dl = kquants::sub_block_factor(half_bits_to_float(r.dm), sm.scale);
    const float ml = kquants::sub_block_factor(half_bits_to_float(r.dm >> 16), sm.min);
    const int shift = two_bit_shift(g);
    const uint32_t codes[2] = {(r.qs.x >> shift) & 0x03030303u, (r.qs.y >> shift) & 0x03030303u};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale_min(dl, code_minus(codes[k / 4], k % 4, 0.0f), ml);
  }
};

struct Q3K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ3K);
  struct Raw { uint32_t d, scale_low, scale_high; uint2 qs, hmask; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int j = g / 2;  // the 16-value sub-block
    return {ld16(b + 108), b[96 + j % 8], b[96 + 8 + j % 4], ld64_a2(b + 32 + two_bit_qs_offset(g)),
            ld64_a2(b + 8 * (g % 4))};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int j = g / 2;
    const int s = kquants::scale_q3(r.scale_low, r.scale_high, j);
    const float dl = kquants::sub_block_factor(half_bits_to_float(r.d), s);
    // value = q - (high bit clear ? 4 : 0) = (q | high << 2) - 4; high: bit e / 32 of hmask[e % 32]
    const int shift = two_bit_shift(g), bit = g / 4;
    const uint32_t codes[2] = {((r.qs.x >> shift) & 0x03030303u) | ((r.hmask.x >> bit) & 0x01010101u) << 2,
                               ((r.qs.y >> shift) & 0x03030303u) | ((r.hmask.y >> bit) & 0x01010101u) << 2};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale(dl, code_minus(codes[k / 4], k % 4, 4.0f));
  }
};

// q4_K and q5_K: the 16-byte header (d, dmin, 12 bytes of scales) in one load; sub-block j's three
// scale bytes (kquants::scale_min_k4's a, b, c) are byte j % 4 of header words 1, 2 and 3
// (compile-time word positions: no indexing into registers), and its factors d * scale, dmin * min.
__device__ __forceinline__ kquants::ScaleMin header_scale_min(const uint4& h, int j) {
  const int shift = 8 * (j % 4);
  const uint32_t a = (h.y >> shift) & 0xffu, b = (h.z >> shift) & 0xffu, c = (h.w >> shift) & 0xffu;
  return kquants::scale_min_k4(a, b, c, j);
}
__device__ __forceinline__ float header_factor(const uint4& h, int j) {
  return kquants::sub_block_factor(half_bits_to_float(h.x), header_scale_min(h, j).scale);
}
__device__ __forceinline__ float header_minimum(const uint4& h, int j) {
  return kquants::sub_block_factor(half_bits_to_float(h.x >> 16), header_scale_min(h, j).min);
}

struct Q4K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ4K);  // 144: 16-byte aligned blocks
  static constexpr int kAlign = 16;
  struct Raw { uint4 header; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int j = g / 4;  // values of sub-block j: qs[32 (j / 2) + l], low nibble for even j
    return {*reinterpret_cast<const uint4*>(b), ld64(b + 16 + 32 * (j / 2) + 8 * (g % 4))};
  }
  // value = dj · code − mj
  static __device__ void codes(const Raw& r, int g, float (&q)[8]) {
    const int shift = 4 * (g / 4 % 2);
    const uint32_t c[2] = {(r.qs.x >> shift) & 0x0f0f0f0fu, (r.qs.y >> shift) & 0x0f0f0f0fu};
#pragma unroll
    for (int k = 0; k < 8; ++k) q[k] = code_minus(c[k / 4], k % 4, 0.0f);
  }
  static __device__ float factor(const Raw& r, int g) { return header_factor(r.header, g / 4); }
  static __device__ float minimum(const Raw& r, int g) { return header_minimum(r.header, g / 4); }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    codes(r, g, y);
    const float dj = factor(r, g), mj = minimum(r, g);  // once a group (in the loop: per value, 0.64 of copy)
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale_min(dj, y[k], mj);
  }
};

struct Q5K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ5K);  // 176: 16-byte aligned blocks
  static constexpr int kAlign = 16;
  struct Raw { uint4 header; uint2 qs, qh; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int j = g / 4;
    return {*reinterpret_cast<const uint4*>(b), ld64(b + 48 + 32 * (j / 2) + 8 * (g % 4)), ld64(b + 16 + 8 * (g % 4))};
  }
  // value = dj · code − mj
  static __device__ void codes(const Raw& r, int g, float (&q)[8]) {
    const int j = g / 4, shift = 4 * (j % 2);  // bit 4 of the code: bit j of qh[l]
    const uint32_t c[2] = {((r.qs.x >> shift) & 0x0f0f0f0fu) | ((r.qh.x >> j) & 0x01010101u) << 4,
                           ((r.qs.y >> shift) & 0x0f0f0f0fu) | ((r.qh.y >> j) & 0x01010101u) << 4};
#pragma unroll
    for (int k = 0; k < 8; ++k) q[k] = code_minus(c[k / 4], k % 4, 0.0f);
  }
  static __device__ float factor(const Raw& r, int g) { return header_factor(r.header, g / 4); }
  static __device__ float minimum(const Raw& r, int g) { return header_minimum(r.header, g / 4); }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    codes(r, g, y);
    const float dj = factor(r, g), mj = minimum(r, g);  // once a group (in the loop: per value, 0.64 of copy)
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale_min(dj, y[k], mj);
  }
};

struct Q6K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ6K);
  struct Raw { uint32_t d, sc; uint2 ql, qh; };
  // Value e (h = e / 128, k = (e % 128) / 32, l = e % 32): low 4 bits in ql[64h + 32 (k & 1) + l]
  // (high nibble for k >= 2), high 2 bits at bit 2k of qh[32h + l].
  static __device__ Raw load(const uint8_t* b, int g) {
    const int h = g / 16, k = (g % 16) / 4, l0 = 8 * (g % 4);
    return {ld16(b + 208), b[192 + g / 2], ld64_a2(b + 64 * h + 32 * (k & 1) + l0), ld64_a2(b + 128 + 32 * h + l0)};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int k = (g % 16) / 4;
    const float ds = kquants::sub_block_factor(half_bits_to_float(r.d), int8_t(r.sc));
    const int low_shift = 4 * (k / 2), high_shift = 2 * k;
    const uint32_t codes[2] = {((r.ql.x >> low_shift) & 0x0f0f0f0fu) | ((r.qh.x >> high_shift) & 0x03030303u) << 4,
                               ((r.ql.y >> low_shift) & 0x0f0f0f0fu) | ((r.qh.y >> high_shift) & 0x03030303u) << 4};
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = kquants::value_scale(ds, code_minus(codes[i / 4], i % 4, 32.0f));
  }
};

// q2_K, q3_K and q6_K hold value 128h + 32k + l of a super-block (half h < 2, run k < 4, l < 32) in bytes
// indexed by h and l alone, the run picking the bits within them (and the 16-value sub-block's scale,
// 8h + 2k + l / 16). So eight lanes may share a super-block, lane task t = (h, l0) = (t / 4, 8 (t % 4))
// taking the 32 values of l in [l0, l0 + 8) of half h: it reads every byte it needs once, where the
// 8-value decoders above read a group's shared bytes again for each run (their 110-, 84- and 210-byte
// blocks allow only narrow loads, so the loads were what bound them: docs/benchmarks.md). The Runs types
// (ggml_dequantize.cuh) decode by the same kquants rules and roundings as the decoders above.
struct KquantRunTasks {
  static constexpr bool kStaged = false;
  static __device__ __forceinline__ int half(int task) { return task / 4; }
  static __device__ __forceinline__ int l0(int task) { return 8 * (task % 4); }
  static __device__ __forceinline__ int first_value(int task, int k) { return 128 * half(task) + 32 * k + l0(task); }
};

struct Q2KRuns : KquantRunTasks {
  static constexpr int kBytes = sizeof(ggml::BlockQ2K);
  struct Raw { uint2 scales, qs; uint32_t dm; };  // scales: bytes 8h..8h+7; dm: d low half, dmin high half
  static __device__ Raw load(const uint8_t* b, int task) {
    return {ld64_a4(b + 8 * half(task)), ld64_a4(b + 16 + 32 * half(task) + l0(task)), ld32(b + 80)};
  }
  // Run k's value = dl · code − ml
  static __device__ void codes(const Raw& r, int k, int, float (&q)[8]) {
    const uint32_t c[2] = {(r.qs.x >> 2 * k) & 0x03030303u, (r.qs.y >> 2 * k) & 0x03030303u};
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = code_minus(c[i / 4], i % 4, 0.0f);
  }
  static __device__ kquants::ScaleMin scale_min(const Raw& r, int k, int task) {
    return kquants::scale_min_q2(byte_of(r.scales, 2 * k + l0(task) / 16));
  }
  static __device__ float factor(const Raw& r, int k, int task) {
    return kquants::sub_block_factor(half_bits_to_float(r.dm), scale_min(r, k, task).scale);
  }
  static __device__ float minimum(const Raw& r, int k, int task) {
    return kquants::sub_block_factor(half_bits_to_float(r.dm >> 16), scale_min(r, k, task).min);
  }
  static __device__ void decode(const Raw& r, int k, int task, float (&y)[8]) {
    codes(r, k, task, y);
    const float dl = factor(r, k, task), ml = minimum(r, k, task);
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = kquants::value_scale_min(dl, y[i], ml);
  }
};

struct Q3KRuns : KquantRunTasks {
  static constexpr int kBytes = sizeof(ggml::BlockQ3K);
  static constexpr bool kStagedProduct = false;  // staged: 30 / 37 / 13 us, its own runs kernel 29 / 30 / 12 (H200)
  // hmask: bytes l0.. (bit 4h + k); qs: the 2-bit codes; low/high: the scale bytes 96.. and 104..
  struct Raw { uint2 hmask, qs, low; uint32_t high, d; };
  static __device__ Raw load(const uint8_t* b, int task) {
    return {ld64_a2(b + l0(task)), ld64_a2(b + 32 + 32 * half(task) + l0(task)), ld64_a2(b + 96), ld32_a2(b + 104), ld16(b + 108)};
  }
  // Run k's value = dl · code
  static __device__ void codes(const Raw& r, int k, int task, float (&q)[8]) {
    const int bit = 4 * half(task) + k;  // value = q - (high bit clear ? 4 : 0) = (q | high << 2) - 4
    const uint32_t c[2] = {((r.qs.x >> 2 * k) & 0x03030303u) | ((r.hmask.x >> bit) & 0x01010101u) << 2,
                           ((r.qs.y >> 2 * k) & 0x03030303u) | ((r.hmask.y >> bit) & 0x01010101u) << 2};
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = code_minus(c[i / 4], i % 4, 4.0f);
  }
  static __device__ float factor(const Raw& r, int k, int task) {
    const int j = 8 * half(task) + 2 * k + l0(task) / 16;  // the 16-value sub-block
    return kquants::sub_block_factor(half_bits_to_float(r.d), kquants::scale_q3(byte_of(r.low, j % 8), (r.high >> 8 * (j % 4)) & 0xffu, j));
  }
  static __device__ void decode(const Raw& r, int k, int task, float (&y)[8]) {
    codes(r, k, task, y);
    const float dl = factor(r, k, task);
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = kquants::value_scale(dl, y[i]);
  }
};

struct Q6KRuns : KquantRunTasks {
  static constexpr int kBytes = sizeof(ggml::BlockQ6K);
  // low: ql at 64h + l0 (runs 0 and 2: low, high nibble) and 64h + 32 + l0 (runs 1, 3); high: qh at
  // 128 + 32h + l0 (bits 2k); scales: bytes 192 + 8h.. (run k's is byte 2k + l0 / 16)
  struct Raw { uint2 low[2], high, scales; uint32_t d; };
  static __device__ Raw load(const uint8_t* b, int task) {
    const int h = half(task), l0 = KquantRunTasks::l0(task);
    return {{ld64_a2(b + 64 * h + l0), ld64_a2(b + 64 * h + 32 + l0)}, ld64_a2(b + 128 + 32 * h + l0), ld64_a2(b + 192 + 8 * h), ld16(b + 208)};
  }
  // Run k's sub-block factor d·scale, and its 8 values less 32 (exact in float32).
  static __device__ float factor(const Raw& r, int k, int task) {
    return kquants::sub_block_factor(half_bits_to_float(r.d), int8_t(byte_of(r.scales, 2 * k + l0(task) / 16)));
  }
  static __device__ void codes(const Raw& r, int k, int, float (&q)[8]) {
    const uint2& low = r.low[k & 1];
    const int low_shift = 4 * (k / 2), high_shift = 2 * k;
    const uint32_t c[2] = {((low.x >> low_shift) & 0x0f0f0f0fu) | ((r.high.x >> high_shift) & 0x03030303u) << 4,
                           ((low.y >> low_shift) & 0x0f0f0f0fu) | ((r.high.y >> high_shift) & 0x03030303u) << 4};
#pragma unroll
    for (int i = 0; i < 8; ++i) q[i] = code_minus(c[i / 4], i % 4, 32.0f);
  }
  static __device__ void decode(const Raw& r, int k, int task, float (&y)[8]) {
    const float ds = factor(r, k, task);
    codes(r, k, task, y);
#pragma unroll
    for (int i = 0; i < 8; ++i) y[i] = kquants::value_scale(ds, y[i]);
  }
};

// The one-token product (decoding) by runs where the staged kernel (ggml_matvec_staged.cuh) cannot take
// the rows: a warp per row, four super-blocks a round, two rounds' loads in flight. For 2 to 8 tokens the
// 8-value matvec serves: its rows share each lane's activations, which this kernel would load again per
// row (q6_K: 47 us at 2 tokens, 162 at 8).
template <class R>
__global__ void __launch_bounds__(128) matvec_runs_kernel(const uint8_t* __restrict__ blocks, int64_t rows, int64_t cols,
                                                          const float* __restrict__ x, float* __restrict__ y, bool accumulate) {
  constexpr int kInFlight = 2, kBlocksPerRound = 4;
  const int lane = int(threadIdx.x % 32);
  const int64_t row = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (row >= rows) return;  // a whole warp: nothing below synchronises the block
  const int64_t n_blocks = cols / 256;
  const uint8_t* row_blocks = blocks + size_t(row) * size_t(n_blocks) * R::kBytes;
  const int task = lane % 8;
  float sum = 0.0f;
  for (int64_t b0 = lane / 8; b0 < n_blocks; b0 += kBlocksPerRound * kInFlight) {
    typename R::Raw raw[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t b = b0 + kBlocksPerRound * u;
      if (b < n_blocks) raw[u] = R::load(row_blocks + size_t(b) * R::kBytes, task);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t b = b0 + kBlocksPerRound * u;
      if (b >= n_blocks) break;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const int64_t at = b * 256 + R::first_value(task, k);
        const float4 x0 = *reinterpret_cast<const float4*>(x + at), x1 = *reinterpret_cast<const float4*>(x + at + 4);
        const float xs[8] = {x0.x, x0.y, x0.z, x0.w, x1.x, x1.y, x1.z, x1.w};
        float x_sum = 0.0f;
        if constexpr (RunUnits<R>::kUsesSums)
#pragma unroll
          for (int i = 0; i < 8; ++i) x_sum += xs[i];
        sum += RunUnits<R>::dot(raw[u], k, task, xs, x_sum);
      }
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) y[row] = accumulate ? y[row] + sum : sum;
}

template <class R, class D>
void launch_matvec_runs(const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y, bool accumulate,
                        cudaStream_t stream) {
  if (tokens > 1) return launch_ggml_matvec<D>(blocks, rows, cols, x, tokens, y, accumulate, stream);
  require_block_alignment<D>(blocks);
  if constexpr (takes_staged_product<R>())
    if (launch_staged_matvec<RunUnits<R>>(static_cast<const uint8_t*>(blocks), rows, cols, x, y, accumulate, stream)) return;
  matvec_runs_kernel<R><<<unsigned((rows + 3) / 4), 128, 0, stream>>>(static_cast<const uint8_t*>(blocks), rows, cols, x, y, accumulate);
  check(cudaGetLastError());
}

template <class R, class D>
constexpr CudaFormatKernels runs_format_kernels(FormatId format) {
  return {format, &launch_dequantize_runs<R, D>, &launch_matvec_runs<R, D>};
}

constexpr CudaFormatKernels kKquantKernels[] = {
    runs_format_kernels<Q2KRuns, Q2K>(FormatId::q2_K), runs_format_kernels<Q3KRuns, Q3K>(FormatId::q3_K),
    block_format_kernels<Q4K>(FormatId::q4_K), block_format_kernels<Q5K>(FormatId::q5_K),
    runs_format_kernels<Q6KRuns, Q6K>(FormatId::q6_K),
};

}  // namespace

std::span<const CudaFormatKernels> kquant_kernels() { return kKquantKernels; }

}  // namespace lowbit::cuda::detail
