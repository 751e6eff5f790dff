// The non-matmul steps of a Llama-family block on the GPU: RMSNorm, the heads' bias / norm / RoPE,
// causal grouped-query attention, SwiGLU. Plain device pointers and a stream, like codecs.h; the model
// runtime (src/model/cuda) strings them together with the matmuls of matmul.h.
//
// Activations: the residual stream and everything between matmuls stay float32; a step whose result
// feeds a matmul writes it twice, in float32 (the few-token path, importance matrices) and in the
// 16-bit `half_dtype` (bf16 or f16) that the tensor-core path multiplies. Every function only enqueues
// work and throws lowbit::Error for invalid arguments or a launch error. Declared only when lowbit was
// built with LOWBIT_CUDA.
#pragma once

#include <cstdint>
#include <span>

#include "lowbit/core/dtype.h"

typedef struct CUstream_st* cudaStream_t;

namespace lowbit::cuda {

// A matmul input in both forms (half may be null when no 16-bit copy is wanted).
struct Activations {
  float* f32 = nullptr;
  void* half = nullptr;
  DType half_dtype = DType::bf16;
};

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight, for `rows` rows of n (the mean summed in double, as
// the CPU runtime does).
void rms_norm(const float* x, const float* weight, int64_t rows, int64_t n, float eps, const Activations& out,
              cudaStream_t stream);

// Where attention's keys and values live: [windows][capacity][kv_heads][head_dim] float32. Token t of a
// batch of `windows × tokens_per_window` tokens is window t / tokens_per_window at position
// first_position + t % tokens_per_window (0 for whole windows; the cache length when decoding).
struct KvCache {
  float* k = nullptr;
  float* v = nullptr;
  int64_t capacity = 0;
};
// With `device_first_position` set, the kernels read the first position from device memory instead of
// `first_position`: one CUDA graph of a decoding step then serves every step (the host writes the new
// position before replaying it), and decoding attention is launched for the cache's whole capacity.
struct Positions {
  int64_t tokens_per_window = 0, first_position = 0;
  const int64_t* device_first_position = nullptr;
};

// Prepares one matmul output of heads [tokens][heads][head_dim] in place: adds `bias` (heads · head_dim
// or null), RMS-normalises each head by `norm` (head_dim or null, Qwen3), rotates pairs by RoPE
// (inv_freq: n_rot / 2 values from the config's RopeTable, or null for none; the first n_rot dimensions
// turn, `neox` pairs (i, i + n_rot/2), else (2i, 2i + 1), and the rotated values are scaled by mscale:
// YaRN's magnitude). With `cache` set, the result goes to the cache's keys (or values, `values`) at each
// token's position instead.
struct HeadsStep {
  const float* bias = nullptr;
  const float* norm = nullptr;
  const float* inv_freq = nullptr;
  bool neox = false;
  float eps = 1e-5f;
  int n_rot = 0;         // 0: head_dim
  float mscale = 1.0f;
};
void prepare_heads(float* x, int64_t tokens, int heads, int head_dim, const HeadsStep& step, const Positions& positions,
                   float* cache_target, int64_t cache_capacity, cudaStream_t stream);
// Several outputs of heads of the same tokens and head_dim (a block's q, k and v: at most three) in one
// launch, each as above; decoding then pays for one launch instead of three.
struct HeadsJob {
  float* x = nullptr;
  int heads = 0;
  HeadsStep step;
  float* cache_target = nullptr;
};
void prepare_heads(std::span<const HeadsJob> jobs, int64_t tokens, int head_dim, const Positions& positions, int64_t cache_capacity,
                   cudaStream_t stream);

// Causal attention of q [tokens][n_head][head_dim] (token t at its Positions position p attends to its
// window's cache entries 0..p) into out [tokens][n_head · head_dim]. Query head h reads key/value head
// h / (n_head / n_head_kv). Float32 throughout, online softmax over tiles of 32 keys (flash-style: the
// scores never reach memory). head_dim a multiple of 8, at most 128.
void attention(const float* q, const KvCache& cache, int64_t tokens, int n_head, int n_head_kv, int head_dim,
               const Positions& positions, const Activations& out, cudaStream_t stream);

// out = silu(gate) · up, elementwise over n values (SwiGLU's product, as the CPU computes it).
void swiglu(const float* gate, const float* up, int64_t n, const Activations& out, cudaStream_t stream);
// The same over `rows` rows of n values whose gate and up rows lie `stride` values apart (out rows are
// n apart): gate and up as one stacked product wrote them, [rows][gate n | up n] with up = gate + n.
void swiglu(const float* gate, const float* up, int64_t rows, int64_t n, int64_t stride, const Activations& out, cudaStream_t stream);

// out[r] = the index of row r's largest value (the first of equal ones, as std::max_element finds it),
// for `rows` rows of n: greedy decoding's next token without the logits leaving the GPU.
void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* out, cudaStream_t stream);

// out[r] = log softmax(row r of logits)[targets[r]], NaN where targets[r] is negative: perplexity's
// terms with n_vocab floats per row staying on the GPU.
void target_log_probs(const float* logits, int64_t rows, int64_t n, const int32_t* targets, float* out, cudaStream_t stream);

// out[i] = KL(reference row i ‖ log softmax(logits row rows[i])) for i < count, the reference holding
// log-probabilities (count × n): the probe's measure with the logits staying on the GPU.
void row_klds(const float* logits, int64_t n, const int64_t* rows, int64_t count, const float* reference, double* out, cudaStream_t stream);

// Mixture of experts: out[i] = x[rows[i]] for i < n rows of `cols` (the tokens routed to one expert,
// gathered into a batch), and y[rows[i]] += weights[i] · x[i] (its outputs added back to those tokens'
// residual stream; `rows` must not repeat, so no two threads add to one value).
void gather_rows(const float* x, const int32_t* rows, int64_t n, int64_t cols, const Activations& out, cudaStream_t stream);
// out[i] = row rows[i] of a table of `row_bytes`-byte rows, i < n, copied as bytes: an embedding's
// stored rows (any ggml type) gathered for dequantize_ggml. Both buffers as cudaMalloc gives them.
void gather_row_bytes(const void* table, int64_t row_bytes, const int32_t* rows, int64_t n, void* out, cudaStream_t stream);
void scatter_add_rows(const float* x, const int32_t* rows, const float* weights, int64_t n, int64_t cols, float* y, cudaStream_t stream);

}  // namespace lowbit::cuda
