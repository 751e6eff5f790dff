// The 4-bit matmul for many tokens on Hopper's warpgroup mma (wgmma, sm_90a), part of matmul_4bit.cu:
// the fused kernel's weight layout and formats, a different way to use them.
//
// Why another kernel. The fused kernel issues one m16n8k16 mma per 8 tokens, and every one of them
// needs the weight decoded into its A registers: past ~16 tokens it is bound by issuing that decode
// (docs/benchmarks.md: 13 instructions per mma at 64 tokens). A warpgroup's wgmma multiplies a 64-row A
// held in its four warps' registers by a 16 x N tile of activations in shared memory, N up to 256: the
// decode of a weight fragment then serves N tokens in one instruction, and the tensor cores run
// asynchronously while the warps decode the next fragment (in the manner of Machete and Marlin).
//
// The A fragment. Each warp decodes its 16-row tile exactly as the fused kernel reads it (lane g*4+c:
// rows g and g + 8, its 8 code bytes per chunk), but into dequantized values: the code's value times
// its scale in float32, rounded to 16 bits as dequantization rounds them (nf4/fp4: value_4bit; q4_K:
// d·q − m), so one float32 sum runs over the whole row and no scale group needs an accumulator of its
// own. The product is then that of dequantize + cuBLAS, the path it replaces.
//
// The activations. A lane's fragment holds k positions in the fused layout's order, not the natural
// one, so the activations are staged once per product (stage_activations) in that order and in
// wgmma's no-swizzle K-major layout: per token tile of N and pair of chunks, 8 steps of 16 k, each N/8
// core matrices of 8 tokens x 8 values (16 bytes a token) for k 0-7 and 8-15. A block's stage is then
// contiguous: one bulk copy, beside one per tile of codes and of scales.
//
// The pipeline. A block of WG warpgroups covers 64·WG rows and N tokens. The bulk copies of a pair's
// codes, scales and activations start ahead of it: from a producer warp that refills each stage as the
// consumer warps release it (tiles of 128 tokens), or from one consumer thread kStages - 2 pairs ahead
// between block barriers (tiles of 64). The warps decode step s + 1 while the tensor cores multiply
// step s, across pairs too. Blocks split k where that shortens the
// longest SM's work (launch); the splits' float32 sums are added in a fixed order afterwards
// (reduce_splits), so results do not depend on timing.
#pragma once

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define LOWBIT_WGMMA_DEVICE 1
#endif

namespace wide {

// Whether the device image running on this GPU holds the kernel: only an sm_90a image does (compiled for
// plain sm_90 or older, its body is empty), which the compute capability alone does not tell the host.
__device__ int compiled_in =
#ifdef LOWBIT_WGMMA_DEVICE
    1;
#else
    0;
#endif

constexpr int kStages = 4;
constexpr int kInFlight = 4;  // wgmmas a warpgroup has issued and not waited for

template <DType T, int N>
__device__ __forceinline__ void wgmma_async(float (&d)[N / 2], const uint32_t (&a)[4], uint64_t b, int add);

#ifdef LOWBIT_WGMMA_DEVICE
// y (64 x N, float32) = A (64 x 16, registers) · B (16 x N, shared memory at descriptor b), + y if add.
// One specialization per width and type; the asm text must be a literal, hence the macros.
#define LOWBIT_WGMMA_D8(i) \
  "+f"(d[i]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define LOWBIT_WGMMA_N64(TYPE)                                                                                     \
  template <>                                                                                                      \
  __device__ __forceinline__ void wgmma_async<DType::TYPE, 64>(float (&d)[32], const uint32_t(&a)[4], uint64_t b, \
                                                               int add) {                                         \
    asm volatile(                                                                                                  \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"                                                              \
        "wgmma.mma_async.sync.aligned.m64n64k16.f32." #TYPE "." #TYPE " "                                          \
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                  \
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "                                       \
        "{%32,%33,%34,%35}, %36, p, 1, 1, 0;\n}\n"                                                                 \
        : LOWBIT_WGMMA_D8(0), LOWBIT_WGMMA_D8(8), LOWBIT_WGMMA_D8(16), LOWBIT_WGMMA_D8(24)                         \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(add));                                          \
  }
#define LOWBIT_WGMMA_N128(TYPE)                                                                                     \
  template <>                                                                                                       \
  __device__ __forceinline__ void wgmma_async<DType::TYPE, 128>(float (&d)[64], const uint32_t(&a)[4], uint64_t b, \
                                                                int add) {                                         \
    asm volatile(                                                                                                   \
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"                                                               \
        "wgmma.mma_async.sync.aligned.m64n128k16.f32." #TYPE "." #TYPE " "                                          \
        "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"                                                   \
        "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"                                          \
        "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"                                          \
        "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "                                        \
        "{%64,%65,%66,%67}, %68, p, 1, 1, 0;\n}\n"                                                                  \
        : LOWBIT_WGMMA_D8(0), LOWBIT_WGMMA_D8(8), LOWBIT_WGMMA_D8(16), LOWBIT_WGMMA_D8(24), LOWBIT_WGMMA_D8(32),    \
          LOWBIT_WGMMA_D8(40), LOWBIT_WGMMA_D8(48), LOWBIT_WGMMA_D8(56)                                             \
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(b), "r"(add));                                           \
  }
LOWBIT_WGMMA_N64(bf16)
LOWBIT_WGMMA_N64(f16)
LOWBIT_WGMMA_N128(bf16)
LOWBIT_WGMMA_N128(f16)
#undef LOWBIT_WGMMA_N128
#undef LOWBIT_WGMMA_N64
#undef LOWBIT_WGMMA_D8
#endif

__device__ __forceinline__ void wgmma_fence() {
#ifdef LOWBIT_WGMMA_DEVICE
  asm volatile("wgmma.fence.sync.aligned;" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifdef LOWBIT_WGMMA_DEVICE
  asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory");
#endif
}
template <int Pending>
__device__ __forceinline__ void wgmma_wait() {
#ifdef LOWBIT_WGMMA_DEVICE
  asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(Pending) : "memory");
#endif
}
// The compiler does not know that an issued wgmma still reads its A registers and writes its
// accumulators: an empty asm that uses them after the wait that retires it keeps them where they are.
__device__ __forceinline__ void keep_until_here(const uint32_t (&a)[4]) {
  asm volatile("" ::"r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]));
}
template <int Count>
__device__ __forceinline__ void settle(float (&acc)[Count]) {
#pragma unroll
  for (int i = 0; i < Count; ++i) asm volatile("" : "+f"(acc[i])::"memory");
}

// A no-swizzle, K-major B operand: core matrices of 8 tokens x 16 bytes, the two of a step's k halves
// 128 bytes apart (leading byte offset), successive 8-token groups 256 bytes apart (stride byte offset).
__device__ __forceinline__ uint64_t activation_descriptor(uint32_t shared_address) {
  return uint64_t((shared_address & 0x3ffff) >> 4) | uint64_t(128 >> 4) << 16 | uint64_t(256 >> 4) << 32;
}

template <class Format, int WG, int N>
struct Layout {
  static constexpr int kTiles = 4 * WG;                   // 16-row tiles per block, one per warp
  static constexpr int kStepBytes = 32 * N;               // 16 k of N tokens
  static constexpr int kXBytes = 8 * kStepBytes;          // a pair of chunks (128 k)
  static constexpr int kCodeBytes = kTiles * 1024;
  static constexpr int kScaleBytes = kTiles * Format::kStagedScaleBytes;
  static constexpr int kStageBytes = kXBytes + kCodeBytes + kScaleBytes;
  static constexpr size_t kSharedBytes = size_t(kStages) * kStageBytes + 2 * kStages * 8;
  // Tiles of 128 tokens have a producer warp of their own beside the warpgroups; tiles of 64 let one
  // consumer thread start the copies between block barriers (the H100, docs/benchmarks.md: the producer
  // warp took 128-512 tokens from 1.03-1.19x faster, 16-64 tokens 1-3% slower).
  static constexpr bool kProducerWarp = N > 64;
  static constexpr int kThreads = 128 * WG + (kProducerWarp ? 32 : 0);
  static_assert(kStageBytes % 128 == 0 && kSharedBytes <= 227 * 1024);
};

// Activations x [tokens, cols] into wgmma order (the header's comment): per token tile of N, pair and
// step, the core matrices. A thread moves 16 contiguous source bytes (one lane's 8 values of a chunk
// half) to their four 4-byte places; tokens past the last and a missing last chunk are zeros.
template <class Format, int N>
__global__ void stage_activations(const uint16_t* __restrict__ x, int64_t tokens, int64_t cols, int64_t token_tiles,
                                  uint8_t* __restrict__ staged) {
  const int64_t pairs = pair_count(cols), units = token_tiles * N * pairs * 16;
  for (int64_t u = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; u < units; u += int64_t(gridDim.x) * blockDim.x) {
    const int unit = int(u % 16);
    const int64_t pair = u / 16 % pairs, token = u / 16 / pairs;
    const int e = unit / 8, offset = 8 * (unit % 8);
    int c = 0, half = 0;
#pragma unroll
    for (int cc = 0; cc < 4; ++cc)
#pragma unroll
      for (int hh = 0; hh < 2; ++hh)
        if (Format::x_offset(cc, hh) == offset) c = cc, half = hh;
    const int64_t col = pair * kPair + e * kChunk + offset;
    const uint4 v = token < tokens && col < cols ? __ldg(reinterpret_cast<const uint4*>(x + token * cols + col))
                                                 : make_uint4(0, 0, 0, 0);
    const int64_t tile = token / N;
    const int j = int(token % N) / 8, r = int(token % 8);
    uint8_t* base = staged + (tile * pairs + pair) * (8 * 32 * N) + j * 256 + r * 16 + c * 4;
    const uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int w = 0; w < 4; ++w) {  // word w: mma step 2·half + w / 2 of the chunk, k half w % 2
      const int step = 4 * e + 2 * half + w / 2;
      *reinterpret_cast<uint32_t*>(base + step * 32 * N + (w % 2) * 128) = words[w];
    }
  }
}

template <class Format, DType T, int WG, int N>
__global__ void __launch_bounds__(Layout<Format, WG, N>::kThreads, 1)
    wide_matmul_kernel(Format format, const uint8_t* __restrict__ staged, int64_t tokens, int64_t rows, int64_t cols,
                       int pairs_per_split, FusedOutput out, float* __restrict__ partials) {
#ifdef LOWBIT_WGMMA_DEVICE
  using L = Layout<Format, WG, N>;
  constexpr bool kProducer = L::kProducerWarp;
  extern __shared__ __align__(128) uint8_t shared[];
  uint64_t* full = reinterpret_cast<uint64_t*>(shared + kStages * L::kStageBytes);
  uint64_t* empty = full + kStages;
  __shared__ float lut[16];  // static: its address is the loads' immediate offset
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t pairs = pair_count(cols), tile0 = int64_t(blockIdx.x) * L::kTiles;
  const int64_t first = int64_t(blockIdx.z) * pairs_per_split;
  const int count = int(std::min<int64_t>(pairs_per_split, pairs - first));
  const uint8_t* x_tile = staged + int64_t(blockIdx.y) * pairs * L::kXBytes;
  if (threadIdx.x == 0)
    for (int s = 0; s < kStages; ++s) detail::barrier_init(&full[s]), detail::barrier_init(&empty[s], L::kTiles);
  format.prepare_lut(lut);
  __syncthreads();

  // One thread starts a pair's copies: its activations, then each tile's codes and scales.
  auto start_pair = [&](int p) {
    uint64_t* barrier = &full[p % kStages];
    uint8_t* to = shared + (p % kStages) * L::kStageBytes;
    const int64_t pair = first + p;
    detail::barrier_expect_bytes(barrier, L::kStageBytes);
    detail::bulk_copy_to_shared(to, x_tile + pair * L::kXBytes, L::kXBytes, barrier);
    for (int t = 0; t < L::kTiles; ++t) {
      detail::bulk_copy_to_shared(to + L::kXBytes + t * 1024, format.codes + tiled_code_offset(tile0 + t, pair, pairs, 0, 0),
                                  1024, barrier);
      detail::bulk_copy_to_shared(to + L::kXBytes + L::kCodeBytes + t * Format::kStagedScaleBytes,
                                  format.staged_scales(tile0 + t, pair, pairs), Format::kStagedScaleBytes, barrier);
    }
  };
  // Without a producer warp, pairs start kAhead ahead: a stage is refilled two pairs after its own,
  // when every wgmma that read it has retired (each warp waits for all but its last kInFlight - 1 < 8),
  // so the tensor cores never drain. The producer warp refills a stage once each consumer warp has
  // released it (empty), which it does as soon as its last wgmma reading it has retired.
  constexpr int kAhead = kStages - 2;
  if constexpr (kProducer) {
    if (warp == L::kTiles) {
      if (lane == 0)
        for (int p = 0; p < count; ++p) {
          if (p >= kStages) detail::barrier_wait(&empty[p % kStages], uint32_t(p / kStages + 1) & 1);
          start_pair(p);
        }
      return;
    }
  } else {
    if (threadIdx.x == 0)
      for (int p = 0; p < kAhead && p < count; ++p) start_pair(p);
  }

  float acc[N / 2];  // defined by the first wgmma alone: another definition would serialize them
  uint32_t a[8][4] = {};  // step s's A registers, kept until its wgmma has retired
  for (int p = 0; p < count; ++p) {
    if constexpr (!kProducer) {
      __syncthreads();  // every warp is past pair p - 1's step 0: pair p - 2's wgmmas have retired
      if (threadIdx.x == 0 && p + kAhead < count) start_pair(p + kAhead);
    }
    detail::barrier_wait(&full[p % kStages], uint32_t(p / kStages) & 1);
    const uint8_t* stage = shared + (p % kStages) * L::kStageBytes;
    const uint4* codes = reinterpret_cast<const uint4*>(stage + L::kXBytes + warp * 1024);
    const uint4 q[2] = {codes[lane], codes[32 + lane]};  // rows g and g + 8
    const uint8_t* scales = stage + L::kXBytes + L::kCodeBytes + warp * Format::kStagedScaleBytes;
    const uint32_t x_address = detail::shared_address(stage);
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const typename Format::Factors f = format.template chunk_factors<T>(scales, e, 2 * (first + p) + e, lane);
#pragma unroll
      for (int st = 0; st < 4; ++st) {
        const int s = 4 * e + st;
        Format::template dequantized_a<T>(q, e, st, f, lut, a[s]);
        wgmma_fence();
        wgmma_async<T, N>(acc, a[s], activation_descriptor(x_address + s * L::kStepBytes), p > 0 || s > 0);
        wgmma_commit();
        wgmma_wait<kInFlight - 1>();
        keep_until_here(a[(s + 9 - kInFlight) % 8]);
        // Step kInFlight - 2's wait retires pair p - 1's last wgmma: its stage is free.
        if constexpr (kProducer)
          if (s == kInFlight - 2 && p > 0 && lane == 0) detail::barrier_arrive(&empty[(p - 1) % kStages]);
      }
    }
  }
  wgmma_wait<0>();
#pragma unroll
  for (int s = 0; s < 8; ++s) keep_until_here(a[s]);
  settle(acc);

  // Accumulator i of lane (g, c): row 16·(warp % 4) + g + 8·(i % 4 / 2) of its warpgroup, token
  // 8·(i / 4) + 2c + i % 2 of the tile.
  const int64_t row_base = (tile0 + warp) * 16 + lane / 4, token_base = int64_t(blockIdx.y) * N + 2 * (lane % 4);
#pragma unroll
  for (int i = 0; i < N / 2; ++i) {
    const int64_t row = row_base + 8 * (i % 4 / 2), token = token_base + 8 * (i / 4) + i % 2;
    if (token >= tokens) continue;
    const int64_t at = token * rows + row;
    if (partials) {
      partials[int64_t(blockIdx.z) * tokens * rows + at] = acc[i];
    } else if (out.f32) {
      float& y = static_cast<float*>(out.y)[at];
      y = out.accumulate ? __fadd_rn(y, acc[i]) : acc[i];
    } else {
      static_cast<uint16_t*>(out.y)[at] = float_to_16bit(acc[i], T);
    }
  }
#endif
}

// The splits' sums in split order, then written as the fused kernel writes.
template <DType T>
__global__ void reduce_splits(const float* __restrict__ partials, int splits, int64_t count, FusedOutput out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    float sum = partials[i];
    for (int s = 1; s < splits; ++s) sum = __fadd_rn(sum, partials[s * count + i]);
    if (out.f32) {
      float& y = static_cast<float*>(out.y)[i];
      y = out.accumulate ? __fadd_rn(y, sum) : sum;
    } else {
      static_cast<uint16_t*>(out.y)[i] = float_to_16bit(sum, T);
    }
  }
}

template <class Format, DType T, int WG, int N>
void launch(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, const FusedOutput& y,
            cudaStream_t stream) {
  using L = Layout<Format, WG, N>;
  constexpr auto kernel = wide_matmul_kernel<Format, T, WG, N>;
  static bool configured = false;  // per instantiation (one device assumed)
  if (!configured) {
    check(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(L::kSharedBytes)));
    configured = true;
  }
  const int64_t pairs = pair_count(cols), token_tiles = (tokens + N - 1) / N, row_blocks = rows / (64 * WG);
  int per_sm = 0;
  check(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, L::kThreads, L::kSharedBytes));
  // Split k so that the longest SM's work, waves of resident blocks times pairs per block, plus the
  // splits' float32 sums written and read again is least (fewer splits on a tie), keeping at least
  // kStages pairs per split. Units of 1/1024 pair: on the H100 a block's pair took ~1.6 µs at 64 tokens,
  // about what 2^20 partial sums take to write and read. ncu: 336 blocks of 2 a SM (14336x4096, 16
  // tokens) left 23% of the SM cycles idle in their second wave.
  const int64_t blocks = row_blocks * token_tiles, wave = int64_t(std::max(per_sm, 1)) * sm_count();
  int64_t splits = 1, best = -1;
  for (int64_t s = 1; s <= std::max<int64_t>(1, pairs / kStages); ++s) {
    const int64_t cost = (blocks * s + wave - 1) / wave * ((pairs + s - 1) / s) * 1024 + s * tokens * rows / 1024;
    if (best < 0 || cost < best) best = cost, splits = s;
  }
  const int pairs_per_split = int((pairs + splits - 1) / splits);
  splits = (pairs + pairs_per_split - 1) / pairs_per_split;

  uint8_t* staged = nullptr;
  float* partials = nullptr;
  const size_t staged_bytes = size_t(token_tiles * pairs) * L::kXBytes;
  check(cudaMallocAsync(reinterpret_cast<void**>(&staged), staged_bytes, stream));
  if (splits > 1) check(cudaMallocAsync(reinterpret_cast<void**>(&partials), size_t(splits * tokens * rows) * 4, stream));
  const int64_t units = token_tiles * N * pairs * 16;
  stage_activations<Format, N><<<unsigned(std::min<int64_t>((units + 255) / 256, 8 * sm_count())), 256, 0, stream>>>(
      static_cast<const uint16_t*>(x), tokens, cols, token_tiles, staged);
  const dim3 grid{unsigned(row_blocks), unsigned(token_tiles), unsigned(splits)};
  kernel<<<grid, L::kThreads, L::kSharedBytes, stream>>>(format, staged, tokens, rows, cols, pairs_per_split, y, partials);
  if (partials) {
    const int64_t count = tokens * rows;
    reduce_splits<T><<<unsigned(std::min<int64_t>((count + 255) / 256, 8 * sm_count())), 256, 0, stream>>>(partials, int(splits),
                                                                                                           count, y);
    check(cudaFreeAsync(partials, stream));
  }
  check(cudaFreeAsync(staged, stream));
  check(cudaGetLastError());
}

// 64 tokens or fewer in one tile of 64, more in tiles of 128; two warpgroups (128 rows) a block where
// the rows allow (four were slower on the H100 at 16-256 tokens: docs/benchmarks.md).
template <class Format, DType T>
void dispatch(const Format& format, const void* x, int64_t tokens, int64_t rows, int64_t cols, const FusedOutput& y,
              cudaStream_t stream) {
  const bool two = rows % 128 == 0;
  if (tokens <= 64) {
    if (two) launch<Format, T, 2, 64>(format, x, tokens, rows, cols, y, stream);
    else launch<Format, T, 1, 64>(format, x, tokens, rows, cols, y, stream);
  } else {
    if (two) launch<Format, T, 2, 128>(format, x, tokens, rows, cols, y, stream);
    else launch<Format, T, 1, 128>(format, x, tokens, rows, cols, y, stream);
  }
}

}  // namespace wide
