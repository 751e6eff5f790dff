// ggml's i-quants on the GPU: dequantize iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s,
// iq4_nl and iq4_xs as lowbit::ggml::dequantize_row_* does (layouts: include/lowbit/formats/ggml_iq*.h).
// A 256-value super-block has 32 groups of 8 values; in every 256-value type group g is subgroup
// l = g % 4 of the 32-value group ib = g / 4, which is exactly one grid point of iq1/iq2 (two of iq3).
// The values are the CPU's own decode rules (namespaces iq1 ... iq4 of the family headers), over the
// same grids: the CPU decoders' constexpr tables, copied into device memory at compile time. What is
// here is how a group's bytes are loaded.
#include <array>
#include <cstddef>

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

struct Iq2Xxs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq2Xxs);  // 66
  struct Raw { uint32_t d, index, aux; };  // aux: the group's signs (7 bits a subgroup) and scale (top 4)
  static __device__ Raw load(const uint8_t* b, int g) {
    const int ib = g / 4;
    return {ld16(b), b[2 + 8 * ib + g % 4], ld32_a2(b + 6 + 8 * ib)};
  }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    ggml::iq2::decode_xxs_subgroup(kIq2xxsGrid.v, half_bits_to_float(r.d), r.index, r.aux, g % 4, y);
  }
};

struct Iq2Xs {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq2Xs);  // 74
  struct Raw { uint32_t d, q, scales; };  // q: 9-bit grid index, 7 sign bits
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), ld16(b + 2 + 2 * g), b[66 + g / 4]}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    ggml::iq2::decode_xs_subgroup(kIq2xsGrid.v, half_bits_to_float(r.d), r.q, r.scales, g % 4, y);
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
    ggml::iq2::decode_s_subgroup(kIq2sGrid.v, half_bits_to_float(r.d), r.low, r.signs, r.qh, r.scales, g % 4, y);
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
    ggml::iq3::decode_xxs_subgroup(kIq3XxsGrid.v, half_bits_to_float(r.d), r.indices & 255, r.indices >> 8, r.aux, g % 4,
                                   y);
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
    ggml::iq3::decode_s_subgroup(kIq3SGrid.v, half_bits_to_float(r.d), r.low & 255, r.low >> 8, r.qh, r.signs, r.scales,
                                 g / 4, g % 4, y);
  }
};

struct Iq1S {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq1S);  // 50
  struct Raw { uint32_t d, low, qh; };
  static __device__ Raw load(const uint8_t* b, int g) { return {ld16(b), b[2 + g], ld16(b + 34 + 2 * (g / 4))}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    ggml::iq1::decode_s_subgroup(kIq1Grid.v, half_bits_to_float(r.d), r.low, r.qh, g % 4, y);
  }
};

struct Iq1M {
  static constexpr int kValues = 256, kBytes = sizeof(ggml::BlockIq1M);  // 56: 8-byte aligned blocks
  struct Raw { uint2 scales; uint32_t low, qh; };  // scales: the four u16 words, d's nibbles on top
  static __device__ Raw load(const uint8_t* b, int g) { return {ld64(b + 48), b[g], b[32 + g / 2]}; }
  static __device__ void decode(const Raw& r, int g, float (&y)[8]) {
    const uint32_t sc[4] = {r.scales.x & 0xffff, r.scales.x >> 16, r.scales.y & 0xffff, r.scales.y >> 16};
    ggml::iq1::decode_m_subgroup(kIq1Grid.v, half_bits_to_float(ggml::iq1m_d_bits(sc)), sc, r.low, r.qh, g / 4, g % 4, y);
  }
};

// iq4's codebook entries plus 128 as bytes, four to a word (entries `first` ..): codes are looked up in
// registers by byte permutes, four at a time, where a table in memory costs a load and a quarter-rate
// conversion per value.
constexpr uint32_t iq4_biased_word(int first) {
  uint32_t w = 0;
  for (int k = 0; k < 4; ++k) w |= uint32_t(ggml::kIq4Codebook[first + k] + 128) << (8 * k);
  return w;
}
// Four codes (one a byte, < 16) to their biased entries: a permute of entries 0-7 and one of 8-15 by the
// codes' low 3 bits, then each byte from the half bit 3 names.
__device__ __forceinline__ uint32_t iq4_lookup4(uint32_t codes) {
  const uint32_t pairs = codes | (codes >> 4);                        // codes 0|1 in byte 0, 2|3 in byte 2
  const uint32_t select = __byte_perm(pairs, 0, 0x0020) & 0x7777u;  // four 3-bit byte indices
  const uint32_t low = __byte_perm(iq4_biased_word(0), iq4_biased_word(4), select);
  const uint32_t high = __byte_perm(iq4_biased_word(8), iq4_biased_word(12), select);
  const uint32_t upper = ((codes >> 3) & 0x01010101u) * 0xffu;
  return (low & ~upper) | (high & upper);
}
// iq4: 32-value sub-blocks nibble-packed like q4_0 (values j < 16 low nibbles of qs[j], j + 16 high):
// group g % 4 of a sub-block reads qs[8 (g % 2) ..], low nibbles for g % 4 < 2. Each value is
// iq4::value's product, scale times the exact entry.
__device__ __forceinline__ void iq4_values(float scale, uint2 qs, int g, float (&y)[8]) {
  const int shift = g % 4 >= 2 ? 4 : 0;
  const uint32_t entries[2] = {iq4_lookup4((qs.x >> shift) & 0x0f0f0f0fu), iq4_lookup4((qs.y >> shift) & 0x0f0f0f0fu)};
#pragma unroll
  for (int k = 0; k < 8; ++k) y[k] = mul_rn(scale, code_minus(entries[k / 4], k % 4, 128.0f));
}

struct Iq4Nl {
  static constexpr int kValues = 32, kBytes = sizeof(ggml::BlockIq4Nl);  // 18
  static constexpr bool kStagedProduct = false;  // staged: 46 / 52 / 18 us, the 8-value matvec 45 / 50 / 17 (H200)
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
    iq4_values(ggml::iq4::xs_scale<16>(half_bits_to_float(r.d_scales_h), r.scales_l, r.d_scales_h, g / 4), r.qs, g, y);
  }
};

// The same types by runs (ggml_dequantize.cuh): lane task t is 32-value group t of the super-block, its
// run k subgroup k, so the group's shared bytes (scale, signs, high bits) and its four subgroups' indices
// are each loaded once, as wide as the block's alignment allows (the 8-value decoders above load a
// group's shared bytes again for each subgroup, byte by byte). They serve dequantization and the staged
// one-token product; products of more tokens keep the 8-value decoders, and so does iq1_s (its 50-byte
// block by runs: 0.84 of copy, by groups 0.85-0.90).
struct GroupRunTasks {
  static constexpr bool kStaged = true;
  static __device__ __forceinline__ int first_value(int task, int k) { return 32 * task + 8 * k; }
};
// 16-bit field k (0..3) of 8 bytes.
__device__ __forceinline__ uint32_t half_word(const uint2& w, int k) { return ((k < 2 ? w.x : w.y) >> (16 * (k % 2))) & 0xffffu; }

struct Iq2XxsRuns : GroupRunTasks {
  static constexpr int kBytes = Iq2Xxs::kBytes;
  struct Raw { uint32_t d; uint2 q; };  // q: the group's four index bytes, then its signs and scale word
  static __device__ Raw load(const uint8_t* b, int ib) { return {ld16(b), ld64_a2(b + 2 + 8 * ib)}; }
  static __device__ void decode(const Raw& r, int k, int, float (&y)[8]) {
    ggml::iq2::decode_xxs_subgroup(kIq2xxsGrid.v, half_bits_to_float(r.d), byte_of(r.q, k), r.q.y, k, y);
  }
};

struct Iq2XsRuns : GroupRunTasks {
  static constexpr int kBytes = Iq2Xs::kBytes;
  struct Raw { uint32_t d, scales; uint2 q; };
  static __device__ Raw load(const uint8_t* b, int ib) { return {ld16(b), b[66 + ib], ld64_a2(b + 2 + 8 * ib)}; }
  static __device__ void decode(const Raw& r, int k, int, float (&y)[8]) {
    ggml::iq2::decode_xs_subgroup(kIq2xsGrid.v, half_bits_to_float(r.d), half_word(r.q, k), r.scales, k, y);
  }
};

struct Iq2SRuns : GroupRunTasks {
  static constexpr int kBytes = Iq2S::kBytes;
  struct Raw { uint32_t d, low, signs, qh, scales; };  // low, signs: the four subgroups' bytes
  static __device__ Raw load(const uint8_t* b, int ib) {
    return {ld16(b), ld32_a2(b + 2 + 4 * ib), ld32_a2(b + 34 + 4 * ib), b[66 + ib], b[74 + ib]};
  }
  static constexpr int kGridEntries = 1024;  // dequantized from a copy in shared memory (ggml_dequantize.cuh)
  static __device__ const uint64_t* grid() { return kIq2sGrid.v; }
  static __device__ void decode(const Raw& r, int k, int, float (&y)[8], const uint64_t* grid) {
    ggml::iq2::decode_s_subgroup(grid, half_bits_to_float(r.d), (r.low >> 8 * k) & 255, (r.signs >> 8 * k) & 255, r.qh, r.scales,
                                 k, y);
  }
  static __device__ void decode(const Raw& r, int k, int task, float (&y)[8]) { decode(r, k, task, y, kIq2sGrid.v); }
};

struct Iq3XxsRuns : GroupRunTasks {
  static constexpr int kBytes = Iq3Xxs::kBytes;
  struct Raw { uint32_t d, aux; uint2 indices; };  // indices: two grid points' bytes per subgroup
  static __device__ Raw load(const uint8_t* b, int ib) { return {ld16(b), ld32_a2(b + 66 + 4 * ib), ld64_a2(b + 2 + 8 * ib)}; }
  static __device__ void decode(const Raw& r, int k, int, float (&y)[8]) {
    const uint32_t pair = half_word(r.indices, k);
    ggml::iq3::decode_xxs_subgroup(kIq3XxsGrid.v, half_bits_to_float(r.d), pair & 255, pair >> 8, r.aux, k, y);
  }
};

struct Iq3SRuns : GroupRunTasks {
  static constexpr int kBytes = Iq3S::kBytes;
  struct Raw { uint32_t d, qh, signs, scales; uint2 low; };
  static __device__ Raw load(const uint8_t* b, int ib) {
    return {ld16(b), b[66 + ib], ld32_a2(b + 74 + 4 * ib), b[106 + ib / 2], ld64_a2(b + 2 + 8 * ib)};
  }
  static __device__ void decode(const Raw& r, int k, int ib, float (&y)[8]) {
    const uint32_t pair = half_word(r.low, k);
    ggml::iq3::decode_s_subgroup(kIq3SGrid.v, half_bits_to_float(r.d), pair & 255, pair >> 8, r.qh, (r.signs >> 8 * k) & 255,
                                 r.scales, ib, k, y);
  }
};

struct Iq1MRuns : GroupRunTasks {
  static constexpr int kBytes = Iq1M::kBytes;
  struct Raw { uint2 scales; uint32_t low, qh; };  // low: the four subgroups' bytes; qh: two bytes, a nibble each
  static __device__ Raw load(const uint8_t* b, int ib) { return {ld64(b + 48), ld32(b + 4 * ib), ld16(b + 32 + 2 * ib)}; }
  static constexpr int kGridEntries = 2048;  // dequantized from a copy in shared memory (ggml_dequantize.cuh)
  static __device__ const uint64_t* grid() { return kIq1Grid.v; }
  static __device__ void decode(const Raw& r, int k, int ib, float (&y)[8], const uint64_t* grid) {
    const uint32_t sc[4] = {r.scales.x & 0xffff, r.scales.x >> 16, r.scales.y & 0xffff, r.scales.y >> 16};
    ggml::iq1::decode_m_subgroup(grid, half_bits_to_float(ggml::iq1m_d_bits(sc)), sc, (r.low >> 8 * k) & 255,
                                 (r.qh >> 8 * (k / 2)) & 255, ib, k, y);
  }
  static __device__ void decode(const Raw& r, int k, int ib, float (&y)[8]) { decode(r, k, ib, y, kIq1Grid.v); }
};

template <class R, class D>
constexpr CudaFormatKernels runs_dequantize_kernels(FormatId format) {
  return {format, &launch_dequantize_runs<R, D>, &launch_block_matvec<D, R>};
}

constexpr CudaFormatKernels kIquantKernels[] = {
    block_format_kernels<Iq1S>(FormatId::iq1_s),                    runs_dequantize_kernels<Iq1MRuns, Iq1M>(FormatId::iq1_m),
    runs_dequantize_kernels<Iq2XxsRuns, Iq2Xxs>(FormatId::iq2_xxs), runs_dequantize_kernels<Iq2XsRuns, Iq2Xs>(FormatId::iq2_xs),
    runs_dequantize_kernels<Iq2SRuns, Iq2S>(FormatId::iq2_s),       runs_dequantize_kernels<Iq3XxsRuns, Iq3Xxs>(FormatId::iq3_xxs),
    runs_dequantize_kernels<Iq3SRuns, Iq3S>(FormatId::iq3_s),       block_format_kernels<Iq4Nl>(FormatId::iq4_nl),
    block_format_kernels<Iq4Xs>(FormatId::iq4_xs),
};

}  // namespace

std::span<const CudaFormatKernels> iquant_kernels() { return kIquantKernels; }

}  // namespace lowbit::cuda::detail
