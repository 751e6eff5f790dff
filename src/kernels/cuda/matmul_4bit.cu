// The fused 4-bit matmul Y = X · Wᵀ (include/lowbit/kernels/cuda/matmul.h): packed codes straight
// from the checkpoint's bytes into mma.sync fragments, no re-layout.
//
// The idea. An m16n8k16 mma multiplies a 16x16 tile of W (fragment A: lane g*4+c holds rows g and g+8,
// four k positions each) by a 16x8 tile of X. A dot product does not care in which order k runs, so
// each lane may own whatever k positions are convenient as long as X is read in the same order. Here
// lane (g, c) loads 8 contiguous bytes of rows g and g+8 per 64-wide chunk of k (one 8-byte load each;
// the warp reads whole 32-byte sectors) and the 16 activations of the same k positions (two 16-byte
// loads). The codes become A registers with one shared-memory lookup per byte (nf4/fp4: a table of the
// 256 code pairs as 16-bit pairs, one copy per lane so no bank conflicts) or one byte permute per two
// codes (q4_K: the 16-bit pattern of 128 + q, resp. 1024 + q, is a constant high byte over q).
// Scales stay out of the mma: each 64-wide chunk lies in one nf4/fp4 block (blocksize % 64 == 0) or in
// two q4_K sub-blocks, so the chunk's products are summed per scale group in float32 and scaled once:
//   nf4/fp4: y += s · Σ lut[q]·x;   q4_K: y += d1 · Σ (128+q)·x − (128·d1 + m1) · Σ x.
// Warps of a block split k and add their sums in shared memory at the end; a block covers 16·MW
// weight rows and 8·NT tokens.
#include <algorithm>
#include <array>
#include <string>

#include "codec_common.cuh"
#include "formats/bnb_tables.h"
#include "lowbit/formats/ggml_types.h"
#include "lowbit/kernels/cuda/matmul.h"

namespace lowbit::cuda {
namespace {

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

// ---- the two formats: where a lane's codes and activations live, how codes become A registers ----

// bitsandbytes nf4/fp4: byte i of a row holds codes 2i (high nibble) and 2i + 1. Lane c's 8 bytes of a
// chunk are codes [16c, 16c + 16); mma step s takes bytes 2s (k 16c+4s, +1) and 2s+1 (k +2, +3).
struct Bnb4bitFormat {
  static constexpr int kGroups = 1;  // scale groups per chunk
  static constexpr bool kHasOffset = false;
  const uint8_t* packed;
  const float* absmax;
  const uint8_t* codes;  // double quant when set
  const float* nested_absmax;
  const float* offset;
  int64_t cols;
  int log2_blocksize;
  bool fp4;

  // Per lane a copy of the 256 code pairs, then the nested map and its offset.
  static constexpr size_t kTableBytes = 256 * 32 * 4 + 256 * 4 + 16;

  template <DType T>
  __device__ void prepare(uint32_t* table) const {
    const float* values = fp4 ? kFp4Values.data() : kNf4Values.data();
    for (int i = threadIdx.x; i < 256 * 32; i += kThreads) {
      const int pair = i / 32;
      table[i] = uint32_t(float_to_16bit(values[pair >> 4], T)) | uint32_t(float_to_16bit(values[pair & 15], T)) << 16;
    }
    float* map = reinterpret_cast<float*>(table + 256 * 32);
    if (codes) {
      for (int i = threadIdx.x; i < 256; i += kThreads) map[i] = kNestedMap[i];
      if (threadIdx.x == 0) map[256] = *offset;
    }
  }
  __device__ uint2 load(int64_t row, int64_t chunk, int c) const {
    return __ldg(reinterpret_cast<const uint2*>(packed + row * (cols / 2) + chunk * (kChunk / 2) + 8 * c));
  }
  __device__ static int x_offset(int c, int half) { return 16 * c + 8 * half; }
  template <DType T>
  __device__ static void a_pair(uint2 q, int step, const uint32_t* table, int lane, uint32_t& lo, uint32_t& hi) {
    const uint32_t word = step < 2 ? q.x : q.y;
    const int shift = 16 * (step & 1);
    lo = table[((word >> shift) & 0xff) * 32 + lane];
    hi = table[((word >> (shift + 8)) & 0xff) * 32 + lane];
  }
  // What a chunk's scale is made of, loaded with its codes: the absmax, or the nested code and scale.
  struct Raw {
    float value;
    uint32_t code;
  };
  __device__ Raw load_scale(int64_t row, int64_t chunk) const {
    const int64_t block = (row * cols + chunk * kChunk) >> log2_blocksize;
    if (!codes) return {__ldg(absmax + block), 0};
    return {__ldg(nested_absmax + (block >> 8)), __ldg(codes + block)};
  }
  // The block's scale exactly as dequantization computes it (bnb_4bit.cu's NestedScale).
  template <DType T>
  __device__ void scales(const Raw& raw, int64_t, const uint32_t* table, float (&scale)[1], float (&)[1]) const {
    if (!codes) {
      scale[0] = raw.value;
      return;
    }
    const float* map = reinterpret_cast<const float*>(table + 256 * 32);
    scale[0] = detail::add_rn(detail::mul_ftz(map[raw.code], raw.value), map[256]);
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
  const uint8_t* blocks;
  int64_t cols;

  template <DType T>
  __device__ void prepare(uint32_t*) const {}
  __device__ const uint8_t* block(int64_t row, int64_t chunk) const {
    return blocks + (row * (cols / 256) + chunk / 4) * 144;
  }
  __device__ uint2 load(int64_t row, int64_t chunk, int c) const {
    return __ldg(reinterpret_cast<const uint2*>(block(row, chunk) + 16 + 32 * (chunk % 4) + 8 * c));
  }
  __device__ static int x_offset(int c, int half) { return 8 * c + 32 * half; }
  template <DType T>
  __device__ static void a_pair(uint2 q, int step, const uint32_t*, int, uint32_t& lo, uint32_t& hi) {
    const uint32_t word = (step & 1) ? q.y : q.x;
    const uint32_t nibbles = (step < 2 ? word : word >> 4) & 0x0f0f0f0fu;
    // 16-bit 128 + q (bf16) or 1024 + q (f16): the high byte is a constant, the low byte q.
    constexpr uint32_t high = T == DType::bf16 ? 0x43u : 0x64u;
    lo = __byte_perm(nibbles, high, 0x4140);
    hi = __byte_perm(nibbles, high, 0x4342);
  }
  template <DType T>
  __device__ static constexpr float code_offset() { return T == DType::bf16 ? 128.0f : 1024.0f; }
  using Raw = uint4;  // the block's d, dmin and 6-bit scales: its first 16 bytes
  __device__ Raw load_scale(int64_t row, int64_t chunk) const {
    return __ldg(reinterpret_cast<const uint4*>(block(row, chunk)));
  }
  // Sub-blocks 2·(chunk % 4) and +1: scale d·sc and the offset term −(offset·d·sc + dmin·m), the
  // products rounded as ggml's dequantization rounds them.
  template <DType T>
  __device__ void scales(const Raw& header, int64_t chunk, const uint32_t*, float (&scale)[2], float (&bias)[2]) const {
    const float d = __half2float(__ushort_as_half(uint16_t(header.x))), dmin = __half2float(__ushort_as_half(uint16_t(header.x >> 16)));
    const uint32_t s[3] = {header.y, header.z, header.w};  // scales[0..11]
    auto byte = [&](int i) { return int((s[i / 4] >> (8 * (i % 4))) & 0xff); };
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int i = 2 * int(chunk % 4) + h;
      int sc, m;
      if (i < 4) {
        sc = byte(i) & 63, m = byte(i + 4) & 63;
      } else {
        sc = (byte(i + 4) & 0xf) | ((byte(i - 4) >> 6) << 4);
        m = (byte(i + 4) >> 4) | ((byte(i) >> 6) << 4);
      }
      const float d1 = detail::mul_rn(d, float(sc)), m1 = detail::mul_rn(dmin, float(m));
      scale[h] = d1;
      bias[h] = -(code_offset<T>() * d1 + m1);
    }
  }
};

// ---- the kernel ----

// The chunk's codes and activations for one lane: loaded for U chunks before any is used, so that
// each lane has U times 2·MW + 2·NT loads in flight.
template <class Format, int MW, int NT>
struct ChunkData {
  uint2 q[MW][2];                        // codes of rows g and g + 8 of each 16-row tile
  typename Format::Raw scale[MW][2];     // and what their scales are made of
  uint4 x[NT][2];                        // 16 activations of token g of each 8-token tile
};

template <class Format, DType T, int MW, int NT>
__device__ __forceinline__ void load_chunk(const Format& format, const uint16_t* x, int64_t tokens, int64_t cols,
                                           int64_t row0, int64_t token0, int64_t chunk, int g, int c,
                                           ChunkData<Format, MW, NT>& d) {
#pragma unroll
  for (int m = 0; m < MW; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      d.q[m][h] = format.load(row0 + 16 * m + g + 8 * h, chunk, c);
      d.scale[m][h] = format.load_scale(row0 + 16 * m + g + 8 * h, chunk);
    }
#pragma unroll
  for (int n = 0; n < NT; ++n) {
    const int64_t token = token0 + 8 * n + g;
#pragma unroll
    for (int h = 0; h < 2; ++h)
      d.x[n][h] = token < tokens ? __ldg(reinterpret_cast<const uint4*>(x + token * cols + chunk * kChunk +
                                                                        Format::x_offset(c, h)))
                                 : make_uint4(0, 0, 0, 0);
  }
}

// One chunk's products, summed per scale group, scaled into acc.
template <class Format, DType T, int MW, int NT>
__device__ __forceinline__ void multiply_chunk(const Format& format, const ChunkData<Format, MW, NT>& d, const uint32_t* table,
                                               int64_t row0, int64_t chunk, int lane, float (&acc)[MW][NT][4]) {
  constexpr int G = Format::kGroups, kStepsPerGroup = 4 / G;
  const int c = lane % 4;
  float part[G][MW][NT][4] = {};
#pragma unroll
  for (int step = 0; step < 4; ++step) {
    const int group = step / kStepsPerGroup;
#pragma unroll
    for (int m = 0; m < MW; ++m) {
      uint32_t a[4];
      Format::template a_pair<T>(d.q[m][0], step, table, lane, a[0], a[2]);
      Format::template a_pair<T>(d.q[m][1], step, table, lane, a[1], a[3]);
#pragma unroll
      for (int n = 0; n < NT; ++n) {
        const uint4& v = d.x[n][step / 2];
        mma_16816<T>(part[group][m][n], a, (step & 1) ? v.z : v.x, (step & 1) ? v.w : v.y);
      }
    }
  }

  // Σx per scale group for the C fragment's tokens 2c, 2c+1 (q4_K's offset term).
  float xsum[G][NT][2] = {};
  if constexpr (Format::kHasOffset) {
#pragma unroll
    for (int n = 0; n < NT; ++n)
#pragma unroll
      for (int h = 0; h < G; ++h) {
        const uint32_t w[4] = {d.x[n][h].x, d.x[n][h].y, d.x[n][h].z, d.x[n][h].w};
        float s = 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) s += low_half_to_float(w[i], T) + high_half_to_float(w[i], T);
        s += __shfl_xor_sync(0xffffffffu, s, 1);
        s += __shfl_xor_sync(0xffffffffu, s, 2);  // token g's sum, in all four lanes of g
        xsum[h][n][0] = __shfl_sync(0xffffffffu, s, (2 * c) * 4);
        xsum[h][n][1] = __shfl_sync(0xffffffffu, s, (2 * c + 1) * 4);
      }
  }

#pragma unroll
  for (int m = 0; m < MW; ++m)
#pragma unroll
    for (int h = 0; h < 2; ++h) {  // C rows g (values 0, 1) and g + 8 (values 2, 3)
      float scale[G], bias[G];
      format.template scales<T>(d.scale[m][h], chunk, table, scale, bias);
#pragma unroll
      for (int grp = 0; grp < G; ++grp)
#pragma unroll
        for (int n = 0; n < NT; ++n)
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            float& out = acc[m][n][2 * h + e];
            out = fmaf(scale[grp], part[grp][m][n][2 * h + e], out);
            if constexpr (Format::kHasOffset) out = fmaf(bias[grp], xsum[grp][n][e], out);
          }
    }
}

template <int MW, int NT>
constexpr size_t reduce_bytes() { return size_t(kWarps) * MW * NT * 4 * 32 * sizeof(float); }

// Blocks loop over 16·MW-row tiles (so the table is built once per block); in a tile, warp w takes
// chunks w, w + kWarps, ... and U of them at a time.
template <class Format, DType T, int MW, int NT, int U>
__global__ void __launch_bounds__(kThreads) fused_matmul_kernel(Format format, const uint16_t* __restrict__ x,
                                                                int64_t tokens, int64_t rows, int64_t cols,
                                                                uint16_t* __restrict__ y) {
  extern __shared__ uint4 shared_raw[];
  uint32_t* table = reinterpret_cast<uint32_t*>(shared_raw);
  float* partial = reinterpret_cast<float*>(reinterpret_cast<char*>(shared_raw) + Format::kTableBytes);
  format.template prepare<T>(table);
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, c = lane % 4;
  const int64_t token0 = int64_t(blockIdx.x) * 8 * NT, chunks = cols / kChunk, tiles = rows / (16 * MW);
  constexpr int kValues = MW * NT * 4;
  for (int64_t tile = blockIdx.y; tile < tiles; tile += gridDim.y) {
    const int64_t row0 = tile * 16 * MW;
    float acc[MW][NT][4] = {};
    for (int64_t base = warp; base < chunks; base += kWarps * U) {
      ChunkData<Format, MW, NT> d[U];
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u * kWarps < chunks)
          load_chunk<Format, T, MW, NT>(format, x, tokens, cols, row0, token0, base + u * kWarps, g, c, d[u]);
#pragma unroll
      for (int u = 0; u < U; ++u)
        if (base + u * kWarps < chunks)
          multiply_chunk<Format, T, MW, NT>(format, d[u], table, row0, base + u * kWarps, lane, acc);
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
      if (token < tokens) y[token * rows + row] = float_to_16bit(sum, T);
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

template <class Format, DType T, int MW, int NT, int U>
void launch(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, void* y,
            cudaStream_t stream) {
  constexpr auto kernel = fused_matmul_kernel<Format, T, MW, NT, U>;
  constexpr size_t shared = Format::kTableBytes + reduce_bytes<MW, NT>();
  static int per_sm = 0;  // per instantiation: the occupancy of this kernel (one device assumed)
  const int sms = sm_count();
  if (per_sm == 0) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)));
    check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, shared));
    per_sm = per_sm > 0 ? per_sm : 1;
  }
  const int64_t token_tiles = (tokens + 8 * NT - 1) / (8 * NT), row_tiles = rows / (16 * MW);
  // Enough row-tile blocks for one resident wave, never more than there are tiles.
  const int64_t wave = std::max<int64_t>(1, int64_t(per_sm) * sms / token_tiles);
  const dim3 grid(unsigned(token_tiles), unsigned(std::min<int64_t>({row_tiles, wave, 65535})));
  kernel<<<grid, kThreads, shared, stream>>>(format, static_cast<const uint16_t*>(x), tokens, rows, cols,
                                             static_cast<uint16_t*>(y));
  check(cudaGetLastError());
}

// Tile shapes by token count: one 8-token tile and 16 rows per block for decoding (more blocks to
// spread the weight over the SMs), wider tiles as the activations grow.
template <class Format, DType T>
void dispatch_tokens(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, void* y,
                     cudaStream_t stream) {
  if (tokens <= 8) {
    // Decoding: two 16-row tiles per warp when that still leaves two row tiles per SM, else one
    // (measured on the H100: 14336x4096 prefers two, 4096x14336 one).
    if (rows % 32 == 0 && rows / 32 >= 2 * sm_count()) launch<Format, T, 2, 1, 2>(format, x, tokens, rows, cols, y, stream);
    else launch<Format, T, 1, 1, 4>(format, x, tokens, rows, cols, y, stream);
  }
  else if (rows % 64 != 0) launch<Format, T, 1, 2, 2>(format, x, tokens, rows, cols, y, stream);
  else if (tokens <= 16) launch<Format, T, 4, 2, 1>(format, x, tokens, rows, cols, y, stream);
  else launch<Format, T, 2, 4, 1>(format, x, tokens, rows, cols, y, stream);
}

template <class Format>
void dispatch(const Format& format, DType dtype, const void* x, int64_t tokens, int64_t rows, int64_t cols, void* y,
              cudaStream_t stream) {
  if (dtype == DType::bf16) dispatch_tokens<Format, DType::bf16>(format, x, tokens, rows, cols, y, stream);
  else if (dtype == DType::f16) dispatch_tokens<Format, DType::f16>(format, x, tokens, rows, cols, y, stream);
  else throw Error("GPU 4-bit matmul: activations must be bf16 or f16, got " + std::string(dtype_name(dtype)));
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
  if (!detail::aligned16(x) || !detail::aligned16(y)) fail("activations and output must be 16-byte aligned");
}

}  // namespace

void matmul_4bit_fused(const Bnb4bitWeight& w, DType dtype, const void* x, int64_t tokens, void* y,
                       cudaStream_t stream) {
  check_shape("nf4/fp4", w.rows, w.cols, kChunk, x, y, tokens);
  if (w.blocksize < kChunk || (w.blocksize & (w.blocksize - 1)) != 0)
    throw Error("GPU nf4/fp4 matmul: blocksize " + std::to_string(w.blocksize) +
                " is not a power of two >= 64 (dequantize and use a 16-bit matmul instead)");
  if (!w.packed || (!w.absmax && !w.nested.codes) || (reinterpret_cast<uintptr_t>(w.packed) & 7) != 0)
    throw Error("GPU nf4/fp4 matmul: packed codes (8-byte aligned) and scales are required");
  if (tokens == 0) return;
  int log2_blocksize = 0;
  while ((int64_t(1) << log2_blocksize) < w.blocksize) ++log2_blocksize;
  const Bnb4bitFormat format{w.packed,  w.absmax, w.nested.codes, w.nested.nested_absmax, w.nested.offset,
                             w.cols,    log2_blocksize, w.type == bnb::QuantType::fp4};
  dispatch(format, dtype, x, tokens, w.rows, w.cols, y, stream);
}

void matmul_q4_K_fused(const Q4KWeight& w, DType dtype, const void* x, int64_t tokens, void* y, cudaStream_t stream) {
  check_shape("q4_K", w.rows, w.cols, 256, x, y, tokens);
  if (!w.blocks || (reinterpret_cast<uintptr_t>(w.blocks) & 15) != 0)
    throw Error("GPU q4_K matmul: the blocks must be 16-byte aligned");
  if (tokens == 0) return;
  dispatch(Q4KFormat{static_cast<const uint8_t*>(w.blocks), w.cols}, dtype, x, tokens, w.rows, w.cols, y, stream);
}

}  // namespace lowbit::cuda
