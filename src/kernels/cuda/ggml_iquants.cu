// ggml's i-quants on the GPU: dequantize iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s,
// iq4_nl and iq4_xs as lowbit::ggml::dequantize_row_* does (layouts: include/lowbit/formats/ggml_iq*.h).
// A 256-value super-block has 32 groups of 8 values; in every 256-value type group g is subgroup
// l = g % 4 of the 32-value group ib = g / 4, which is exactly one grid point of iq1/iq2 (two of iq3).
// The grids are the CPU decoders' own constexpr tables, copied into device memory at compile time.
#include <array>
#include <cstddef>

#include "formats/ggml_iq1_grid.h"
#include "formats/ggml_iq2_grids.h"
#include "formats/ggml_iq3_grids.h"
#include "formats/ggml_iq_signs.h"
#include "ggml_dequantize.cuh"
#include "ggml_matvec.cuh"
#include "lowbit/formats/ggml_iq1.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq3.h"
#include "lowbit/formats/ggml_iq4.h"

namespace lowbit::cuda::detail {
namespace {

// A host constexpr table as a plain array a __device__ variable can be initialised with.
template <class T, size_t N>
struct DeviceTable {
  T v[N];
};
template <class T, size_t N>
constexpr DeviceTable<T, N> device_table(const std::array<T, N>& a) {
  DeviceTable<T, N> t{};
  for (size_t i = 0; i < N; ++i) t.v[i] = a[i];
  return t;
}
template <class T, size_t N>
constexpr DeviceTable<T, N> device_table(const T (&a)[N]) {
  DeviceTable<T, N> t{};
  for (size_t i = 0; i < N; ++i) t.v[i] = a[i];
  return t;
}

__device__ const DeviceTable<uint64_t, 256> kIq2xxsGrid = device_table(ggml::iq2::kIq2xxsGrid);
__device__ const DeviceTable<uint64_t, 512> kIq2xsGrid = device_table(ggml::iq2::kIq2xsGrid);
__device__ const DeviceTable<uint64_t, 1024> kIq2sGrid = device_table(ggml::iq2::kIq2sGrid);
__device__ const DeviceTable<uint64_t, 2048> kIq1Grid = device_table(ggml::kIq1Grid);
__device__ const DeviceTable<uint32_t, 256> kIq3XxsGrid = device_table(ggml::kIq3XxsGrid);
__device__ const DeviceTable<uint32_t, 512> kIq3SGrid = device_table(ggml::kIq3SGrid);
__device__ const DeviceTable<int8_t, 16> kIq4Codebook = device_table(ggml::kIq4Codebook);

constexpr float kIq1Delta = 0.125f;  // IQ1S_DELTA = IQ1M_DELTA (formats/ggml_iq1_search.h)

// The 8th sign bit of iq2_xxs, iq2_xs and iq3_xxs is the parity of the stored 7 (ggml's ksigns_iq2xs).
__device__ __forceinline__ uint32_t even_parity_signs(uint32_t seven) { return seven | uint32_t(__popc(seven) & 1) << 7; }

// y[j] = ±(scale * magnitude j), magnitudes the bytes of a grid point, bit j of `signs` negating.
template <class Word>
__device__ __forceinline__ void signed_point(float scale, Word point, uint32_t signs, float* y) {
#pragma unroll
  for (int j = 0; j < int(sizeof(Word)); ++j) {
    const float v = mul_rn(scale, float(uint32_t(point >> (8 * j)) & 0xff));
    y[j] = (signs >> j) & 1 ? -v : v;
  }
}

// iq2's group scale: d * (0.5 + s) * 0.25, rounded step by step as the CPU does.
__device__ __forceinline__ float iq2_scale(float d, uint32_t s) { return mul_rn(mul_rn(d, 0.5f + float(s)), 0.25f); }

// iq1: y[j] = dl * (grid value j + delta), grid values int8 in {-1, 0, 1}.
__device__ __forceinline__ void iq1_point(uint64_t point, float dl, float delta, float (&y)[8]) {
#pragma unroll
  for (int j = 0; j < 8; ++j) y[j] = mul_rn(dl, add_rn(float(int8_t(uint8_t(point >> (8 * j)))), delta));
}

struct Iq2Xxs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq2Xxs);  // 66
  struct Raw { uint32_t d, index, aux; };  // aux: the group's signs (7 bits a subgroup) and scale (top 4)
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld16(b), b[2 + 8 * ib + g % 4], ld32_a2(b + 6 + 8 * ib)};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int l = g % 4;
    signed_point(iq2_scale(half_bits_to_float(r.d), r.aux >> 28), kIq2xxsGrid.v[r.index],
                 even_parity_signs((r.aux >> (7 * l)) & 127), y);
  }
};

struct Iq2Xs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq2Xs);  // 74
  struct Raw { uint32_t d, q, scales; };  // q: 9-bit grid index, 7 sign bits
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld16(b + 2 + 2 * g), b[66 + g / 4]}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const uint32_t s = (r.scales >> (4 * ((g % 4) / 2))) & 15;
    signed_point(iq2_scale(half_bits_to_float(r.d), s), kIq2xsGrid.v[r.q & 511], even_parity_signs(r.q >> 9), y);
  }
};

struct Iq2S {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq2S);  // 82
  struct Raw { uint32_t d, low, signs, qh, scales; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld16(b), b[2 + g], b[2 + 32 + g], b[66 + ib], b[74 + ib]};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int l = g % 4;
    const uint32_t index = r.low | ((r.qh >> (2 * l)) & 3) << 8;
    signed_point(iq2_scale(half_bits_to_float(r.d), (r.scales >> (4 * (l / 2))) & 15), kIq2sGrid.v[index], r.signs, y);
  }
};

struct Iq3Xxs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq3Xxs);  // 98
  struct Raw { uint32_t d, indices, aux; };  // indices: the two grid points' bytes
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld16(b), ld16(b + 2 + 2 * g), ld32_a2(b + 66 + 4 * ib)};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float db = mul_rn(mul_rn(half_bits_to_float(r.d), 0.5f + float(r.aux >> 28)), 0.5f);
    const uint32_t signs = even_parity_signs((r.aux >> (7 * (g % 4))) & 127);
    signed_point(db, kIq3XxsGrid.v[r.indices & 255], signs, y);
    signed_point(db, kIq3XxsGrid.v[r.indices >> 8], signs >> 4, y + 4);
  }
};

struct Iq3S {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq3S);  // 110
  struct Raw { uint32_t d, low, qh, signs, scales; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld16(b), ld16(b + 2 + 2 * g), b[66 + ib], b[74 + g], b[106 + ib / 2]};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int ib = g / 4, k = 2 * (g % 4);  // grid points k, k + 1 of the group
    const float db = mul_rn(half_bits_to_float(r.d), float(1 + 2 * int((r.scales >> (4 * (ib % 2))) & 15)));
    signed_point(db, kIq3SGrid.v[(r.low & 255) | ((r.qh >> k) & 1) << 8], r.signs, y);
    signed_point(db, kIq3SGrid.v[(r.low >> 8) | ((r.qh >> (k + 1)) & 1) << 8], r.signs >> 4, y + 4);
  }
};

struct Iq1S {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq1S);  // 50
  struct Raw { uint32_t d, low, qh; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), b[2 + g], ld16(b + 34 + 2 * (g / 4))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const float dl = mul_rn(half_bits_to_float(r.d), float(2 * ((r.qh >> 12) & 7) + 1));
    const float delta = r.qh & 0x8000 ? -kIq1Delta : kIq1Delta;
    iq1_point(kIq1Grid.v[r.low | ((r.qh >> (3 * (g % 4))) & 7) << 8], dl, delta, y);
  }
};

struct Iq1M {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq1M);  // 56: 8-byte aligned blocks
  struct Raw { uint2 scales; uint32_t low, qh; };  // scales: the four u16 words, d's nibbles on top
  static __device__ Raw load(const uint8_t* b, int g) { return {ld64(b + 48), b[g], b[32 + g / 2]}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const uint32_t sc[4] = {r.scales.x & 0xffff, r.scales.x >> 16, r.scales.y & 0xffff, r.scales.y >> 16};
    const int ib = g / 4, l = g % 4;
    const float dl = mul_rn(half_bits_to_float(ggml::iq1m_d_bits(sc)), float(ggml::iq1m_multiplier(sc, ib, l / 2)));
    const uint32_t nibble = r.qh >> (4 * (l % 2));
    iq1_point(kIq1Grid.v[r.low | (nibble & 7) << 8], dl, nibble & 8 ? -kIq1Delta : kIq1Delta, y);
  }
};

// iq4: 32-value sub-blocks nibble-packed like q4_0 (values j < 16 low nibbles of qs[j], j + 16 high):
// group g % 4 of a sub-block reads qs[8 (g % 2) ..], low nibbles for g % 4 < 2.
__device__ __forceinline__ void iq4_values(float scale, uint2 qs, int g, float (&y)[8]) {
  const int shift = g % 4 >= 2 ? 4 : 0;
#pragma unroll
  for (int k = 0; k < 8; ++k) y[k] = mul_rn(scale, float(kIq4Codebook.v[(byte_of(qs, k) >> shift) & 15]));
}

struct Iq4Nl {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockIq4Nl);  // 18
  struct Raw { uint32_t d; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld64_a2(b + 2 + 8 * (g % 2))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) { iq4_values(half_bits_to_float(r.d), r.qs, g, y); }
};

struct Iq4Xs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq4Xs);  // 136: 8-byte aligned blocks
  struct Raw { uint32_t d_scales_h, scales_l; uint2 qs; };
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld32(b), b[4 + ib / 2], ld64(b + 8 + 16 * ib + 8 * (g % 2))};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const int ib = g / 4;
    const int ls = int((r.scales_l >> (4 * (ib % 2))) & 15) | int(((r.d_scales_h >> (16 + 2 * ib)) & 3) << 4);
    iq4_values(mul_rn(half_bits_to_float(r.d_scales_h), float(ls - 32)), r.qs, g, y);
  }
};

constexpr CudaFormatKernels kIquantKernels[] = {
    block_format_kernels<Iq1S>(FormatId::iq1_s),     block_format_kernels<Iq1M>(FormatId::iq1_m),
    block_format_kernels<Iq2Xxs>(FormatId::iq2_xxs), block_format_kernels<Iq2Xs>(FormatId::iq2_xs),
    block_format_kernels<Iq2S>(FormatId::iq2_s),     block_format_kernels<Iq3Xxs>(FormatId::iq3_xxs),
    block_format_kernels<Iq3S>(FormatId::iq3_s),     block_format_kernels<Iq4Nl>(FormatId::iq4_nl),
    block_format_kernels<Iq4Xs>(FormatId::iq4_xs),
};

}  // namespace

std::span<const CudaFormatKernels> iquant_kernels() { return kIquantKernels; }

}  // namespace lowbit::cuda::detail
