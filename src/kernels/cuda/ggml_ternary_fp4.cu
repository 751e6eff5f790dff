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
    block_format_kernels<Tq1_0>(FormatId::tq1_0), block_format_kernels<Tq2_0>(FormatId::tq2_0),
    block_format_kernels<Mxfp4>(FormatId::mxfp4), block_format_kernels<Nvfp4>(FormatId::nvfp4),
    block_format_kernels<Q1_0>(FormatId::q1_0),   block_format_kernels<Q2_0>(FormatId::q2_0),
};

}  // namespace

std::span<const CudaFormatKernels> ternary_fp4_kernels() { return kTernaryFp4Kernels; }

}  // namespace lowbit::cuda::detail
