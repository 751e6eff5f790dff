// ggml's ternary, 4-bit float and 1-2 bit linear types on the GPU: dequantize tq1_0, tq2_0, mxfp4,
// nvfp4, q1_0 and q2_0 as lowbit::ggml::dequantize_row_* does (layouts: include/lowbit/formats/
// ggml_ternary.h, ggml_fp4.h, ggml_q1_q2.h, whose decode rules these decoders call: what is here is
// how a group's bytes are loaded). Group g = values [8g, 8g + 8) of a block.
#include "ggml_dequantize.cuh"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_fp4.h"
#include "lowbit/formats/ggml_q1_q2.h"
#include "lowbit/formats/ggml_ternary.h"

namespace lowbit::cuda::detail {
namespace {

namespace ternary = ggml::ternary;  // the trit and value rules, the CPU's own

// Trit `pow3 = 3^t` of each of the four bytes of w, plus 1 (0, 1 or 2), as the four bytes of a word:
// ternary::unpack_trit's arithmetic on two bytes at once in 16-bit lanes (a byte times 81 and that
// times 3 stay below 2^16, so no lane carries into the next).
__device__ __forceinline__ uint32_t trits4(uint32_t w, uint32_t pow3) {
  const uint32_t even = ((w & 0x00ff00ffu) * pow3) & 0x00ff00ffu, odd = ((w >> 8 & 0x00ff00ffu) * pow3) & 0x00ff00ffu;
  return ((even * 3) >> 8 & 0x00ff00ffu) | ((odd * 3) & 0xff00ff00u);
}

// Four values from four trits + 1 (bytes of `trits`): exactly ternary::value(trit, d).
__device__ __forceinline__ void ternary_values4(uint32_t trits, float d, float* y) {
#pragma unroll
  for (int k = 0; k < 4; ++k) y[k] = mul_rn(code_minus(trits, k, 1.0f), d);
}

struct Tq1_0 {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockTq1_0);  // 54
  // Values 0..159: trit t = v / 32 of qs[v % 32]; 160..239: trit (v - 160) / 16 of qs[32 + v % 16];
  // 240..255: trit (v - 240) / 4 of qh[v % 4]. So a group is 8 consecutive bytes with one trit, or
  // (groups 30, 31) qh's 4 bytes with two. Every group loads 8 bytes without a branch: qh's groups
  // the 8 at 46..53, which end where the block does.
  struct Raw { uint32_t d; uint2 q; };
  LOWBIT_HOST_DEVICE static constexpr int first_byte(int g) { return g < 20 ? 8 * (g % 4) : g < 30 ? 32 + 8 * (g % 2) : 46; }
  // The trit of group g's values 4 * half .. 4 * half + 3.
  LOWBIT_HOST_DEVICE static constexpr int trit(int g, int half) { return g < 20 ? g / 4 : g < 30 ? (g - 20) / 2 : 2 * (g - 30) + half; }
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b + 52), ld64_a2(b + first_byte(g))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float d = half_bits_to_float(r.d);
    const bool in_qh = g >= 30;
    const uint32_t qh = __funnelshift_r(r.q.x, r.q.y, 16);
    ternary_values4(trits4(in_qh ? qh : r.q.x, ternary::pow3(trit(g, 0))), d, y);
    ternary_values4(trits4(in_qh ? qh : r.q.y, ternary::pow3(trit(g, 1))), d, y + 4);
  }
};

// tq1_0 dequantized a warp's four blocks at a time through shared memory. Lane j (0..7) of a block does
// the same share of each of its three parts: qs[4j..4j+3] with all five trits (20 values), qs[32+2j..+1]
// (10 values), and qh[j % 4]'s trits 2(j/4), 2(j/4)+1 (2 values): 32 values of uniform work from 5 loads
// (the 8-value decoder above loads d and 8 bytes for every 8 values), then the warp stores the four blocks
// contiguously. A block has only three values, -d, ±0 and +d: 16-bit outputs are those values' bits,
// picked per value by a byte permute. 0.80 of copy as a "runs" decoder, whose per-run choices of bytes
// and trit cost more than the decoding.
namespace tq1_0_by_lanes {
// The value indices lane j writes, with the byte and trit each one comes from: checked below against
// ternary::tq1_0_place, the layout the CPU walks.
LOWBIT_HOST_DEVICE constexpr int part_a(int j, int t, int k) { return 32 * t + 4 * j + k; }  // byte 4j + k, trit t
LOWBIT_HOST_DEVICE constexpr int part_b(int j, int t, int k) { return 160 + 16 * t + 2 * j + k; }  // byte 32 + 2j + k
LOWBIT_HOST_DEVICE constexpr int part_c(int j, int n) { return 240 + 8 * (j / 4) + 4 * n + j % 4; }  // byte 48 + j % 4, trit 2(j/4) + n

constexpr bool follows_the_layout() {
  bool seen[256] = {};
  auto mark = [&](int v, int byte, int trit) {
    const ternary::TritPlace p = ternary::tq1_0_place(v);
    if (seen[v] || p.byte != byte || p.trit != trit) return false;
    return seen[v] = true;
  };
  for (int j = 0; j < 8; ++j) {
    for (int t = 0; t < 5; ++t)
      for (int k = 0; k < 4; ++k)
        if (!mark(part_a(j, t, k), 4 * j + k, t) || (k < 2 && !mark(part_b(j, t, k), 32 + 2 * j + k, t))) return false;
    for (int n = 0; n < 2; ++n)
      if (!mark(part_c(j, n), 48 + j % 4, 2 * (j / 4) + n)) return false;
  }
  for (bool s : seen)
    if (!s) return false;
  return true;
}
static_assert(follows_the_layout());

struct Raw { uint32_t d, a, b, qh; };
__device__ __forceinline__ Raw load(const uint8_t* block, int j) {
  return {ld16(block + 52), ld32_a2(block + 4 * j), ld16(block + 32 + 2 * j), block[48 + j % 4]};
}

// The block's three values as 16-bit bits (bytes 2x, 2x + 1 of (low, high) for trit + 1 = x), or as floats.
template <DType T>
struct Values {
  uint32_t low = 0, high = 0;
  float d;
  __device__ explicit Values(float scale) : d(scale) {
    if constexpr (T != DType::f32) {
      low = pack2(ternary::value(-1, d), ternary::value(0, d), T);
      high = pack2(ternary::value(1, d), 0.0f, T);
    }
  }
  // Values of trits + 1 in bytes 0 and 1 of x (the selector nibbles 2x, 2x + 1 per value).
  __device__ uint32_t two_bits(uint32_t x) const { return __byte_perm(low, high, (x & 0xffffu) * 0x22u + 0x1010u); }
};

template <DType T>
using Element = typename OutTraits<T>::Element;

// Four values from four trits + 1 (bytes of x) at stage[p], p a multiple of 4.
template <DType T>
__device__ __forceinline__ void put4(Element<T>* stage, int p, uint32_t x, const Values<T>& v) {
  if constexpr (T == DType::f32) {
    float y[4];
    ternary_values4(x, v.d, y);
    *reinterpret_cast<float4*>(stage + p) = make_float4(y[0], y[1], y[2], y[3]);
  } else {
    *reinterpret_cast<uint2*>(stage + p) = make_uint2(v.two_bits(x), v.two_bits(x >> 16));
  }
}
// Two values from trits + 1 in bytes 0 and 1 of x, at stage[p], p even.
template <DType T>
__device__ __forceinline__ void put2(Element<T>* stage, int p, uint32_t x, const Values<T>& v) {
  if constexpr (T == DType::f32) {
    *reinterpret_cast<float2*>(stage + p) = make_float2(mul_rn(code_minus(x, 0, 1.0f), v.d), mul_rn(code_minus(x, 1, 1.0f), v.d));
  } else {
    *reinterpret_cast<uint32_t*>(stage + p) = v.two_bits(x);
  }
}
template <DType T>
__device__ __forceinline__ void put1(Element<T>* stage, int p, uint32_t x, const Values<T>& v) {
  if constexpr (T == DType::f32) stage[p] = mul_rn(code_minus(x, 0, 1.0f), v.d);
  else stage[p] = uint16_t(v.two_bits(x));
}

template <DType T>
__device__ __forceinline__ void decode(const Raw& r, int j, Element<T>* stage) {
  const Values<T> v(half_bits_to_float(r.d));
#pragma unroll
  for (int t = 0; t < 5; ++t) put4<T>(stage, part_a(j, t, 0), trits4(r.a, ternary::pow3(t)), v);
  const uint32_t b = __byte_perm(r.b, 0, 0x4140u);  // qs[32 + 2j] and qs[33 + 2j] as bytes 0 and 2
#pragma unroll
  for (int t = 0; t < 5; ++t) {
    const uint32_t x = trits4(b, ternary::pow3(t));
    put2<T>(stage, part_b(j, t, 0), __byte_perm(x, 0, 0x4420u), v);  // bytes 0 and 2 to 0 and 1
  }
  const uint32_t n0 = 2 * (j / 4), x = trits4(r.qh | r.qh << 16, ternary::pow3(n0));  // trit n0 in byte 0
  const uint32_t x1 = trits4(r.qh | r.qh << 16, ternary::pow3(n0 + 1));
  put1<T>(stage, part_c(j, 0), x & 0xffu, v);
  put1<T>(stage, part_c(j, 1), x1 & 0xffu, v);
}
}  // namespace tq1_0_by_lanes

template <DType T>
__global__ void __launch_bounds__(kGgmlThreads) dequantize_tq1_0_kernel(const uint8_t* __restrict__ blocks, int64_t n_blocks,
                                                                        void* __restrict__ out) {
  using namespace tq1_0_by_lanes;
  using E = Element<T>;
  constexpr int kInFlight = 2, kWarps = kGgmlThreads / 32;
  // A block's 256 values padded to 288 in the stage, so the two blocks of a half-warp's 8-byte stores
  // fall in different banks; a block is kUnits 16-byte units there, kPad more between blocks.
  constexpr int kStride = 288, kUnits = 256 * int(sizeof(E)) / 16, kPad = 32 * int(sizeof(E)) / 16;
  __shared__ alignas(16) E stage[kWarps][4 * kStride];
  const int lane = int(threadIdx.x % 32), j = lane % 8;
  E* own = stage[threadIdx.x / 32] + (lane / 8) * kStride;
  const uint4* staged = reinterpret_cast<const uint4*>(stage[threadIdx.x / 32]);
  const int64_t warps = int64_t(gridDim.x) * kWarps;
  for (int64_t first = (blockIdx.x * int64_t(kWarps) + threadIdx.x / 32) * 4; first < n_blocks; first += kInFlight * warps * 4) {
    Raw raw[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t block = first + u * warps * 4 + lane / 8;
      if (block < n_blocks) raw[u] = load(blocks + size_t(block) * sizeof(ggml::BlockTq1_0), j);
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t round = first + u * warps * 4;  // the warp's first block this round
      if (round >= n_blocks) break;
      if (round + lane / 8 < n_blocks) decode<T>(raw[u], j, own);
      __syncwarp();
      const int units = (n_blocks - round < 4 ? int(n_blocks - round) : 4) * kUnits;
      uint4* dst = static_cast<uint4*>(out) + round * kUnits;
      for (int c = lane; c < units; c += 32) dst[c] = staged[c + c / kUnits * kPad];
      __syncwarp();  // the stage is written again next round
    }
  }
}

void launch_dequantize_tq1_0(const void* blocks, int64_t values, DType out_dtype, void* out, cudaStream_t stream) {
  if (!aligned16(out)) return launch_dequantize_ggml<Tq1_0>(blocks, values, out_dtype, out, stream);
  require_block_alignment<Tq1_0>(blocks);
  const int64_t n_blocks = values / 256;
  dispatch_float_dtype(out_dtype, [&]<DType T>() {
    dequantize_tq1_0_kernel<T><<<grid_for<dequantize_tq1_0_kernel<T>>(n_blocks / 4 / 2 * 32 + 32, kGgmlThreads), kGgmlThreads, 0, stream>>>(
        static_cast<const uint8_t*>(blocks), n_blocks, out);
  });
  check(cudaGetLastError());
}

struct Tq2_0 {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockTq2_0);  // 66
  // Value 128h + 32l + m: bits 2l of qs[32h + m], minus 1.
  struct Raw { uint32_t d; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b + 64), ld64_a2(b + 32 * (g / 16) + 8 * (g % 4))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float d = half_bits_to_float(r.d);
    const int shift = 2 * ((g % 16) / 4);
    ternary_values4(r.qs.x >> shift & 0x03030303u, d, y);  // ternary::two_bit_trit, four bytes at once
    ternary_values4(r.qs.y >> shift & 0x03030303u, d, y + 4);
  }
};

// Tq1_0 and Tq2_0 cut a group out of its bytes with arithmetic of their own (constants per branch,
// where walking the layout value by value would double the kernels' code). That arithmetic is checked
// here, at compile time, against the layout rule the CPU's dequantizers walk (ternary::tq1_0_place,
// tq2_0_place), for every value of a block.
constexpr bool tq1_0_groups_follow_the_layout() {
  for (int g = 0; g < 32; ++g)
    for (int k = 0; k < 8; ++k) {
      // Tq1_0::decode takes qh's 4 bytes from bytes 2..5 of the 8 it loads.
      const int byte = Tq1_0::first_byte(g) + (g < 30 ? k : 2 + k % 4);
      const ternary::TritPlace p = ternary::tq1_0_place(8 * g + k);
      if (p.byte != byte || p.trit != Tq1_0::trit(g, k / 4)) return false;
    }
  return true;
}
static_assert(tq1_0_groups_follow_the_layout());

constexpr bool tq2_0_groups_follow_the_layout() {
  for (int g = 0; g < 32; ++g)
    for (int k = 0; k < 8; ++k) {
      const ternary::TwoBitPlace p = ternary::tq2_0_place(8 * g + k);
      if (p.byte != 32 * (g / 16) + 8 * (g % 4) + k || p.shift != 2 * ((g % 16) / 4)) return false;
    }
  return true;
}
static_assert(tq2_0_groups_follow_the_layout());

// Four E2M1 codes (the low nibble of each byte of `codes`) as ggml::fp4_value gives them: the doubled
// value times half_scale. fp4_doubled indexes a table at run time, which nvcc leaves in local memory (the
// types' dequantize ran at 0.06 of copy); here the magnitudes 0, 1, 2, 3, 4, 6, 8, 12 of codes 0-7 are
// bytes of two words that one byte permute picks for all four codes, bit 3 negates, and each signed byte
// becomes its float exactly (x - x = +0: code 8 is +0, as the table's 0 is).
__device__ __forceinline__ void fp4_values4(uint32_t codes, float half_scale, float* y) {
  const uint32_t magnitudes = codes & 0x07070707u, packed = magnitudes | magnitudes >> 4;
  const uint32_t selector = (packed & 0xffu) | (packed >> 8 & 0xff00u);  // the four magnitudes as nibbles
  const uint32_t values = __byte_perm(0x03020100u, 0x0c080604u, selector);
  const uint32_t negative = ((codes >> 3) & 0x01010101u) * 0xffu;
  const uint32_t biased = __vsub4(values ^ negative, negative) ^ 0x80808080u;  // int8 value + 128, per byte
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const float doubled = __fsub_rn(__uint_as_float(__byte_perm(biased, 0x4B000000u, 0x7540u + uint32_t(k))), 8388736.0f);
    y[k] = mul_rn(doubled, half_scale);
  }
}

struct Mxfp4 {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockMxfp4);  // 17: blocks only byte aligned
  static constexpr int kAlign = 1;
  struct Raw { uint32_t e; uint2 qs; };  // values j < 16 low nibbles of qs[j], j + 16 high
  static __device__ Raw load(const uint8_t* b, int g) { return {b[0], ld64_a1(b + 1 + 8 * (g % 2))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float scale = ggml::e8m0_to_f32_half(r.e);
    const int shift = g >= 2 ? 4 : 0;
    fp4_values4(r.qs.x >> shift, scale, y);
    fp4_values4(r.qs.y >> shift, scale, y + 4);
  }
};

struct Nvfp4 {
  static constexpr int kValues = 64, kBytes = sizeof(ggml::BlockNvfp4);  // 36
  // Sub-block s (16 values, groups 2s and 2s + 1): scale d[s], values j < 8 low nibbles of qs[8s + j].
  struct Raw { uint32_t d; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {b[g / 2], ld64_a4(b + 4 + 8 * (g / 2))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float scale = ggml::ue4m3_to_f32_half(r.d);
    const int shift = g % 2 ? 4 : 0;
    fp4_values4(r.qs.x >> shift, scale, y);
    fp4_values4(r.qs.y >> shift, scale, y + 4);
  }
};

struct Q1_0 {
  static constexpr int kValues = 128, kBytes = sizeof(ggml::BlockQ1_0);  // 18
  struct Raw { uint32_t d, bits; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), b[2 + g]}; }
  static __device__ void decode(const Raw& r, int, float (&y)[8]) {
    const uint32_t d_bits = __float_as_uint(half_bits_to_float(r.d));
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = ggml::q1_0_value(d_bits, r.bits >> k);
  }
};

struct Q2_0 {
  static constexpr int kValues = 64, kBytes = sizeof(ggml::BlockQ2_0);  // 18
  struct Raw { uint32_t d, qs; };  // value j: bits 2 (j % 4) of qs[j / 4], minus 1
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld16(b + 2 + 2 * g)}; }
  static __device__ void decode(const Raw& r, int, float (&y)[8]) {
    const float d = half_bits_to_float(r.d);
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = ggml::q2_0_value(r.qs >> (2 * k), d);
  }
};

constexpr CudaFormatKernels kTernaryFp4Kernels[] = {
    {FormatId::tq1_0, &launch_dequantize_tq1_0, &launch_block_matvec<Tq1_0>},
    block_format_kernels<Tq2_0>(FormatId::tq2_0),
    block_format_kernels<Mxfp4>(FormatId::mxfp4), block_format_kernels<Nvfp4>(FormatId::nvfp4),
    block_format_kernels<Q1_0>(FormatId::q1_0),   block_format_kernels<Q2_0>(FormatId::q2_0),
};

}  // namespace

std::span<const CudaFormatKernels> ternary_fp4_kernels() { return kTernaryFp4Kernels; }

}  // namespace lowbit::cuda::detail
