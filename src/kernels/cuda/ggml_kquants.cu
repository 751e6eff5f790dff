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
__device__ __forceinline__ void header_factors(const uint4& h, int j, float& dj, float& mj) {
  const int shift = 8 * (j % 4);
  const uint32_t a = (h.y >> shift) & 0xffu, b = (h.z >> shift) & 0xffu, c = (h.w >> shift) & 0xffu;
  const kquants::ScaleMin sm = kquants::scale_min_k4(a, b, c, j);
  dj = kquants::sub_block_factor(half_bits_to_float(h.x), sm.scale);
  mj = kquants::sub_block_factor(half_bits_to_float(h.x >> 16), sm.min);
}

struct Q4K {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockQ4K);  // 144: 16-byte aligned blocks
  static constexpr int kAlign = 16;
  struct Raw { uint4 header; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int j = g / 4;  // values of sub-block j: qs[32 (j / 2) + l], low nibble for even j
    return {*reinterpret_cast<const uint4*>(b), ld64(b + 16 + 32 * (j / 2) + 8 * (g % 4))};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int j = g / 4;
    float dj, mj;
    header_factors(r.header, j, dj, mj);
    const int shift = 4 * (j % 2);
    const uint32_t codes[2] = {(r.qs.x >> shift) & 0x0f0f0f0fu, (r.qs.y >> shift) & 0x0f0f0f0fu};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale_min(dj, code_minus(codes[k / 4], k % 4, 0.0f), mj);
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
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int j = g / 4;
    float dj, mj;
    header_factors(r.header, j, dj, mj);
    const int shift = 4 * (j % 2);  // bit 4 of the code: bit j of qh[l]
    const uint32_t codes[2] = {((r.qs.x >> shift) & 0x0f0f0f0fu) | ((r.qh.x >> j) & 0x01010101u) << 4,
                               ((r.qs.y >> shift) & 0x0f0f0f0fu) | ((r.qh.y >> j) & 0x01010101u) << 4};
#pragma unroll
    for (int k = 0; k < 8; ++k) y[k] = kquants::value_scale_min(dj, code_minus(codes[k / 4], k % 4, 0.0f), mj);
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

constexpr CudaFormatKernels kKquantKernels[] = {
    block_format_kernels<Q2K>(FormatId::q2_K), block_format_kernels<Q3K>(FormatId::q3_K),
    block_format_kernels<Q4K>(FormatId::q4_K), block_format_kernels<Q5K>(FormatId::q5_K),
    block_format_kernels<Q6K>(FormatId::q6_K),
};

}  // namespace

std::span<const CudaFormatKernels> kquant_kernels() { return kKquantKernels; }

}  // namespace lowbit::cuda::detail
