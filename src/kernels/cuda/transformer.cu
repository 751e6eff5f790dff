// RMSNorm, the heads' bias / norm / RoPE, attention and SwiGLU of a Llama-family block
// (include/lowbit/kernels/cuda/transformer.h). Float32 arithmetic in the CPU runtime's order where it
// is cheap to keep (double sums of squares, products rounded one at a time), so the two backends
// differ by little more than the 16-bit matmul inputs.
#include <algorithm>
#include <span>
#include <string>

#include "codec_common.cuh"
#include "lowbit/kernels/cuda/transformer.h"

namespace lowbit::cuda {
namespace {

using detail::store1;

template <class F>
void dispatch_half(DType t, F&& f) {
  if (t == DType::bf16) f.template operator()<DType::bf16>();
  else if (t == DType::f16) f.template operator()<DType::f16>();
  else throw Error("16-bit activations must be bf16 or f16, got " + std::string(dtype_name(t)));
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

__device__ __forceinline__ int64_t first_position_of(const Positions& p) {
  return p.device_first_position ? *p.device_first_position : p.first_position;
}

template <DType T>
__device__ __forceinline__ void store_both(const Activations& out, int64_t i, float v) {
  out.f32[i] = v;
  if (out.half) store1<T>(out.half, i, v);
}

// One block per row: the sum of squares in double, as the CPU runtime sums it.
template <DType T>
__global__ void __launch_bounds__(256) rms_norm_kernel(const float* __restrict__ x, const float* __restrict__ weight, int64_t n,
                                                       float eps, Activations out) {
  __shared__ double partial[8];
  const float* xr = x + blockIdx.x * n;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += double(xr[i]) * double(xr[i]);
  sum = warp_sum(sum);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = sum;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += partial[w];
  const float scale = 1.0f / sqrtf(float(total / double(n)) + eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) store_both<T>(out, blockIdx.x * n + i, __fmul_rn(__fmul_rn(xr[i], scale), weight[i]));
}

// Up to three outputs of one block (q, k, v) prepared by one launch: blockIdx.y picks the job.
struct HeadsJobs {
  HeadsJob job[3];
  int count = 0;
};

// One warp per (token, head) of job blockIdx.y: bias, then (reading back what other lanes wrote) norm
// and rotation.
__global__ void __launch_bounds__(128) prepare_heads_kernel(HeadsJobs jobs, int64_t tokens, int head_dim, Positions positions,
                                                            int64_t capacity) {
  const HeadsJob& job = jobs.job[blockIdx.y];
  const int heads = job.heads;
  const HeadsStep& step = job.step;
  float* const x = job.x;
  float* const target = job.cache_target;
  const int64_t item = int64_t(blockIdx.x) * 4 + threadIdx.x / 32;
  if (item >= tokens * heads) return;
  const int lane = int(threadIdx.x % 32);
  const int64_t t = item / heads;
  const int h = int(item % heads);
  float* v = x + item * head_dim;
  double sum = 0;
  for (int i = lane; i < head_dim; i += 32) {
    const float value = step.bias ? __fadd_rn(v[i], step.bias[h * head_dim + i]) : v[i];
    v[i] = value;
    sum += double(value) * double(value);
  }
  __syncwarp();
  float scale = 1.0f;
  if (step.norm) scale = 1.0f / sqrtf(float(warp_sum(sum) / double(head_dim)) + step.eps);
  const int64_t window = t / positions.tokens_per_window, position = first_position_of(positions) + t % positions.tokens_per_window;
  float* out = target ? target + ((window * capacity + position) * heads + h) * head_dim : v;
  auto normed = [&](int i) { return step.norm ? __fmul_rn(__fmul_rn(v[i], scale), step.norm[i]) : v[i]; };
  if (!step.inv_freq) {
    for (int i = lane; i < head_dim; i += 32) out[i] = normed(i);  // each lane its own elements
    return;
  }
  const int n_rot = step.n_rot > 0 ? step.n_rot : head_dim, half = n_rot / 2;
  for (int i = n_rot + lane; i < head_dim; i += 32) out[i] = normed(i);  // the dimensions RoPE leaves alone
  float a[8], b[8];  // head_dim <= 512: at most 8 pairs per lane
  int count = 0;
  for (int i = lane; i < half && count < 8; i += 32, ++count) {
    const int ia = step.neox ? i : 2 * i, ib = step.neox ? i + half : 2 * i + 1;
    const float a0 = normed(ia), b0 = normed(ib);
    const float angle = __fmul_rn(float(position), step.inv_freq[i]);
    const float c = __fmul_rn(cosf(angle), step.mscale), s = __fmul_rn(sinf(angle), step.mscale);
    a[count] = __fsub_rn(__fmul_rn(a0, c), __fmul_rn(b0, s));
    b[count] = __fadd_rn(__fmul_rn(a0, s), __fmul_rn(b0, c));
  }
  __syncwarp();  // every lane has read its pairs before any is overwritten in place
  count = 0;
  for (int i = lane; i < half && count < 8; i += 32, ++count) {
    out[step.neox ? i : 2 * i] = a[count];
    out[step.neox ? i + half : 2 * i + 1] = b[count];
  }
}

// Flash-style causal attention: a block takes 32 queries of one head of one window, 8 lanes per query,
// lane j holding dimensions j, j + 8, ...; keys and values stream through shared memory 32 at a time,
// and each query keeps a running maximum, sum and weighted value sum (online softmax).
template <int P, DType T>
__global__ void __launch_bounds__(256) attention_kernel(const float* __restrict__ q, const float* __restrict__ kc,
                                                        const float* __restrict__ vc, int64_t capacity, int n_head, int n_head_kv,
                                                        int head_dim, Positions positions, float scale, Activations out) {
  constexpr int kKeys = 32, kDim = 8 * P;
  __shared__ float keys[kKeys][kDim], values[kKeys][kDim];
  const int64_t window = blockIdx.z, per_window = positions.tokens_per_window;
  const int h = int(blockIdx.y), kv_head = h / (n_head / n_head_kv);
  const int sub = int(threadIdx.x % 8);
  const int64_t local = int64_t(blockIdx.x) * 32 + threadIdx.x / 8;
  const bool valid = local < per_window;
  const int64_t first = first_position_of(positions);
  const int64_t t = window * per_window + local, position = first + local;
  float qv[P], acc[P];
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int d = sub + 8 * i;
    qv[i] = valid && d < head_dim ? q[(t * n_head + h) * head_dim + d] : 0.0f;
    acc[i] = 0.0f;
  }
  float running_max = -INFINITY, running_sum = 0.0f;
  const int64_t last_local = min(int64_t(blockIdx.x + 1) * 32, per_window) - 1;
  const int64_t key_end = first + last_local + 1;
  for (int64_t k0 = 0; k0 < key_end; k0 += kKeys) {
    __syncthreads();
    for (int e = threadIdx.x; e < kKeys * head_dim; e += blockDim.x) {
      const int key = e / head_dim, d = e % head_dim;
      const int64_t at = ((window * capacity + k0 + key) * n_head_kv + kv_head) * head_dim + d;
      const bool inside = k0 + key < key_end;
      keys[key][d] = inside ? kc[at] : 0.0f;
      values[key][d] = inside ? vc[at] : 0.0f;
    }
    __syncthreads();
    float s[kKeys];
    float tile_max = -INFINITY;
#pragma unroll
    for (int j = 0; j < kKeys; ++j) {
      float partial = 0.0f;
#pragma unroll
      for (int i = 0; i < P; ++i)
        if (sub + 8 * i < head_dim) partial = fmaf(qv[i], keys[j][sub + 8 * i], partial);
      partial += __shfl_xor_sync(0xffffffffu, partial, 4);
      partial += __shfl_xor_sync(0xffffffffu, partial, 2);
      partial += __shfl_xor_sync(0xffffffffu, partial, 1);
      s[j] = k0 + j <= position ? partial * scale : -INFINITY;
      tile_max = fmaxf(tile_max, s[j]);
    }
    const float new_max = fmaxf(running_max, tile_max);
    const float correction = expf(running_max - new_max);
    running_sum *= correction;
#pragma unroll
    for (int i = 0; i < P; ++i) acc[i] *= correction;
#pragma unroll
    for (int j = 0; j < kKeys; ++j) {
      const float p = expf(s[j] - new_max);
      running_sum += p;
#pragma unroll
      for (int i = 0; i < P; ++i)
        if (sub + 8 * i < head_dim) acc[i] = fmaf(p, values[j][sub + 8 * i], acc[i]);
    }
    running_max = new_max;
  }
  if (!valid) return;
#pragma unroll
  for (int i = 0; i < P; ++i) {
    const int d = sub + 8 * i;
    if (d < head_dim) store_both<T>(out, t * n_head * head_dim + h * head_dim + d, acc[i] / running_sum);
  }
}

// Many queries a window (prefill, evaluation): the same online softmax on the tensor cores. A block takes
// 64 queries of one head of one window, 16 per warp. Tiles of 32 keys and their values stream into shared
// memory by cp.async, the next tile in flight while the warps work on this one; each warp computes its
// scores S = Q·Kᵀ and its update O += P·V with mma.sync m16n8k8 in TF32 (10-bit mantissa, float32's
// range; float32 sums). A thread holds rows g and g + 8 of its warp's 16 (g = lane / 4) and, of every 8
// columns, the two at 2·(lane % 4): the PTX fragment layout. P goes through shared memory to take the A
// operand's layout. KD = head_dim / 8.
constexpr int kMmaQueries = 64, kMmaKeys = 32, kMmaWarps = 4;

template <int KD>
struct MmaAttentionLayout {  // strides padded so that the fragment reads hit 32 distinct banks
  static constexpr int kDim = 8 * KD, kKeyStride = kDim + 4, kValueStride = kDim + 8, kScoreStride = kMmaKeys + 4;
  static constexpr int kStage = kMmaKeys * (kKeyStride + kValueStride);  // floats: one tile's keys, then its values
  static constexpr size_t kBytes = (2 * kStage + kMmaWarps * 16 * kScoreStride) * sizeof(float);
};

__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
}

__device__ __forceinline__ void mma_tf32(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void copy16_async(float* shared, const float* global) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(uint32_t(__cvta_generic_to_shared(shared))), "l"(global));
}

template <int KD, DType T>
__global__ void __launch_bounds__(32 * kMmaWarps) attention_mma_kernel(const float* __restrict__ q, const float* __restrict__ kc,
                                                                     const float* __restrict__ vc, int64_t capacity, int n_head,
                                                                     int n_head_kv, Positions positions, float scale, Activations out) {
  using L = MmaAttentionLayout<KD>;
  constexpr int D = L::kDim;
  extern __shared__ __align__(16) float shared[];
  const int64_t window = blockIdx.z, per_window = positions.tokens_per_window, first = first_position_of(positions);
  const int h = int(blockIdx.y), kv_head = h / (n_head / n_head_kv);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, g = lane / 4, t4 = lane % 4;
  const int64_t tile_first = int64_t(blockIdx.x) * kMmaQueries;
  const int64_t row[2] = {tile_first + warp * 16 + g, tile_first + warp * 16 + g + 8};  // local query indices
  const int64_t key_end = first + min(tile_first + kMmaQueries, per_window);
  const int tiles = int((key_end + kMmaKeys - 1) / kMmaKeys);
  // One tile's keys and values into a stage, 16 bytes a copy; keys past the end read as zeros.
  auto issue = [&](int tile) {
    float* keys = shared + (tile % 2) * L::kStage;
    float* values = keys + kMmaKeys * L::kKeyStride;
    const int64_t k0 = int64_t(tile) * kMmaKeys;
    for (int e = int(threadIdx.x); e < kMmaKeys * D / 4; e += 32 * kMmaWarps) {
      const int key = e / (D / 4), d = (e % (D / 4)) * 4;
      if (k0 + key < key_end) {
        const int64_t at = ((window * capacity + k0 + key) * n_head_kv + kv_head) * D + d;
        copy16_async(keys + key * L::kKeyStride + d, kc + at);
        copy16_async(values + key * L::kValueStride + d, vc + at);
      } else {
        *reinterpret_cast<float4*>(keys + key * L::kKeyStride + d) = make_float4(0, 0, 0, 0);
        *reinterpret_cast<float4*>(values + key * L::kValueStride + d) = make_float4(0, 0, 0, 0);
      }
    }
    asm volatile("cp.async.commit_group;");
  };
  issue(0);
  // The warp's queries as A fragments, one per 8 dimensions.
  uint32_t qa[KD][4];
#pragma unroll
  for (int ks = 0; ks < KD; ++ks)
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t r = row[i % 2];
      const int d = ks * 8 + t4 + (i / 2) * 4;
      qa[ks][i] = to_tf32(r < per_window ? q[((window * per_window + r) * n_head + h) * D + d] : 0.0f);
    }
  float o[KD][4];
#pragma unroll
  for (int nd = 0; nd < KD; ++nd) o[nd][0] = o[nd][1] = o[nd][2] = o[nd][3] = 0.0f;
  float running_max[2] = {-INFINITY, -INFINITY}, running_sum[2] = {0.0f, 0.0f};  // the sum: this thread's columns only
  float* p = shared + 2 * L::kStage + warp * 16 * L::kScoreStride;
  for (int tile = 0; tile < tiles; ++tile) {
    if (tile + 1 < tiles) {
      issue(tile + 1);
      asm volatile("cp.async.wait_group 1;");
    } else {
      asm volatile("cp.async.wait_group 0;");
    }
    __syncthreads();  // this tile is in shared memory for every warp
    const float* keys = shared + (tile % 2) * L::kStage;
    const float* values = keys + kMmaKeys * L::kKeyStride;
    const int64_t k0 = int64_t(tile) * kMmaKeys;
    float s[kMmaKeys / 8][4];
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt) {
      s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.0f;
      const float* key_row = keys + (nt * 8 + g) * L::kKeyStride;
#pragma unroll
      for (int ks = 0; ks < KD; ++ks) mma_tf32(s[nt], qa[ks], to_tf32(key_row[ks * 8 + t4]), to_tf32(key_row[ks * 8 + t4 + 4]));
    }
    // Scale, causal mask, and the online softmax of rows g (i = 0, 1) and g + 8 (i = 2, 3).
    float tile_max[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int64_t key = k0 + nt * 8 + 2 * t4 + (i % 2);
        s[nt][i] = key <= first + row[i / 2] ? s[nt][i] * scale : -INFINITY;
        tile_max[i / 2] = fmaxf(tile_max[i / 2], s[nt][i]);
      }
    float correction[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 1));
      tile_max[r] = fmaxf(tile_max[r], __shfl_xor_sync(0xffffffffu, tile_max[r], 2));
      const float new_max = fmaxf(running_max[r], tile_max[r]);  // finite: key 0 is in every row's first tile
      correction[r] = expf(running_max[r] - new_max);
      running_max[r] = new_max;
      running_sum[r] *= correction[r];
    }
#pragma unroll
    for (int nt = 0; nt < kMmaKeys / 8; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float e = expf(s[nt][i] - running_max[i / 2]);
        running_sum[i / 2] += e;
        p[(g + 8 * (i / 2)) * L::kScoreStride + nt * 8 + 2 * t4 + (i % 2)] = e;
      }
#pragma unroll
    for (int nd = 0; nd < KD; ++nd) {
      o[nd][0] *= correction[0], o[nd][1] *= correction[0];
      o[nd][2] *= correction[1], o[nd][3] *= correction[1];
    }
    __syncwarp();  // P written by the whole warp
#pragma unroll
    for (int kk = 0; kk < kMmaKeys / 8; ++kk) {
      const float* p0 = p + g * L::kScoreStride + kk * 8 + t4;
      const float* p1 = p0 + 8 * L::kScoreStride;
      const uint32_t a[4] = {to_tf32(p0[0]), to_tf32(p1[0]), to_tf32(p0[4]), to_tf32(p1[4])};
      const float* v0 = values + (kk * 8 + t4) * L::kValueStride + g;
      const float* v1 = v0 + 4 * L::kValueStride;
#pragma unroll
      for (int nd = 0; nd < KD; ++nd) mma_tf32(o[nd], a, to_tf32(v0[nd * 8]), to_tf32(v1[nd * 8]));
    }
    __syncthreads();  // every warp is done with this stage (and its P) before the next tile's copies reuse it
  }
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    running_sum[r] += __shfl_xor_sync(0xffffffffu, running_sum[r], 1);
    running_sum[r] += __shfl_xor_sync(0xffffffffu, running_sum[r], 2);
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int64_t r = row[i / 2];
    if (r >= per_window) continue;
    const int64_t t = window * per_window + r;
#pragma unroll
    for (int nd = 0; nd < KD; ++nd)
      store_both<T>(out, (t * n_head + h) * D + nd * 8 + 2 * t4 + (i % 2), o[nd][i] / running_sum[i / 2]);
  }
}

template <int KD>
void launch_attention_mma(const float* q, const KvCache& cache, int64_t tokens, int n_head, int n_head_kv, const Positions& positions,
                          float scale, const Activations& out, cudaStream_t stream) {
  constexpr size_t bytes = MmaAttentionLayout<KD>::kBytes;
  const dim3 grid(unsigned((positions.tokens_per_window + kMmaQueries - 1) / kMmaQueries), unsigned(n_head),
                  unsigned(tokens / positions.tokens_per_window));
  dispatch_half(out.half_dtype, [&]<DType T>() {
    check(cudaFuncSetAttribute(attention_mma_kernel<KD, T>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    attention_mma_kernel<KD, T><<<grid, 32 * kMmaWarps, bytes, stream>>>(q, cache.k, cache.v, cache.capacity, n_head, n_head_kv, positions, scale, out);
  });
  check(cudaGetLastError());
}

// Decoding (one query per window): the attention of a query to its keys is split over many blocks
// (flash-decoding), since one block per head leaves most SMs idle and waits on one key tile after
// another. A block takes kSplitKeys keys of one head: each warp loads its kKeysPerWarp key rows at
// once (lanes_per_key lanes of 4 dimensions per key row, 16-byte loads), writes the scores to shared
// memory, then weighs its value rows by exp(score − the split's maximum). The split's maximum, sum
// and weighted value sum go to `partial`; decode_attention_combine_kernel rescales and adds the splits.
constexpr int kSplitKeys = 64, kDecodeWarps = 8, kKeysPerWarp = kSplitKeys / kDecodeWarps;

template <int LanesPerKey>
__global__ void __launch_bounds__(32 * kDecodeWarps) decode_attention_split_kernel(
    const float* __restrict__ q, const float* __restrict__ kc, const float* __restrict__ vc, int64_t capacity, int n_head,
    int n_head_kv, int head_dim, Positions positions, float scale, float* __restrict__ partial) {
  constexpr int kSlots = 32 / LanesPerKey;  // keys a warp reads per step
  constexpr int kSteps = (kKeysPerWarp + kSlots - 1) / kSlots;
  __shared__ float scores[kSplitKeys];
  __shared__ float4 sums[kDecodeWarps][LanesPerKey];
  const int split = int(blockIdx.x), h = int(blockIdx.y), splits = int(gridDim.x);
  const int64_t window = blockIdx.z;
  const int kv_head = h / (n_head / n_head_kv);
  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32, slot = lane / LanesPerKey, part = lane % LanesPerKey;
  const int64_t key_end = first_position_of(positions) + 1, k_begin = int64_t(split) * kSplitKeys;
  if (k_begin >= key_end) return;  // a graph's launch covers the capacity; the combine reads only the splits in use
  const int count = int(min(int64_t(kSplitKeys), key_end - k_begin));
  const float4 qv = reinterpret_cast<const float4*>(q + (window * n_head + h) * head_dim)[part];
  auto row = [&](const float* cache, int j) {  // key/value row of split key j, this lane's 4 dimensions
    return reinterpret_cast<const float4*>(cache + ((window * capacity + k_begin + j) * n_head_kv + kv_head) * head_dim)[part];
  };
  int key[kSteps];
  bool valid[kSteps];
  float4 kr[kSteps];
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    key[s] = warp * kKeysPerWarp + s * kSlots + slot;
    valid[s] = s * kSlots + slot < kKeysPerWarp && key[s] < count;
    kr[s] = valid[s] ? row(kc, key[s]) : make_float4(0, 0, 0, 0);
  }
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    float dot = qv.x * kr[s].x + qv.y * kr[s].y + qv.z * kr[s].z + qv.w * kr[s].w;
#pragma unroll
    for (int offset = LanesPerKey / 2; offset > 0; offset /= 2) dot += __shfl_xor_sync(0xffffffffu, dot, offset);
    if (valid[s] && part == 0) scores[key[s]] = dot * scale;
  }
  float4 vr[kSteps];  // issued before the barrier: in flight while the block waits for the scores
#pragma unroll
  for (int s = 0; s < kSteps; ++s) vr[s] = valid[s] ? row(vc, key[s]) : make_float4(0, 0, 0, 0);
  __syncthreads();
  // Every warp finds the split's maximum and sum itself (64 scores: two per lane).
  float m = -INFINITY;
  for (int j = lane; j < count; j += 32) m = fmaxf(m, scores[j]);
  for (int offset = 16; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, offset));
  float4 acc = make_float4(0, 0, 0, 0);
#pragma unroll
  for (int s = 0; s < kSteps; ++s) {
    const float p = valid[s] ? expf(scores[key[s]] - m) : 0.0f;
    acc.x = fmaf(p, vr[s].x, acc.x), acc.y = fmaf(p, vr[s].y, acc.y), acc.z = fmaf(p, vr[s].z, acc.z), acc.w = fmaf(p, vr[s].w, acc.w);
  }
#pragma unroll
  for (int offset = 16; offset >= LanesPerKey; offset /= 2) {  // the warp's key slots
    acc.x += __shfl_xor_sync(0xffffffffu, acc.x, offset), acc.y += __shfl_xor_sync(0xffffffffu, acc.y, offset);
    acc.z += __shfl_xor_sync(0xffffffffu, acc.z, offset), acc.w += __shfl_xor_sync(0xffffffffu, acc.w, offset);
  }
  if (slot == 0) sums[warp][part] = acc;
  __syncthreads();
  float* out = partial + ((window * n_head + h) * splits + split) * (head_dim + 2);
  if (warp == 0) {
    float l = 0.0f;
    for (int j = lane; j < count; j += 32) l += expf(scores[j] - m);
    for (int offset = 16; offset > 0; offset /= 2) l += __shfl_xor_sync(0xffffffffu, l, offset);
    if (lane == 0) out[0] = m, out[1] = l;
  }
  if (threadIdx.x < LanesPerKey) {
    float4 total = make_float4(0, 0, 0, 0);
#pragma unroll
    for (int w = 0; w < kDecodeWarps; ++w)
      total.x += sums[w][threadIdx.x].x, total.y += sums[w][threadIdx.x].y, total.z += sums[w][threadIdx.x].z, total.w += sums[w][threadIdx.x].w;
    float* o = out + 2 + 4 * threadIdx.x;
    o[0] = total.x, o[1] = total.y, o[2] = total.z, o[3] = total.w;
  }
}

// One block per (head, window): out[d] = Σ_s acc_s[d]·e^(m_s − M) / Σ_s l_s·e^(m_s − M), M = max_s m_s,
// over the splits that hold keys (of `stride` launched).
template <DType T>
__global__ void __launch_bounds__(128) decode_attention_combine_kernel(const float* __restrict__ partial, int stride, Positions positions,
                                                                       int n_head, int head_dim, Activations out) {
  const int h = int(blockIdx.x);
  const int64_t window = blockIdx.y;
  const int splits = int(first_position_of(positions) / kSplitKeys + 1);
  const float* base = partial + (window * n_head + h) * stride * int64_t(head_dim + 2);
  float m = -INFINITY;
  for (int s = 0; s < splits; ++s) m = fmaxf(m, base[s * (head_dim + 2)]);
  float l = 0.0f;
  for (int s = 0; s < splits; ++s) l += base[s * (head_dim + 2) + 1] * expf(base[s * (head_dim + 2)] - m);
  for (int d = int(threadIdx.x); d < head_dim; d += blockDim.x) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s) sum += base[s * (head_dim + 2) + 2 + d] * expf(base[s * (head_dim + 2)] - m);
    store_both<T>(out, (window * n_head + h) * head_dim + d, sum / l);
  }
}

template <DType T>
__global__ void swiglu_kernel(const float* __restrict__ gate, const float* __restrict__ up, int64_t rows, int64_t n, int64_t stride,
                              Activations out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t at = rows == 1 ? i : i / n * stride + i % n;
    const float g = gate[at];
    store_both<T>(out, i, __fmul_rn(__fdiv_rn(g, __fadd_rn(1.0f, expf(-g))), up[at]));
  }
}

template <DType T>
__global__ void gather_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, int64_t n, int64_t cols, Activations out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * cols; i += int64_t(gridDim.x) * blockDim.x)
    store_both<T>(out, i, x[int64_t(rows[i / cols]) * cols + i % cols]);
}

// Unit: the widest of 16, 4 or 1 bytes that divides a row, so rows stay aligned to it.
template <class Unit>
__global__ void gather_row_bytes_kernel(const Unit* __restrict__ table, int64_t row_units, const int32_t* __restrict__ rows, int64_t n,
                                        Unit* __restrict__ out) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * row_units; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = table[int64_t(rows[i / row_units]) * row_units + i % row_units];
}

__global__ void scatter_add_rows_kernel(const float* __restrict__ x, const int32_t* __restrict__ rows, const float* __restrict__ weights,
                                        int64_t n, int64_t cols, float* __restrict__ y) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n * cols; i += int64_t(gridDim.x) * blockDim.x) {
    float& target = y[int64_t(rows[i / cols]) * cols + i % cols];
    target = __fadd_rn(target, __fmul_rn(weights[i / cols], x[i]));
  }
}

// One block per row: each thread keeps the first largest of its values, then the block reduces the pairs
// (a larger value wins; of equal values the lower index).
__global__ void __launch_bounds__(1024) argmax_rows_kernel(const float* __restrict__ x, int64_t n, int32_t* __restrict__ out) {
  __shared__ float best_value[32];
  __shared__ int64_t best_index[32];
  const float* row = x + blockIdx.x * n;
  float value = -INFINITY;
  int64_t index = n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    if (row[i] > value || index == n) value = row[i], index = i;
  auto better = [](float v, int64_t i, float w, int64_t j) { return w > v || (w == v && j < i); };
  for (int offset = 16; offset > 0; offset /= 2) {
    const float w = __shfl_xor_sync(0xffffffffu, value, offset);
    const int64_t j = __shfl_xor_sync(0xffffffffu, index, offset);
    if (better(value, index, w, j)) value = w, index = j;
  }
  if (threadIdx.x % 32 == 0) best_value[threadIdx.x / 32] = value, best_index[threadIdx.x / 32] = index;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < int(blockDim.x / 32); ++w)
      if (better(value, index, best_value[w], best_index[w])) value = best_value[w], index = best_index[w];
    out[blockIdx.x] = int32_t(index);
  }
}

// Block-wide reductions over a row for the log-softmax kernels below (every thread of the block gets
// the result; each call's shared memory is free again when it returns).
__device__ float block_max(float v) {
  __shared__ float partial[32];
  for (int offset = 16; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  __syncthreads();
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  for (int w = 0; w < int(blockDim.x / 32); ++w) v = fmaxf(v, partial[w]);
  return v;
}
__device__ double block_sum(double v) {
  __shared__ double partial[32];
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  __syncthreads();
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < int(blockDim.x / 32); ++w) total += partial[w];
  return total;
}

// As log_softmax on the CPU: the row's float maximum and the log of a double sum of exp(l - max); log_p
// of value l is l - max - log_sum (the sum's order differs from the CPU's, so its last bit may).
struct LogSoftmaxTerms {
  float max, log_sum;
};
__device__ LogSoftmaxTerms log_softmax_terms(const float* row, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) max = fmaxf(max, row[i]);
  max = block_max(max);
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += exp(double(row[i] - max));
  return {max, float(log(block_sum(sum)))};
}

// One block per row: the target's log-probability.
__global__ void __launch_bounds__(1024) target_log_probs_kernel(const float* __restrict__ logits, int64_t n,
                                                                 const int32_t* __restrict__ targets, float* __restrict__ out) {
  const int64_t r = blockIdx.x;
  const int32_t target = targets[r];
  if (target < 0 || target >= n) {  // the whole block leaves: no barrier is left waiting
    if (threadIdx.x == 0) out[r] = NAN;
    return;
  }
  const float* row = logits + r * n;
  const LogSoftmaxTerms t = log_softmax_terms(row, n);
  if (threadIdx.x == 0) out[r] = row[target] - t.max - t.log_sum;
}

// One block per reference row: sum exp(b) (b - log_p) over the vocabulary, in double.
__global__ void __launch_bounds__(1024) row_klds_kernel(const float* __restrict__ logits, int64_t n, const int64_t* __restrict__ rows,
                                                        const float* __restrict__ reference, double* __restrict__ out) {
  const float* row = logits + rows[blockIdx.x] * n;
  const float* base = reference + int64_t(blockIdx.x) * n;
  const LogSoftmaxTerms t = log_softmax_terms(row, n);
  double kld = 0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float log_p = row[i] - t.max - t.log_sum;
    kld += exp(double(base[i])) * double(base[i] - log_p);
  }
  kld = block_sum(kld);
  if (threadIdx.x == 0) out[blockIdx.x] = kld;
}

unsigned elementwise_grid(int64_t n) { return unsigned(std::min<int64_t>((n + 255) / 256, 132 * 16)); }

}  // namespace

void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, float eps, const Activations& out, cudaStream_t stream) {
  if (rows <= 0) return;
  dispatch_half(out.half_dtype, [&]<DType T>() { rms_norm_kernel<T><<<unsigned(rows), 256, 0, stream>>>(x, weight, n, eps, out); });
  check(cudaGetLastError());
}

void prepare_heads(std::span<const HeadsJob> jobs, int64_t tokens, int head_dim, const Positions& positions, int64_t cache_capacity,
                   cudaStream_t stream) {
  if (tokens <= 0) return;
  if (head_dim % 2 != 0 || head_dim > 512) throw Error("GPU attention heads: head_dim " + std::to_string(head_dim), {.expected = "even, at most 512"});
  HeadsJobs work;
  int64_t most_heads = 0;
  for (const HeadsJob& job : jobs) {
    const HeadsStep& step = job.step;
    if (!step.bias && !step.norm && !step.inv_freq && !job.cache_target) continue;  // nothing to do
    if (work.count == 3) throw Error("GPU attention heads: more than three outputs in one launch");
    work.job[work.count++] = job;
    most_heads = std::max<int64_t>(most_heads, job.heads);
  }
  if (work.count == 0) return;
  const dim3 grid{unsigned((tokens * most_heads + 3) / 4), unsigned(work.count)};
  prepare_heads_kernel<<<grid, 128, 0, stream>>>(work, tokens, head_dim, positions, cache_capacity);
  check(cudaGetLastError());
}

void prepare_heads(float* x, int64_t tokens, int heads, int head_dim, const HeadsStep& step, const Positions& positions,
                   float* cache_target, int64_t cache_capacity, cudaStream_t stream) {
  const HeadsJob job{x, heads, step, cache_target};
  prepare_heads(std::span(&job, 1), tokens, head_dim, positions, cache_capacity, stream);
}

void attention(const float* q, const KvCache& cache, int64_t tokens, int n_head, int n_head_kv, int head_dim,
               const Positions& positions, const Activations& out, cudaStream_t stream) {
  if (tokens <= 0) return;
  if (head_dim % 8 != 0 || head_dim > 128)
    throw Error("GPU attention: head_dim " + std::to_string(head_dim), {.expected = "a multiple of 8, at most 128"});
  if (n_head_kv <= 0 || n_head % n_head_kv != 0) throw Error("GPU attention: " + std::to_string(n_head) + " query heads over " + std::to_string(n_head_kv) + " key/value heads");
  const int64_t per_window = positions.tokens_per_window;
  const float scale = 1.0f / sqrtf(float(head_dim));
  const int lanes_per_key = head_dim / 4;
  if (per_window == 1 && (lanes_per_key & (lanes_per_key - 1)) == 0) {  // decoding: flash-decoding
    // Under a graph the position is read on the device: launch for the largest it can be.
    const int64_t last = positions.device_first_position ? cache.capacity - 1 : positions.first_position;
    const int64_t splits = last / kSplitKeys + 1, windows = tokens;
    float* partial = nullptr;  // stream-ordered scratch: graph-capturable, no device-wide synchronisation
    check(cudaMallocAsync(reinterpret_cast<void**>(&partial), size_t(windows * n_head * splits * (head_dim + 2)) * sizeof(float), stream));
    const dim3 grid{unsigned(splits), unsigned(n_head), unsigned(windows)};
    auto split = [&]<int L>() {
      decode_attention_split_kernel<L><<<grid, 32 * kDecodeWarps, 0, stream>>>(q, cache.k, cache.v, cache.capacity, n_head, n_head_kv,
                                                                                 head_dim, positions, scale, partial);
    };
    switch (lanes_per_key) {
      case 2: split.template operator()<2>(); break;
      case 4: split.template operator()<4>(); break;
      case 8: split.template operator()<8>(); break;
      case 16: split.template operator()<16>(); break;
      default: split.template operator()<32>(); break;
    }
    dispatch_half(out.half_dtype, [&]<DType T>() {
      decode_attention_combine_kernel<T><<<dim3(unsigned(n_head), unsigned(windows)), 128, 0, stream>>>(partial, int(splits), positions, n_head, head_dim, out);
    });
    check(cudaGetLastError());
    check(cudaFreeAsync(partial, stream));
    return;
  }
  if (head_dim == 64 || head_dim == 128) {  // the tensor cores
    if (head_dim == 64) launch_attention_mma<8>(q, cache, tokens, n_head, n_head_kv, positions, scale, out, stream);
    else launch_attention_mma<16>(q, cache, tokens, n_head, n_head_kv, positions, scale, out, stream);
    return;
  }
  const dim3 grid(unsigned((per_window + 31) / 32), unsigned(n_head), unsigned(tokens / per_window));
  dispatch_half(out.half_dtype, [&]<DType T>() {
    auto launch = [&]<int P>() {
      attention_kernel<P, T><<<grid, 256, 0, stream>>>(q, cache.k, cache.v, cache.capacity, n_head, n_head_kv, head_dim, positions, scale, out);
    };
    const int p = head_dim / 8;
    if (p <= 1) launch.template operator()<1>();
    else if (p <= 2) launch.template operator()<2>();
    else if (p <= 4) launch.template operator()<4>();
    else if (p <= 8) launch.template operator()<8>();
    else launch.template operator()<16>();
  });
  check(cudaGetLastError());
}

void swiglu(const float* gate, const float* up, int64_t rows, int64_t n, int64_t stride, const Activations& out, cudaStream_t stream) {
  if (rows <= 0 || n <= 0) return;
  if (stride < n) throw Error("GPU SwiGLU: rows of " + std::to_string(n) + " values " + std::to_string(stride) + " apart");
  dispatch_half(out.half_dtype,
                [&]<DType T>() { swiglu_kernel<T><<<elementwise_grid(rows * n), 256, 0, stream>>>(gate, up, rows, n, stride, out); });
  check(cudaGetLastError());
}

void swiglu(const float* gate, const float* up, int64_t n, const Activations& out, cudaStream_t stream) {
  swiglu(gate, up, 1, n, n, out, stream);
}

void target_log_probs(const float* logits, int64_t rows, int64_t n, const int32_t* targets, float* out, cudaStream_t stream) {
  if (rows <= 0) return;
  if (n <= 0 || n > INT32_MAX) throw Error("GPU log-probabilities: rows of " + std::to_string(n) + " values");
  target_log_probs_kernel<<<unsigned(rows), 1024, 0, stream>>>(logits, n, targets, out);
  check(cudaGetLastError());
}

void row_klds(const float* logits, int64_t n, const int64_t* rows, int64_t count, const float* reference, double* out, cudaStream_t stream) {
  if (count <= 0) return;
  if (n <= 0 || count > INT32_MAX) throw Error("GPU KL-divergence: " + std::to_string(count) + " rows of " + std::to_string(n) + " values");
  row_klds_kernel<<<unsigned(count), 1024, 0, stream>>>(logits, n, rows, reference, out);
  check(cudaGetLastError());
}

void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* out, cudaStream_t stream) {
  if (rows <= 0) return;
  if (n <= 0 || n > INT32_MAX) throw Error("GPU argmax: rows of " + std::to_string(n) + " values");
  argmax_rows_kernel<<<unsigned(rows), 1024, 0, stream>>>(x, n, out);
  check(cudaGetLastError());
}

void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t cols, const Activations& out, cudaStream_t stream) {
  if (n <= 0) return;
  dispatch_half(out.half_dtype, [&]<DType T>() { gather_rows_kernel<T><<<elementwise_grid(n * cols), 256, 0, stream>>>(x, rows, n, cols, out); });
  check(cudaGetLastError());
}

void gather_row_bytes(const void* table, int64_t row_bytes, const int32_t* rows, int64_t n, void* out, cudaStream_t stream) {
  if (n <= 0 || row_bytes <= 0) return;
  auto launch = [&]<class Unit>() {
    const int64_t units = row_bytes / int64_t(sizeof(Unit));
    gather_row_bytes_kernel<Unit><<<elementwise_grid(n * units), 256, 0, stream>>>(static_cast<const Unit*>(table), units, rows, n,
                                                                                static_cast<Unit*>(out));
  };
  if (row_bytes % 16 == 0) launch.template operator()<uint4>();
  else if (row_bytes % 4 == 0) launch.template operator()<uint32_t>();
  else launch.template operator()<uint8_t>();
  check(cudaGetLastError());
}

void scatter_add_rows(const float* x, const int32_t* rows, const float* weights, int64_t n, int64_t cols, float* y, cudaStream_t stream) {
  if (n <= 0) return;
  scatter_add_rows_kernel<<<elementwise_grid(n * cols), 256, 0, stream>>>(x, rows, weights, n, cols, y);
  check(cudaGetLastError());
}

}  // namespace lowbit::cuda
