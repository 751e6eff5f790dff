// The fused 4-bit matmul Y = X · Wᵀ (include/lowbit/kernels/cuda/matmul.h): packed codes decoded
// straight into mma.sync fragments.
//
// The idea. An m16n8k16 mma multiplies a 16x16 tile of W (fragment A: lane g*4+c holds rows g and g+8,
// four k positions each) by a 16x8 tile of X. A dot product does not care in which order k runs, so
// each lane may own whatever k positions are convenient as long as X is read in the same order. Here
// lane (g, c) owns 8 contiguous code bytes of rows g and g+8 per 64-wide chunk of k and reads the 16
// activations of the same k positions (two 16-byte loads). The codes become A registers with one shared-memory lookup per byte (nf4/fp4: a table of the
// 256 code pairs as 16-bit pairs, one copy per lane so no bank conflicts) or one byte permute per two
// codes (q4_K: the 16-bit pattern of 128 + q, resp. 1024 + q, is a constant high byte over q).
// Scales stay out of the mma: each 64-wide chunk lies in one nf4/fp4 block (blocksize % 64 == 0) or in
// two q4_K sub-blocks, so the chunk's products are summed per scale group in float32 and scaled once:
//   nf4/fp4: y += s · Σ lut[q]·x;   q4_K: y += d1 · Σ (128+q)·x − (128·d1 + m1) · Σ x.
// q4_K's Σx per 32 activations: for a few tokens from the tensor cores too (the same activation
// fragments times a tile of ones, one more mma per step), for many summed once before the kernel.
// The layout. In the checkpoint's row-major bytes a warp's load of rows g and g+8 touches 8 rows, 8
// cache lines per instruction, and too few bytes are in flight to reach the memory's bandwidth. So
// the weight is re-laid once (prepare_fused): per 16-row tile and pair of chunks (128 k), lane l's 16
// bytes are its 8 bytes of chunk 2p and of chunk 2p+1, rows g (first 512 bytes) and g+8 (next 512):
// every warp load reads 512 contiguous bytes. Scales follow in the same tile order: nf4/fp4 one float
// per row and chunk (the block's scale, recovered from double quantization exactly as dequantization
// does), q4_K the 16-byte block header per row and 256 values. The codes are the checkpoint's bytes;
// only their order changes. An nf4/fp4 row of an odd number of chunks (cols % 128 == 64, e.g. SmolLM2's
// 576) ends in a half-empty pair: its missing chunk is laid out as zero codes with scale 0, and the
// kernel reads zeros for its activations instead of reading past the row.
// Warps of a block split k and add their sums in shared memory at the end; a block covers 16·MW
// weight rows and 8·NT tokens.
#include <algorithm>
#include <array>
#include <memory>
#include <string>

#include "bulk_copy.cuh"
#include "codec_common.cuh"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_tables.h"
#include "lowbit/formats/format.h"
#include "lowbit/formats/ggml_kquants.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {
namespace {

namespace kquants = ggml::kquants;

constexpr int kWarps = 8;
constexpr int kThreads = 32 * kWarps;
constexpr int kChunk = 64;  // k positions per chunk: four mma steps of 16

__constant__ std::array<float, 16> kNf4Values = bnb::tables::kNf4Code;
__constant__ std::array<float, 16> kFp4Values = bnb::tables::kFp4KernelLut;
__constant__ std::array<float, 256> kNestedMap = bnb::tables::kDynamicMapSigned;

template <DType T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  if constexpr (T == DType::bf16)
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ float low_half_to_float(uint32_t pair, DType t) {
  return t == DType::bf16 ? __uint_as_float(pair << 16) : __half2float(__ushort_as_half(uint16_t(pair)));
}
__device__ __forceinline__ float high_half_to_float(uint32_t pair, DType t) {
  return t == DType::bf16 ? __uint_as_float(pair & 0xffff0000u) : __half2float(__ushort_as_half(uint16_t(pair >> 16)));
}
__device__ __forceinline__ uint16_t float_to_16bit(float v, DType t) {
  if (t == DType::bf16) return __bfloat16_as_ushort(__float2bfloat16_rn(v));
  return __half_as_ushort(__float2half_rn(v));
}
// Two floats as float_to_16bit rounds each, `low` in the low half: one cvt.rn.{bf16,f16}x2.f32.
__device__ __forceinline__ uint32_t floats_to_16bit_pair(float low, float high, DType t) {
  if (t == DType::bf16) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(low, high);
    return *reinterpret_cast<const uint32_t*>(&v);
  }
  const __half2 v = __floats2half2_rn(low, high);
  return *reinterpret_cast<const uint32_t*>(&v);
}

// ---- where things live in the fused layout ----

constexpr int kPair = 2 * kChunk;  // k positions per tile load

// Pairs of chunks per row in the tiled layout: the last one may hold a single chunk.
__host__ __device__ inline int64_t pair_count(int64_t cols) { return (cols + kPair - 1) / kPair; }

// Byte offset of lane `lane`'s 16 bytes for tile t, pair p, half h (rows g or g + 8).
__host__ __device__ inline int64_t tiled_code_offset(int64_t tile, int64_t pair, int64_t pairs, int h, int lane) {
  return ((tile * pairs + pair) * 2 + h) * 512 + lane * 16;
}
// Index of the per-(row, chunk) scale entry: tile t, pair p, row g of a half, half h, chunk e of the
// pair; a row group's four entries (rows g and g + 8, both chunks) are contiguous.
__host__ __device__ inline int64_t tiled_scale_index(int64_t tile, int64_t pair, int64_t pairs, int h, int g, int e) {
  return (((tile * pairs + pair) * 8 + g) * 2 + h) * 2 + e;
}

// ---- the two formats: how codes become A registers, what scales them ----

// bitsandbytes nf4/fp4: byte i of a row holds codes 2i (high nibble) and 2i + 1. Lane c's 8 bytes of a
// chunk are codes [16c, 16c + 16); mma step s takes bytes 2s (k 16c+4s, +1) and 2s+1 (k +2, +3).
struct Bnb4bitFormat {
  static constexpr int kGroups = 1;  // scale groups per chunk
  static constexpr bool kHasOffset = false;
  const uint8_t* codes;        // tiled
  const float* chunk_scales;   // tiled: each chunk's block scale (double quant: already recovered)
  bool fp4;

  // Per lane a copy of the 256 code pairs as 16-bit pairs.
  static constexpr size_t kTableBytes = 256 * 32 * 4;

  template <DType T>
  __device__ void prepare(uint32_t* table) const {
    // Thread e computes code pair e once and writes its 32 copies as 8 16-byte stores, rotated so
    // that the 8 threads of a store wavefront hit different banks.
    const float* values = fp4 ? kFp4Values.data() : kNf4Values.data();
    for (int e = threadIdx.x; e < 256; e += kThreads) {
      const uint32_t v = uint32_t(float_to_16bit(values[e >> 4], T)) | uint32_t(float_to_16bit(values[e & 15], T)) << 16;
      uint4* copies = reinterpret_cast<uint4*>(table + e * 32);
#pragma unroll
      for (int k = 0; k < 8; ++k) copies[(k + e) % 8] = make_uint4(v, v, v, v);
    }
  }
  __host__ __device__ static constexpr int x_offset(int c, int half) { return 16 * c + 8 * half; }
  // Byte k of a word indexes the table at byte offset (byte << 7) | (lane << 2): one shift and one
  // masked or per lookup.
  template <int K>
  __device__ static uint32_t table_offset(uint32_t word, uint32_t lane4) {
    const uint32_t shifted = K == 0 ? word << 7 : word >> (8 * K - 7);
    return (shifted & 0x7f80u) | lane4;
  }
  template <DType T>
  __device__ static void a_pair(uint2 q, int step, const uint32_t* table, uint32_t lane4, uint32_t& lo, uint32_t& hi) {
    const uint32_t word = step < 2 ? q.x : q.y;
    const char* base = reinterpret_cast<const char*>(table);
    if (step & 1) {
      lo = *reinterpret_cast<const uint32_t*>(base + table_offset<2>(word, lane4));
      hi = *reinterpret_cast<const uint32_t*>(base + table_offset<3>(word, lane4));
    } else {
      lo = *reinterpret_cast<const uint32_t*>(base + table_offset<0>(word, lane4));
      hi = *reinterpret_cast<const uint32_t*>(base + table_offset<1>(word, lane4));
    }
  }
  using Raw = float2;  // the pair's two chunk scales
  // Where row group g's scales of a tile start; pair p, half h is then 32p + 2h floats further.
  __device__ const void* scale_base(int64_t tile, int64_t pairs, int g) const {
    return chunk_scales + tiled_scale_index(tile, 0, pairs, 0, g, 0);
  }
  __device__ static Raw load_scale(const void* base, int pair, int h) {
    return __ldg(reinterpret_cast<const float2*>(static_cast<const float*>(base) + 32 * pair + 2 * h));
  }
  // Chunk e's scale of rows g (h = 0) and g + 8 (h = 1).
  template <DType T>
  __device__ void scales_of_chunk(const Raw (&raw)[2], int e, int64_t, int, float (&scale)[2][1], float (&)[2][1]) const {
#pragma unroll
    for (int h = 0; h < 2; ++h) scale[h][0] = e == 0 ? raw[h].x : raw[h].y;
  }

  // As the wide kernel reads it (matmul_4bit_wide.cuh): values dequantized into A registers.
  static constexpr int kStagedScaleBytes = 128;  // a tile's 32 chunk scales of one pair
  __device__ const void* staged_scales(int64_t tile, int64_t pair, int64_t pairs) const {
    return chunk_scales + tiled_scale_index(tile, pair, pairs, 0, 0, 0);
  }
  __device__ void prepare_lut(float* lut) const {
    if (threadIdx.x < 16) lut[threadIdx.x] = (fp4 ? kFp4Values : kNf4Values)[threadIdx.x];
  }
  struct Factors {
    float scale[2];  // rows g and g + 8
  };
  template <DType T>
  __device__ Factors chunk_factors(const uint8_t* staged, int e, int64_t, int lane) const {
    const float* s = reinterpret_cast<const float*>(staged) + tiled_scale_index(0, 0, 1, 0, lane / 4, e);
    return {{s[0], s[2]}};
  }
  // Step st of chunk e: per row half h the bytes the fused kernel's a_pair takes, each code's
  // value_4bit rounded to 16 bits as dequantize_4bit rounds it. The table is read at byte offsets
  // 4·code, made for a word's eight codes at once by two shifts and masks, then one byte extract each.
  template <DType T>
  __device__ static void dequantized_a(const uint4 (&q)[2], int e, int st, const Factors& f, const float* lut, uint32_t (&a)[4]) {
    const uint8_t* table = reinterpret_cast<const uint8_t*>(lut);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = e == 0 ? (st < 2 ? q[h].x : q[h].y) : (st < 2 ? q[h].z : q[h].w);
      const uint32_t high = (word >> 2) & 0x3c3c3c3cu, low = (word << 2) & 0x3c3c3c3cu;  // 4·code per byte
#pragma unroll
      for (int part = 0; part < 2; ++part) {
        const int b = 2 * (st & 1) + part;
        const float first = *reinterpret_cast<const float*>(table + __byte_perm(high, 0, 0x4440 | b));
        const float second = *reinterpret_cast<const float*>(table + __byte_perm(low, 0, 0x4440 | b));
        a[2 * part + h] = floats_to_16bit_pair(bnb::value_4bit(first, f.scale[h]), bnb::value_4bit(second, f.scale[h]), T);
      }
    }
  }
};

// ggml q4_K: 144-byte blocks of 256 values (d, dmin as f16, 12 bytes of 6-bit scales and mins, 128
// bytes of codes). Codes byte l of sub-chunk j (32 bytes) holds value 64j + l (low nibble) and
// 64j + 32 + l (high). Lane c's 8 bytes hold values [8c, 8c+8) and [32+8c, 32+8c+8) of the chunk:
// steps 0-1 take the low nibbles (scale group 0), steps 2-3 the high ones (group 1).
struct Q4KFormat {
  static constexpr int kGroups = 2;
  static constexpr bool kHasOffset = true;
  static constexpr size_t kTableBytes = 0;
  const uint8_t* codes;   // tiled
  const uint4* headers;   // tiled: [tile][256-value block][16 rows]
  int64_t cols;
  const float* xsums;     // Σx over every 32 activations, [tokens rounded up to 32][cols / 32], 0 past the last;
                          // null: from the tensor cores

  template <DType T>
  __device__ void prepare(uint32_t*) const {}
  __host__ __device__ static constexpr int x_offset(int c, int half) { return 8 * c + 32 * half; }
  template <DType T>
  __device__ static void a_pair(uint2 q, int step, const uint32_t*, uint32_t, uint32_t& lo, uint32_t& hi) {
    const uint32_t word = (step & 1) ? q.y : q.x;
    const uint32_t nibbles = (step < 2 ? word : word >> 4) & 0x0f0f0f0fu;
    // 16-bit 128 + q (bf16) or 1024 + q (f16): the high byte is a constant, the low byte q.
    constexpr uint32_t high = T == DType::bf16 ? 0x43u : 0x64u;
    lo = __byte_perm(nibbles, high, 0x4140);
    hi = __byte_perm(nibbles, high, 0x4342);
  }
  template <DType T>
  __device__ static constexpr float code_offset() { return T == DType::bf16 ? 128.0f : 1024.0f; }
  using Raw = uint4;  // the row's block header: d, dmin and the 6-bit scales (both chunks share it)
  // Where row g's headers of a tile start; pair p, half h is then 16·(p / 2) + 8h headers further.
  __device__ const void* scale_base(int64_t tile, int64_t, int g) const { return headers + tile * (cols / 256) * 16 + g; }
  __device__ static Raw load_scale(const void* base, int pair, int h) {
    return __ldg(static_cast<const uint4*>(base) + 16 * (pair / 2) + 8 * h);
  }
  // Chunk `chunk`'s scales d·sc and offset terms −(offset·d·sc + dmin·m) of rows g and g + 8 (h), for
  // its sub-blocks 2·(chunk % 4) and +1 (group grp); sc, m, d·sc and dmin·m by ggml::kquants' rules, the
  // CPU dequantizer's. The four lanes of row pair g hold the same two headers and need the same four
  // (h, grp) results: lane c makes the one for h = c / 2, grp = c % 2, and the four are exchanged by
  // shuffles (a lane decoding all four spent more instructions on scales than on the codes).
  template <DType T>
  __device__ void scales_of_chunk(const Raw (&headers)[2], int, int64_t chunk, int lane, float (&scale)[2][2], float (&bias)[2][2]) const {
    const int c = lane & 3;
    const Raw header = (c >> 1) ? headers[1] : headers[0];
    const int j = 2 * int(chunk % 4) + (c & 1), shift = 8 * (j % 4);
    const kquants::ScaleMin sm =
        kquants::scale_min_k4((header.y >> shift) & 0xffu, (header.z >> shift) & 0xffu, (header.w >> shift) & 0xffu, j);
    const float d1 = kquants::sub_block_factor(__half2float(__ushort_as_half(uint16_t(header.x))), sm.scale);
    const float m1 = kquants::sub_block_factor(__half2float(__ushort_as_half(uint16_t(header.x >> 16))), sm.min);
    const float own_bias = -(code_offset<T>() * d1 + m1);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      scale[k >> 1][k & 1] = __shfl_sync(0xffffffffu, d1, (lane & ~3) | k);
      bias[k >> 1][k & 1] = __shfl_sync(0xffffffffu, own_bias, (lane & ~3) | k);
    }
  }

  // As the wide kernel reads it (matmul_4bit_wide.cuh): values d·q − m dequantized into A registers.
  static constexpr int kStagedScaleBytes = 256;  // a tile's 16 headers of the pair's 256-value block
  __device__ const void* staged_scales(int64_t tile, int64_t pair, int64_t) const {
    return headers + (tile * (cols / 256) + pair / 2) * 16;
  }
  __device__ void prepare_lut(float*) const {}
  struct Factors {
    float d[2][2], m[2][2];  // [row half][scale group]: d·sc and dmin·m of the chunk's two sub-blocks
  };
  // The four lanes of a row pair share the work as in scales_of_chunk.
  template <DType T>
  __device__ Factors chunk_factors(const uint8_t* staged, int, int64_t chunk, int lane) const {
    const int c = lane & 3;
    const uint4 header = reinterpret_cast<const uint4*>(staged)[lane / 4 + 8 * (c >> 1)];
    const int j = 2 * int(chunk % 4) + (c & 1), shift = 8 * (j % 4);
    const kquants::ScaleMin sm =
        kquants::scale_min_k4((header.y >> shift) & 0xffu, (header.z >> shift) & 0xffu, (header.w >> shift) & 0xffu, j);
    const float d1 = kquants::sub_block_factor(__half2float(__ushort_as_half(uint16_t(header.x))), sm.scale);
    const float m1 = kquants::sub_block_factor(__half2float(__ushort_as_half(uint16_t(header.x >> 16))), sm.min);
    Factors f;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      f.d[k >> 1][k & 1] = __shfl_sync(0xffffffffu, d1, (lane & ~3) | k);
      f.m[k >> 1][k & 1] = __shfl_sync(0xffffffffu, m1, (lane & ~3) | k);
    }
    return f;
  }
  // Step st of chunk e: the nibbles a_pair takes, each d·q − m (ggml::kquants' rule) rounded to 16 bits.
  // A code becomes a float exactly as 2^23 + q (its bits 0x4b0000qq) minus 2^23.
  template <DType T>
  __device__ static void dequantized_a(const uint4 (&q)[2], int e, int st, const Factors& f, const float*, uint32_t (&a)[4]) {
    const int grp = st / 2;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const uint32_t word = e == 0 ? ((st & 1) ? q[h].y : q[h].x) : ((st & 1) ? q[h].w : q[h].z);
      const uint32_t nibbles = (st < 2 ? word : word >> 4) & 0x0f0f0f0fu;
      float v[4];
#pragma unroll
      for (int b = 0; b < 4; ++b)
        v[b] = kquants::value_scale_min(f.d[h][grp], __uint_as_float(__byte_perm(nibbles, 0x4b00u, 0x5440u | b)) - 8388608.0f,
                                        f.m[h][grp]);
      a[h] = floats_to_16bit_pair(v[0], v[1], T);
      a[2 + h] = floats_to_16bit_pair(v[2], v[3], T);
    }
  }
};

// The sum of activations [32s, 32s + 32) of `token` in float32, 0 past the last token.
template <DType T>
__device__ float sum32(const uint16_t* x, int64_t tokens, int64_t cols, int64_t token, int64_t s) {
  if (token >= tokens) return 0.0f;
  const uint4* v = reinterpret_cast<const uint4*>(x + token * cols + s * 32);
  float sum = 0;
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const uint4 w = __ldg(v + k);
    for (uint32_t pair : {w.x, w.y, w.z, w.w}) sum += low_half_to_float(pair, T) + high_half_to_float(pair, T);
  }
  return sum;
}

// ---- the kernel ----

// A pair of chunks' codes, scales and activations for one lane: loaded for U pairs before any is used.
template <class Format, int MW, int NT>
struct PairData {
  uint4 q[MW][2];                     // codes of rows g and g + 8 of each 16-row tile, both chunks
  typename Format::Raw scale[MW][2];  // and what their scales are made of
  uint4 x[NT][2][2];                  // per 8-token tile and chunk: token g's 16 activations
};

// Per lane, where its codes, scales and activations of the current tile start (pairs advance them).
template <class Format, int MW, int NT>
struct LaneBases {
  const uint8_t* codes[MW];
  const void* scales[MW];
  const uint16_t* x[NT];  // null past the last token
};

template <class Format, int MW, int NT>
__device__ __forceinline__ LaneBases<Format, MW, NT> lane_bases(const Format& format, const uint16_t* x, int64_t tokens,
                                                                int64_t cols, int64_t tile0, int64_t token0, int lane) {
  const int g = lane / 4;
  const int64_t pairs = pair_count(cols);
  LaneBases<Format, MW, NT> b;
#pragma unroll
  for (int m = 0; m < MW; ++m) {
    b.codes[m] = format.codes + tiled_code_offset(tile0 + m, 0, pairs, 0, lane);
    b.scales[m] = format.scale_base(tile0 + m, pairs, g);
  }
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const int64_t token = token0 + 8 * n + g;
    b.x[n] = token < tokens ? x + token * cols + Format::x_offset(lane % 4, 0) : nullptr;
  }
  return b;
}

template <class Format, DType T, int MW, int NT>
__device__ __forceinline__ void load_pair(const LaneBases<Format, MW, NT>& b, int pair, int64_t cols,
                                          PairData<Format, MW, NT>& d) {
  constexpr int kHalfStride = Format::x_offset(0, 1) - Format::x_offset(0, 0);
#pragma unroll
  for (int m = 0; m < MW; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      d.q[m][h] = __ldg(reinterpret_cast<const uint4*>(b.codes[m] + pair * 1024 + h * 512));
      d.scale[m][h] = Format::load_scale(b.scales[m], pair, h);
    }
#pragma unroll
  for (int n = 0; n < NT; ++n)
#pragma unroll
    for (int e = 0; e < 2; ++e)
#pragma unroll
      for (int h = 0; h < 2; ++h)
        d.x[n][e][h] = b.x[n] && pair * kPair + e * kChunk < cols
                           ? __ldg(reinterpret_cast<const uint4*>(b.x[n] + pair * kPair + e * kChunk + h * kHalfStride))
                           : make_uint4(0, 0, 0, 0);
}

// Chunk e of a pair: its products, summed per scale group, scaled into acc.
template <class Format, DType T, int MW, int NT>
__device__ __forceinline__ void multiply_chunk(const Format& format, const PairData<Format, MW, NT>& d, int e,
                                               const uint32_t* table, const float* xsums, int64_t chunk, int lane,
                                               float (&acc)[MW][NT][4]) {
  constexpr int G = Format::kGroups, kStepsPerGroup = 4 / G;
  const int c = lane % 4;
  // q4_K's offset term: Σx per scale group for the C fragment's tokens 2c, 2c+1, from the sums over
  // every 32 activations of the block's tokens (xsums points at its first token's) or, without them,
  // the same activation fragments times a tile of ones (every row of that product is the same). On
  // the H100 the mma beat a per-block prologue by 5-29% at 1-8 tokens (docs/benchmarks.md).
  float xsum[G][NT][2] = {};
  if constexpr (Format::kHasOffset) {
    if (!xsums) {
      constexpr uint32_t kOnes = T == DType::bf16 ? 0x3f803f80u : 0x3c003c00u;
      constexpr uint32_t ones[4] = {kOnes, kOnes, kOnes, kOnes};
      float sums[G][NT][4] = {};
#pragma unroll
      for (int step = 0; step < 4; ++step)
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const uint4 v = d.x[n][e][step / 2];
          mma_16816<T>(sums[step / kStepsPerGroup][n], ones, (step & 1) ? v.z : v.x, (step & 1) ? v.w : v.y);
        }
#pragma unroll
      for (int grp = 0; grp < G; ++grp)
#pragma unroll
        for (int n = 0; n < NT; ++n) xsum[grp][n][0] = sums[grp][n][0], xsum[grp][n][1] = sums[grp][n][1];
    } else {
      const int64_t per_token = format.cols / 32;
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int grp = 0; grp < G; ++grp)
#pragma unroll
          for (int v = 0; v < 2; ++v) xsum[grp][n][v] = xsums[(8 * n + 2 * c + v) * per_token + 2 * chunk + grp];
    }
  }
  float scale[MW][2][G], bias[MW][2][G];
#pragma unroll
  for (int m = 0; m < MW; ++m) format.template scales_of_chunk<T>(d.scale[m], e, chunk, lane, scale[m], bias[m]);

  // A scale group's steps summed in float32, then scaled into acc: one group's sums live at a time.
#pragma unroll
  for (int grp = 0; grp < G; ++grp) {
    float part[MW][NT][4] = {};
#pragma unroll
    for (int step = grp * kStepsPerGroup; step < (grp + 1) * kStepsPerGroup; ++step)
#pragma unroll
      for (int m = 0; m < MW; ++m) {
        uint32_t a[4];
        const uint2 q0 = e == 0 ? make_uint2(d.q[m][0].x, d.q[m][0].y) : make_uint2(d.q[m][0].z, d.q[m][0].w);
        const uint2 q1 = e == 0 ? make_uint2(d.q[m][1].x, d.q[m][1].y) : make_uint2(d.q[m][1].z, d.q[m][1].w);
        Format::template a_pair<T>(q0, step, table, uint32_t(lane) << 2, a[0], a[2]);
        Format::template a_pair<T>(q1, step, table, uint32_t(lane) << 2, a[1], a[3]);
#pragma unroll
        for (int n = 0; n < NT; ++n) {
          const uint4 v = d.x[n][e][step / 2];
          mma_16816<T>(part[m][n], a, (step & 1) ? v.z : v.x, (step & 1) ? v.w : v.y);
        }
      }
#pragma unroll
    for (int m = 0; m < MW; ++m)
#pragma unroll
      for (int h = 0; h < 2; ++h)  // C rows g (values 0, 1) and g + 8 (values 2, 3)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int v = 0; v < 2; ++v) {
            float& out = acc[m][n][2 * h + v];
            out = fmaf(scale[m][h][grp], part[m][n][2 * h + v], out);
            if constexpr (Format::kHasOffset) out = fmaf(bias[m][h][grp], xsum[grp][n][v], out);
          }
  }
}

template <int MW, int NT>
constexpr size_t reduce_bytes() { return size_t(kWarps) * MW * NT * 4 * 32 * sizeof(float); }

// Where a product goes: y in the activations' 16-bit type, or in float32 (added to what y holds with
// `accumulate`: the model runtime's residual stream, with no 16-bit rounding and no second kernel).
struct FusedOutput {
  void* y = nullptr;
  bool f32 = false, accumulate = false;
};

// Blocks loop over 16·MW-row tiles (so the table is built once per block); in a tile, warp w takes
// pairs of chunks w, w + kWarps, ... and U of them at a time.
template <class Format, DType T, int MW, int NT, int U, int MinBlocks>
__global__ void __launch_bounds__(kThreads, MinBlocks) fused_matmul_kernel(Format format, const uint16_t* __restrict__ x,
                                                                int64_t tokens, int64_t rows, int64_t cols,
                                                                FusedOutput out) {
  extern __shared__ uint4 shared_raw[];
  uint32_t* table = reinterpret_cast<uint32_t*>(shared_raw);
  float* partial = reinterpret_cast<float*>(reinterpret_cast<char*>(shared_raw) + Format::kTableBytes);
  format.template prepare<T>(table);
  const int64_t token0 = int64_t(blockIdx.x) * 8 * NT;
  // q4_K's Σx: made before the kernel for many tokens, by the tensor cores for a few.
  const float* xsums = nullptr;
  if constexpr (Format::kHasOffset)
    if (format.xsums) xsums = format.xsums + token0 * (cols / 32);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pairs = pair_count(cols), tiles = rows / (16 * MW);
  constexpr int kValues = MW * NT * 4;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t row0 = tile * 16 * MW;
    float acc[MW][NT][4] = {};
    const LaneBases<Format, MW, NT> bases = lane_bases<Format, MW, NT>(format, x, tokens, cols, tile * MW, token0, lane);
    for (int base = warp; base < pairs; base += kWarps * U) {
      PairData<Format, MW, NT> d[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u * kWarps < pairs) load_pair<Format, T, MW, NT>(bases, base + u * kWarps, cols, d[u]);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u * kWarps < pairs)
#pragma unroll
          for (int e = 0; e < 2; ++e)
            multiply_chunk<Format, T, MW, NT>(format, d[u], e, table, xsums, 2 * (base + u * kWarps) + e, lane, acc);
    }

    // The warps' partial sums meet in shared memory.
#pragma unroll
    for (int m = 0; m < MW; ++m)
#pragma unroll
      for (int n = 0; n < NT; ++n)
#pragma unroll
        for (int i = 0; i < 4; ++i) partial[(warp * kValues + (m * NT + n) * 4 + i) * 32 + lane] = acc[m][n][i];
    __syncthreads();
    for (int e = threadIdx.x; e < kValues * 32; e += kThreads) {
      float sum = 0;
#pragma unroll
      for (int w = 0; w < kWarps; ++w) sum += partial[w * kValues * 32 + e];
      const int value = e / 32, l = e % 32, i = value % 4, mn = value / 4;
      const int m = mn / NT, n = mn % NT;
      const int64_t row = row0 + 16 * m + l / 4 + 8 * (i / 2);
      const int64_t token = token0 + 8 * n + 2 * (l % 4) + (i % 2);
      if (token >= tokens) continue;
      if (out.f32) {
        float& y = static_cast<float*>(out.y)[token * rows + row];
        y = out.accumulate ? __fadd_rn(y, sum) : sum;
      } else {
        static_cast<uint16_t*>(out.y)[token * rows + row] = float_to_16bit(sum, T);
      }
    }
    __syncthreads();  // partial is rewritten by the next tile
  }
}

int sm_count() {
  static int sms = 0;
  if (sms == 0) {
    int device = 0;
    check(cudaGetDevice(&device));
    check(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  }
  return sms;
}

template <class Format, DType T, int MW, int NT, int U, int MinBlocks = 1>
void launch(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, const FusedOutput& y,
            cudaStream_t stream) {
  constexpr auto kernel = fused_matmul_kernel<Format, T, MW, NT, U, MinBlocks>;
  constexpr size_t shared = Format::kTableBytes + reduce_bytes<MW, NT>();
  static_assert(shared <= 200 * 1024);
  static bool configured = false;  // per instantiation (one device assumed)
  if (!configured) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
    configured = true;
  }
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared));
  per_sm = std::max(per_sm, 1);
  const int sms = sm_count();
  const int64_t token_tiles = (tokens + 8 * NT - 1) / (8 * NT), row_tiles = rows / (16 * MW);
  // Enough row-tile blocks for one resident wave, never more than there are tiles.
  const int64_t wave = std::max<int64_t>(1, int64_t(per_sm) * sms / token_tiles);
  const dim3 grid(unsigned(token_tiles), unsigned(std::min<int64_t>({row_tiles, wave, 65535})));
  kernel<<<grid, kThreads, shared, stream>>>(format, static_cast<const uint16_t*>(x), tokens, rows, cols,
                                             y);
  check(cudaGetLastError());
}

// Tile shapes by token count: one 8-token tile and 16 rows per block for decoding (more blocks to
// spread the weight over the SMs), wider tiles as the activations grow.
template <class Format, DType T>
void dispatch_tokens(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, const FusedOutput& y,
                     cudaStream_t stream) {
  // Up to 16 tokens: two 16-row tiles per warp when that still leaves two row tiles per SM, else one
  // (measured on the H100: 14336x4096 prefers two, 4096x14336 one). With one tile, two pairs in flight
  // per warp at two blocks per SM beat one pair at three (H200, 2026-12-03: 4096x14336 nf4 1.81x ->
  // 1.93x cuBLAS bf16, 4096x4096 1.81x -> 1.86x, q4_K +2-3%); with two tiles, one pair stays best.
  const bool two_tiles = rows % 32 == 0 && rows / 32 >= 2 * sm_count();
  if (tokens <= 8) {
    if (two_tiles) launch<Format, T, 2, 1, 1, 2>(format, x, tokens, rows, cols, y, stream);
    else launch<Format, T, 1, 1, 2, 2>(format, x, tokens, rows, cols, y, stream);
  } else if (tokens <= 16) {
    if (two_tiles) launch<Format, T, 2, 2, 1, 2>(format, x, tokens, rows, cols, y, stream);
    else launch<Format, T, 1, 2, 1, 2>(format, x, tokens, rows, cols, y, stream);
  } else if (rows % 32 != 0) {
    launch<Format, T, 1, 2, 2>(format, x, tokens, rows, cols, y, stream);
  } else {
    launch<Format, T, 2, 4, 1>(format, x, tokens, rows, cols, y, stream);
  }
}

template <class Format>
void dispatch(const Format& format, DType dtype, const void* x, int64_t tokens, int64_t rows, int64_t cols, const FusedOutput& y,
              cudaStream_t stream) {
  if (dtype == DType::bf16) dispatch_tokens<Format, DType::bf16>(format, x, tokens, rows, cols, y, stream);
  else if (dtype == DType::f16) dispatch_tokens<Format, DType::f16>(format, x, tokens, rows, cols, y, stream);
  else throw Error("GPU 4-bit matmul: activations must be bf16 or f16, got " + std::string(dtype_name(dtype)));
}

#include "matmul_4bit_wide.cuh"

// q4_K's Σx for many tokens: sums[t][s] = sum32(token t, s), before the kernel.
template <DType T>
__global__ void sum_activations(const uint16_t* __restrict__ x, int64_t tokens, int64_t padded_tokens, int64_t cols,
                                float* __restrict__ sums) {
  const int64_t per_token = cols / 32;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < padded_tokens * per_token;
       i += int64_t(gridDim.x) * blockDim.x)
    sums[i] = sum32<T>(x, tokens, cols, i / per_token, i % per_token);
}

// ---- re-laying a weight into tile order (once) ----

// Source bytes of lane `lane`'s 8-byte slice of (row, chunk), for each format.
struct BnbCodeSource {
  const uint8_t* packed;
  int64_t cols;
  __device__ uint2 operator()(int64_t row, int64_t chunk, int c) const {
    return *reinterpret_cast<const uint2*>(packed + row * (cols / 2) + chunk * (kChunk / 2) + 8 * c);
  }
};
struct Q4KCodeSource {
  const uint8_t* blocks;
  int64_t cols;
  __device__ uint2 operator()(int64_t row, int64_t chunk, int c) const {
    return *reinterpret_cast<const uint2*>(blocks + (row * (cols / 256) + chunk / 4) * 144 + 16 + 32 * (chunk % 4) + 8 * c);
  }
};

template <class Source>
__global__ void tile_codes(Source source, int64_t rows, int64_t cols, uint8_t* __restrict__ tiled) {
  const int64_t pairs = pair_count(cols), items = rows / 16 * pairs * 64;  // 64 = 2 halves x 32 lanes
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const int lane = int(i % 32), h = int(i / 32 % 2);
    const int64_t pair = i / 64 % pairs, tile = i / 64 / pairs;
    const int64_t row = tile * 16 + lane / 4 + 8 * h;
    const bool second = (2 * pair + 1) * kChunk < cols;  // false in a row's half-empty last pair
    const uint2 a = source(row, 2 * pair, lane % 4), b = second ? source(row, 2 * pair + 1, lane % 4) : make_uint2(0, 0);
    *reinterpret_cast<uint4*>(tiled + tiled_code_offset(tile, pair, pairs, h, lane)) = make_uint4(a.x, a.y, b.x, b.y);
  }
}

// One scale per (row, chunk) in tile order: the chunk's block scale, plain or recovered from double
// quantization exactly as dequantization recovers it (bnb_4bit.cu's NestedScale).
__global__ void tile_chunk_scales(const float* __restrict__ absmax, NestedScales nested, int64_t rows, int64_t cols,
                                  int log2_blocksize, float* __restrict__ tiled) {
  const int64_t pairs = pair_count(cols), items = rows * 2 * pairs;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / (2 * pairs), chunk = i % (2 * pairs);
    const int64_t block = (row * cols + chunk * kChunk) >> log2_blocksize;
    const float scale = chunk * kChunk >= cols ? 0.0f  // the empty half of a row's last pair
                        : nested.codes ? bnb::nested_block_scale(kNestedMap[nested.codes[block]],
                                                                 nested.nested_absmax[block / bnb::kNestedBlocksize],
                                                                 *nested.offset)
                                     : absmax[block];
    tiled[tiled_scale_index(row / 16, chunk / 2, pairs, int(row % 16 / 8), int(row % 8), int(chunk % 2))] = scale;
  }
}

// q4_K block headers in tile order: [tile][block][16 rows].
__global__ void tile_q4k_headers(const uint8_t* __restrict__ blocks, int64_t rows, int64_t cols, uint4* __restrict__ tiled) {
  const int64_t per_row = cols / 256, items = rows * per_row;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < items; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = i / per_row, block = i % per_row;
    tiled[(row / 16 * per_row + block) * 16 + row % 16] = *reinterpret_cast<const uint4*>(blocks + i * 144);
  }
}

std::shared_ptr<void> device_alloc(size_t bytes) {
  void* p = nullptr;
  check(cudaMalloc(&p, bytes));
  return std::shared_ptr<void>(p, [](void* q) { cudaFree(q); });
}

int log2_of(int64_t blocksize) {
  int log2 = 0;
  while ((int64_t(1) << log2) < blocksize) ++log2;
  return log2;
}

void check_shape(const char* what, int64_t rows, int64_t cols, int64_t col_multiple, const void* x, const void* y,
                 int64_t tokens) {
  auto fail = [&](const std::string& why) {
    throw Error(std::string("GPU ") + what + " matmul: " + why + " (weight " + std::to_string(rows) + "x" +
                std::to_string(cols) + ", " + std::to_string(tokens) + " tokens)");
  };
  if (rows <= 0 || cols <= 0 || tokens < 0) fail("empty or negative shape");
  if (rows % 16 != 0) fail("rows must be a multiple of 16");
  if (cols % col_multiple != 0) fail("cols must be a multiple of " + std::to_string(col_multiple));
  if (tokens > 0 && (!detail::aligned16(x) || !detail::aligned16(y)))
    fail("activations and output must be 16-byte aligned");
}

}  // namespace

Fused4bitWeight prepare_fused(const Bnb4bitWeight& w, cudaStream_t stream) {
  check_shape("nf4/fp4", w.rows, w.cols, kChunk, nullptr, nullptr, 0);
  wide_4bit_available(64);  // the device is asked once, here, outside any stream capture (wide_kernel_runs)
  if (w.blocksize < kChunk || (w.blocksize & (w.blocksize - 1)) != 0)
    throw Error("GPU nf4/fp4 matmul: blocksize " + std::to_string(w.blocksize) +
                " is not a power of two >= 64 (dequantize and use a 16-bit matmul instead)");
  if (!w.packed || (!w.absmax && !w.nested.codes) || (reinterpret_cast<uintptr_t>(w.packed) & 7) != 0)
    throw Error("GPU nf4/fp4 matmul: packed codes (8-byte aligned) and scales are required");
  Fused4bitWeight fused;
  fused.format = w.type == bnb::QuantType::fp4 ? Fused4bitWeight::Format::fp4 : Fused4bitWeight::Format::nf4;
  fused.rows = w.rows, fused.cols = w.cols;
  const size_t code_bytes = size_t(w.rows * pair_count(w.cols) * kPair / 2), chunks = size_t(w.rows * 2 * pair_count(w.cols));
  fused.memory = device_alloc(code_bytes + chunks * 4);
  auto* base = static_cast<uint8_t*>(fused.memory.get());
  fused.codes = base, fused.scales = base + code_bytes;
  tile_codes<<<1024, 256, 0, stream>>>(BnbCodeSource{w.packed, w.cols}, w.rows, w.cols, base);
  tile_chunk_scales<<<1024, 256, 0, stream>>>(w.absmax, w.nested, w.rows, w.cols, log2_of(w.blocksize),
                                              reinterpret_cast<float*>(base + code_bytes));
  check(cudaGetLastError());
  return fused;
}

Fused4bitWeight prepare_fused(const Q4KWeight& w, cudaStream_t stream) {
  check_shape("q4_K", w.rows, w.cols, 256, nullptr, nullptr, 0);
  wide_4bit_available(64);  // as above
  if (!w.blocks || (reinterpret_cast<uintptr_t>(w.blocks) & 15) != 0)
    throw Error("GPU q4_K matmul: the blocks must be 16-byte aligned");
  Fused4bitWeight fused;
  fused.format = Fused4bitWeight::Format::q4_K;
  fused.rows = w.rows, fused.cols = w.cols, fused.source_q4_K = w;
  const size_t code_bytes = size_t(w.rows * w.cols / 2), header_bytes = size_t(w.rows * (w.cols / 256)) * 16;
  fused.memory = device_alloc(code_bytes + header_bytes);
  auto* base = static_cast<uint8_t*>(fused.memory.get());
  fused.codes = base, fused.scales = base + code_bytes;
  const auto* blocks = static_cast<const uint8_t*>(w.blocks);
  tile_codes<<<1024, 256, 0, stream>>>(Q4KCodeSource{blocks, w.cols}, w.rows, w.cols, base);
  tile_q4k_headers<<<1024, 256, 0, stream>>>(blocks, w.rows, w.cols, reinterpret_cast<uint4*>(base + code_bytes));
  check(cudaGetLastError());
  return fused;
}

namespace {
// A fused weight's two regions, both in tile order, so rows of several weights stack by region.
size_t code_bytes(const Fused4bitWeight& w) {
  return w.format == Fused4bitWeight::Format::q4_K ? size_t(w.rows * w.cols / 2) : size_t(w.rows * pair_count(w.cols) * kPair / 2);
}
size_t scale_bytes(const Fused4bitWeight& w) {
  return w.format == Fused4bitWeight::Format::q4_K ? size_t(w.rows * (w.cols / 256)) * 16 : size_t(w.rows * 2 * pair_count(w.cols)) * 4;
}
}  // namespace

size_t Fused4bitWeight::bytes() const { return code_bytes(*this) + scale_bytes(*this); }

Fused4bitWeight stack_fused(std::span<const Fused4bitWeight* const> parts, cudaStream_t stream) {
  if (parts.empty()) throw Error("stack_fused: no weights to stack");
  Fused4bitWeight stacked;
  stacked.format = parts[0]->format, stacked.cols = parts[0]->cols;
  for (const Fused4bitWeight* part : parts) {
    if (!part->codes || part->format != stacked.format || part->cols != stacked.cols)
      throw Error("stack_fused: the weights must be prepared, of one format and one row length");
    stacked.rows += part->rows;
  }
  const size_t codes = code_bytes(stacked);
  stacked.memory = device_alloc(stacked.bytes());
  auto* base = static_cast<uint8_t*>(stacked.memory.get());
  stacked.codes = base, stacked.scales = base + codes;
  size_t code_at = 0, scale_at = codes;
  for (const Fused4bitWeight* part : parts) {
    check(cudaMemcpyAsync(base + code_at, part->codes, code_bytes(*part), cudaMemcpyDeviceToDevice, stream));
    check(cudaMemcpyAsync(base + scale_at, part->scales, scale_bytes(*part), cudaMemcpyDeviceToDevice, stream));
    code_at += code_bytes(*part), scale_at += scale_bytes(*part);
  }
  return stacked;
}

Fused4bitWeight fused_rows(const Fused4bitWeight& w, int64_t first, int64_t count) {
  if (!w.codes || first < 0 || count <= 0 || first % 16 != 0 || count % 16 != 0 || first + count > w.rows)
    throw Error("fused_rows: rows " + std::to_string(first) + " + " + std::to_string(count) + " of a prepared weight of " +
                std::to_string(w.rows) + " rows, in whole tiles of 16");
  Fused4bitWeight before = w, part = w;
  before.rows = first, part.rows = count;
  part.codes = w.codes + code_bytes(before);
  part.scales = static_cast<const uint8_t*>(w.scales) + scale_bytes(before);
  part.source_q4_K = {};
  return part;
}

namespace {

// Back from tile order: item i is 8-value group i % 8 of chunk (i / 8) % chunks of a row (4 code bytes of
// lane slice i % 8 / 2), so a warp's stores are one contiguous 512 bytes and its loads whole 64-byte runs
// of the tiles, as in dequantize_4bit, whose arithmetic this is: each code's table value times the chunk's
// block scale. Four items' loads in flight, 32-bit indices (the launch checks the count: 64-bit divisions
// cost more than the rest). A thread per 16 values, storing 32 bytes, ran at 0.6 of copy.
template <DType T>
__global__ void __launch_bounds__(256) untile_bnb_values(const uint8_t* __restrict__ codes, const float* __restrict__ scales,
                                                         bool fp4, int64_t rows, int64_t cols, void* __restrict__ out) {
  __shared__ float table[16];
  if (threadIdx.x < 16) table[threadIdx.x] = fp4 ? kFp4Values[threadIdx.x] : kNf4Values[threadIdx.x];
  __syncthreads();
  constexpr int kInFlight = 4;
  const uint32_t pairs = uint32_t(pair_count(cols)), chunks = uint32_t(cols / kChunk), items = uint32_t(rows) * chunks * 8;
  const uint32_t stride = gridDim.x * blockDim.x;
  for (uint32_t base = blockIdx.x * blockDim.x + threadIdx.x; base < items; base += kInFlight * stride) {
    uint32_t q[kInFlight];
    float s[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint32_t i = base + u * stride;
      if (i >= items) break;
      const uint32_t group = i % 8, row = i / 8 / chunks, chunk = i / 8 - row * chunks;
      const uint32_t tile = row / 16, h = row % 16 / 8, g = row % 8, pair = chunk / 2, e = chunk % 2;
      q[u] = *reinterpret_cast<const uint32_t*>(codes + tiled_code_offset(tile, pair, pairs, int(h), int(4 * g + group / 2)) +
                                                8 * e + 4 * (group % 2));
      s[u] = scales[tiled_scale_index(tile, pair, pairs, int(h), int(g), int(e))];
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const uint32_t i = base + u * stride;
      if (i >= items) break;
      float y[8];
#pragma unroll
      for (int k = 0; k < 4; ++k) {  // byte k holds codes 2k (high nibble) and 2k + 1
        y[2 * k] = bnb::value_4bit(table[(q[u] >> (8 * k + 4)) & 15], s[u]);
        y[2 * k + 1] = bnb::value_4bit(table[(q[u] >> (8 * k)) & 15], s[u]);
      }
      detail::store8<T>(out, int64_t(i), y);  // group (row * cols + chunk * 64 + 8 (i % 8)) / 8 = i
    }
  }
}

}  // namespace

void dequantize_fused(const Fused4bitWeight& w, DType dtype, void* out, cudaStream_t stream) {
  if (!w.codes || w.format == Fused4bitWeight::Format::q4_K)
    throw Error("dequantize_fused: a prepared nf4/fp4 weight is required (q4_K dequantizes from its blocks: dequantize_ggml)");
  if ((dtype != DType::bf16 && dtype != DType::f16) || !detail::aligned16(out))
    throw Error("dequantize_fused: the output must be bf16 or f16 and 16-byte aligned");
  const auto* scales = static_cast<const float*>(w.scales);
  const bool fp4 = w.format == Fused4bitWeight::Format::fp4;
  const int64_t items = w.rows * (w.cols / kChunk) * 8;
  if (items >= (int64_t(1) << 32) - 4 * 8 * 256 * sm_count())  // no index wraps, grid-stride steps included
    throw Error("dequantize_fused: " + std::to_string(w.rows) + "x" + std::to_string(w.cols) + " is past the kernel's 32-bit indices");
  const unsigned grid = unsigned(std::min<int64_t>((items + 1023) / 1024, 8 * sm_count()));
  if (dtype == DType::bf16) untile_bnb_values<DType::bf16><<<grid, 256, 0, stream>>>(w.codes, scales, fp4, w.rows, w.cols, out);
  else untile_bnb_values<DType::f16><<<grid, 256, 0, stream>>>(w.codes, scales, fp4, w.rows, w.cols, out);
  check(cudaGetLastError());
}

namespace {

// An sm_90 GPU running an sm_90a image (one device assumed), found once (a thread-safe static). Asked
// first by prepare_fused, at load time: reading the device's flag is a synchronous copy, which a stream
// capture would not allow. A failed read leaves the kernel unused: slower, never wrong.
bool wide_kernel_runs() {
  static const bool runs = [] {
    int device = 0, major = 0, minor = 0, compiled = 0;
    check(cudaGetDevice(&device));
    check(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    check(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    if (major != 9 || minor != 0) return false;
    if (cudaMemcpyFromSymbol(&compiled, wide::compiled_in, sizeof(int)) != cudaSuccess) {
      (void)cudaGetLastError();
      return false;
    }
    return compiled == 1;
  }();
  return runs;
}

template <DType T>
void wide_product(const Fused4bitWeight& w, const void* x, int64_t tokens, const FusedOutput& y, cudaStream_t stream) {
  if (w.format == Fused4bitWeight::Format::q4_K)
    wide::dispatch<Q4KFormat, T>(Q4KFormat{w.codes, static_cast<const uint4*>(w.scales), w.cols, nullptr}, x, tokens, w.rows,
                                 w.cols, y, stream);
  else
    wide::dispatch<Bnb4bitFormat, T>(
        Bnb4bitFormat{w.codes, static_cast<const float*>(w.scales), w.format == Fused4bitWeight::Format::fp4}, x, tokens, w.rows,
        w.cols, y, stream);
}

// The wide kernel from kWideTokens on where it serves the weight, or always when asked (throwing where it cannot).
void fused_product(const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, const FusedOutput& y, cudaStream_t stream,
                   bool wide_only = false) {
  check_shape(w.format == Fused4bitWeight::Format::q4_K ? "q4_K" : "nf4/fp4", w.rows, w.cols, kChunk, x, y.y, tokens);
  if (!w.codes) throw Error("GPU 4-bit matmul: the weight was not prepared (prepare_fused)");
  if (dtype != DType::bf16 && dtype != DType::f16)
    throw Error("GPU 4-bit matmul: activations must be bf16 or f16, got " + std::string(dtype_name(dtype)));
  if (tokens == 0) return;
  const bool wide = wide_4bit_available(w.rows);
  if (wide_only || (wide && tokens >= kWideTokens)) {
    if (!wide)
      throw Error("GPU 4-bit matmul: the wide kernel needs an sm_90 GPU, an sm_90a build and rows % 64 == 0 (" +
                  std::to_string(w.rows) + " rows)");
    if (dtype == DType::bf16) wide_product<DType::bf16>(w, x, tokens, y, stream);
    else wide_product<DType::f16>(w, x, tokens, y, stream);
    return;
  }
  if (w.format == Fused4bitWeight::Format::q4_K) {
    const auto* headers = static_cast<const uint4*>(w.scales);
    if (tokens <= 8) {  // Σx by the tensor cores
      dispatch(Q4KFormat{w.codes, headers, w.cols, nullptr}, dtype, x, tokens, w.rows, w.cols, y, stream);
      return;
    }
    // More tokens: once, before the kernel, in stream-ordered memory (graph-capturable, pooled).
    const int64_t padded = (tokens + 31) / 32 * 32, count = padded * (w.cols / 32);
    float* sums = nullptr;
    check(cudaMallocAsync(reinterpret_cast<void**>(&sums), size_t(count) * sizeof(float), stream));
    const unsigned grid = unsigned(std::min<int64_t>((count + 255) / 256, 4 * sm_count()));
    if (dtype == DType::bf16)
      sum_activations<DType::bf16><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(x), tokens, padded, w.cols, sums);
    else if (dtype == DType::f16)
      sum_activations<DType::f16><<<grid, 256, 0, stream>>>(static_cast<const uint16_t*>(x), tokens, padded, w.cols, sums);
    dispatch(Q4KFormat{w.codes, headers, w.cols, sums}, dtype, x, tokens, w.rows, w.cols, y, stream);
    check(cudaFreeAsync(sums, stream));
    return;
  }
  const Bnb4bitFormat format{w.codes, static_cast<const float*>(w.scales), w.format == Fused4bitWeight::Format::fp4};
  dispatch(format, dtype, x, tokens, w.rows, w.cols, y, stream);
}

}  // namespace

bool wide_4bit_available(int64_t rows) { return rows % 64 == 0 && wide_kernel_runs(); }

int64_t dequantize_tokens(const Fused4bitWeight& w) { return wide_4bit_available(w.rows) ? kWideDequantizeTokens : kDequantizeTokens; }

void matmul_4bit_wide(const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, void* y, cudaStream_t stream) {
  fused_product(w, dtype, x, tokens, {y, false, false}, stream, true);
}

void matmul_4bit_wide_f32(const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, float* y, bool accumulate,
                          cudaStream_t stream) {
  fused_product(w, dtype, x, tokens, {y, true, accumulate}, stream, true);
}

void matmul_4bit_fused(const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, void* y, cudaStream_t stream) {
  fused_product(w, dtype, x, tokens, {y, false, false}, stream);
}

void matmul_4bit_fused_f32(const Fused4bitWeight& w, DType dtype, const void* x, int64_t tokens, float* y, bool accumulate,
                           cudaStream_t stream) {
  fused_product(w, dtype, x, tokens, {y, true, accumulate}, stream);
}

}  // namespace lowbit::cuda
