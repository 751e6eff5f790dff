// The CUDA backend of LlamaRuntime: the same forward pass as the CPU's (model/llama.h), on device 0,
// over weights uploaded in their stored format. Matmuls: a few tokens read the quantized weight once
// (the fused 4-bit kernel for q4_K and for a bitsandbytes nf4/fp4 weight, which stays packed as its
// checkpoint stores it; a decode-in-registers matrix-vector product for every other type; cuBLAS for a
// 16-bit weight in the activations' type); many tokens dequantize the weight into a 16-bit tile and
// multiply on the tensor cores (cuBLAS, float32 sums). Token embeddings are gathered and
// dequantized on the GPU. The residual stream, norms, RoPE, attention and SwiGLU stay in float32; only the
// matmul inputs are rounded to 16 bits (`activations`).
//
// This header is the whole of the GPU's entry into the model: callers hold a LlamaRuntime and never
// see a CUDA type. The code lives in liblowbit_cuda.so (src/model/cuda/), which the CLI opens only for
// a GPU command and reaches through RuntimeBackend (lowbit/pipeline/cuda_backend.h); the GPU tests
// link the module and call the functions directly.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/model/llama.h"

namespace lowbit::cuda {

struct RuntimeOptions {
  DType activations = DType::bf16;  // the matmuls' 16-bit inputs: bf16 or f16
  // Decoding (generate, time_generation) replays a CUDA graph of each step instead of launching its
  // kernels one by one from the host (dense models; a mixture of experts routes on the host).
  bool decode_graph = true;
};

// What the planner's output-KLD probe runs with: its losses are small KL-divergences between
// candidates, which bf16's rounding of the matmul inputs reorders where two are close (tests/model_cuda).
inline constexpr DType kProbeActivations = DType::f16;

// Uploads `model`'s weights; the runtime keeps a reference to `model` (its mapped bytes, its embedding
// rows, its swaps), which must outlive it. Throws lowbit::Error without a GPU or for a weight the GPU
// cannot multiply.
std::unique_ptr<LlamaRuntime> make_llama_runtime(LlamaModel& model, const RuntimeOptions& options = {});

// Greedy decoding on the GPU: `prompt` in one pass, then `count` tokens one at a time against the
// key/value cache (the most probable token each time); returns the generated tokens.
std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, int count, const RuntimeOptions& options = {});

// Prefill and greedy decoding at batch 1: `prompt` tokens in one pass, then `generate` tokens one at a
// time against the key/value cache; and evaluation's pass, as many windows of `prompt` tokens at once as
// `lowbit eval` gives the runtime (LlamaRuntime::batch_windows). Each timed after a warm-up.
struct GenerationTiming {
  std::string device;            // name of the GPU
  int prompt = 0, generate = 0;
  double prefill_tokens_per_s = 0, decode_tokens_per_s = 0;
  int forward_windows = 0;
  double forward_tokens_per_s = 0;
  size_t weight_bytes = 0;       // the weights as stored on the GPU (q4_K, packed nf4/fp4: their two layouts)
  size_t decode_weight_bytes = 0;  // the weight bytes one decoding step reads (the bandwidth bound's numerator)
  size_t peak_memory_bytes = 0;  // device memory the runtime held at its peak (weights, cache, scratch)
  bool decode_graph = false;     // whether the decoding steps replayed a CUDA graph
  double upload_seconds = 0;     // the runtime's construction: weights copied to the GPU
};
GenerationTiming time_generation(LlamaModel& model, int prompt, int generate, const RuntimeOptions& options = {});

// The functions above as a program that opened liblowbit_cuda.so at run time reaches them: the module's
// second exported symbol, extern "C" const RuntimeBackend* lowbit_cuda_runtime(int abi). Bump
// kRuntimeAbi when the interface (or a type it passes, LlamaModel included) changes, so that a stale
// module is refused.
inline constexpr int kRuntimeAbi = 5;
inline constexpr const char* kRuntimeEntry = "lowbit_cuda_runtime";

class RuntimeBackend {
 public:
  virtual ~RuntimeBackend() = default;
  virtual std::unique_ptr<LlamaRuntime> make_llama_runtime(LlamaModel& model, const RuntimeOptions& options) const = 0;
  virtual std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, int count,
                                        const RuntimeOptions& options) const = 0;
  virtual GenerationTiming time_generation(LlamaModel& model, int prompt, int generate, const RuntimeOptions& options) const = 0;
};

}  // namespace lowbit::cuda
