// Matrix products with quantized weights on the GPU: Y = X · Wᵀ for a weight W [rows = out features,
// cols = in features] stored as its checkpoint stores it, and activations X [tokens, cols].
//
// - 4-bit (bitsandbytes nf4/fp4, plain or double-quantized scales; ggml q4_K): one fused kernel reads
//   the packed codes once (re-laid in tile order once, prepare_fused), decodes them in registers and
//   multiplies on the tensor cores (mma.sync, bf16/f16 in, float32 sums). Few tokens are bound by reading the weight; this is where a 4-bit
//   weight pays, ~4x fewer bytes than bf16. On Hopper a second kernel (warpgroup mma, the weight's
//   values dequantized in registers) serves 48-256 tokens; from dequantize_tokens on the weight is
//   dequantized into the context's scratch and cuBLAS multiplies, whose large-tile GEMM neither matches.
// - LLM.int8 (bitsandbytes row-wise int8 with outlier decomposition): the bulk on int8 tensor cores
//   (cuBLASLt, int32 sums), the outlier activation columns in 16-bit, as include/lowbit/formats/
//   bnb_int8.h defines; the int8 codes, scales and int32 sums are exact, so the result matches the CPU
//   to the last f16 ulp of the outlier sum's order.
//
// Every pointer is a device pointer; functions only enqueue work on `stream` and throw lowbit::Error
// for invalid arguments (naming what is wrong) or a CUDA error at launch. Declared only when lowbit was
// built with LOWBIT_CUDA (LOWBIT_HAVE_CUDA is then defined).
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "lowbit/core/dtype.h"
#include "lowbit/formats/format.h"
#include "lowbit/kernels/cuda/codecs.h"

namespace lowbit::cuda {

// cuBLAS handles and a scratch buffer that grows on demand; one per stream at a time (not thread-safe).
class MatmulContext {
 public:
  MatmulContext();
  ~MatmulContext();
  MatmulContext(const MatmulContext&) = delete;
  MatmulContext& operator=(const MatmulContext&) = delete;

  // Which way cuBLASLt computes the LLM.int8 sums: the faster of both, timed once per shape (default),
  // or one fixed way (tests cover both).
  enum class Int8Layout { fastest, tokens_by_rows, rows_by_tokens };
  void set_int8_layout(Int8Layout layout);

  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// A bitsandbytes 4-bit weight: rows * cols / 2 packed bytes (two codes per byte, the first in the
// high nibble, row-major), with plain scales (absmax) or double-quantized ones (nested.codes set).
struct Bnb4bitWeight {
  bnb::QuantType type = bnb::QuantType::nf4;
  const uint8_t* packed = nullptr;
  const float* absmax = nullptr;  // plain: one per block
  NestedScales nested;            // double quant: used when nested.codes is set
  int64_t rows = 0, cols = 0, blocksize = 64;
};

// A ggml q4_K weight: rows * cols / 256 blocks of 144 bytes, row-major.
struct Q4KWeight {
  const void* blocks = nullptr;
  int64_t rows = 0, cols = 0;
};

// A 4-bit weight re-laid for the fused kernel: the same code and scale bytes in tile order (each warp
// load then reads 512 contiguous bytes), made once on the device, e.g. when a model is loaded; the
// checkpoint's bytes are left as they are. It owns its device memory. An nf4/fp4 weight is complete in
// it (the cuBLAS path dequantizes from it: dequantize_fused), so the checkpoint's buffers may be freed; a
// q4_K weight keeps the description of the blocks it was made from, which the cuBLAS path dequantizes:
// those must outlive it.
// Needs rows % 16 == 0 and cols % 64 == 0 (q4_K: % 256); nf4/fp4 blocksizes that are powers of two >= 64.
struct Fused4bitWeight {
  enum class Format { nf4, fp4, q4_K };
  Format format = Format::nf4;
  int64_t rows = 0, cols = 0;
  Q4KWeight source_q4_K;  // q4_K
  const uint8_t* codes = nullptr;
  const void* scales = nullptr;  // per row and 64 values: float absmax or 8-bit nested code; q4_K headers
  std::shared_ptr<void> memory;
  size_t bytes() const;          // codes + scales, as the kernel reads them
};
Fused4bitWeight prepare_fused(const Bnb4bitWeight& weight, cudaStream_t stream);
Fused4bitWeight prepare_fused(const Q4KWeight& weight, cudaStream_t stream);
// Several prepared weights of one format and row length as one, their rows one after another: one
// launch of the fused kernel then serves them all (a feed-forward block's gate and up at decoding). A
// stacked q4_K weight has no source blocks: only matmul_4bit_fused and matmul_4bit_fused_f32 take it.
Fused4bitWeight stack_fused(std::span<const Fused4bitWeight* const> parts, cudaStream_t stream);
// Rows [first, first + count) of a prepared or stacked weight as a weight of their own that shares its
// memory (a stacked gate's or up's own rows); first and count are multiples of 16. A q4_K part has no source blocks.
Fused4bitWeight fused_rows(const Fused4bitWeight& weight, int64_t first, int64_t count);
// An nf4/fp4 weight's values, from its fused layout alone, into out [rows, cols] (bf16 or f16, 16-byte
// aligned): the bytes dequantize_4bit gives from the weight it was made from. matmul_4bit's many-token
// path and the model runtime's dequantize this way, stacked rows included.
void dequantize_fused(const Fused4bitWeight& weight, DType dtype, void* out, cudaStream_t stream);

// Token counts from which the 4-bit products dequantize into scratch and call cuBLAS: kDequantizeTokens
// where only the mma.sync kernel serves the weight, kWideDequantizeTokens where the wide kernel does (an
// sm_90 GPU, rows % 64 == 0; it serves kWideTokens and more). From H100 measurements: docs/benchmarks.md.
inline constexpr int64_t kDequantizeTokens = 96;
inline constexpr int64_t kWideTokens = 48, kWideDequantizeTokens = 257;  // the wide kernel: 48-256 tokens
int64_t dequantize_tokens(const Fused4bitWeight& weight);

// y [tokens, rows] = x [tokens, cols] · Wᵀ, x and y in `dtype` (bf16 or f16), row-major, 16-byte aligned.
void matmul_4bit(MatmulContext& context, const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens,
                 void* y, cudaStream_t stream);
// The fused kernels alone, whatever the token count (for tests and benchmarks): from kWideTokens on the
// wide kernel where it serves the weight, else the mma.sync kernel.
void matmul_4bit_fused(const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, void* y,
                       cudaStream_t stream);
// The same product into float32 y [tokens, rows] (y += with accumulate): the model runtime's path, where
// the output joins the float32 residual stream without a 16-bit rounding or a second kernel.
void matmul_4bit_fused_f32(const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, float* y, bool accumulate,
                           cudaStream_t stream);

// The wide kernel alone (Hopper's warpgroup mma; for tests and benchmarks): the weight's values
// dequantized in registers as dequantize_4bit / dequantize_ggml round them, float32 sums. Needs an sm_90
// GPU, a build for sm_90a (the default) and rows % 64 == 0 (wide_4bit_available); throws otherwise.
bool wide_4bit_available(int64_t rows);
void matmul_4bit_wide(const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, void* y, cudaStream_t stream);
void matmul_4bit_wide_f32(const Fused4bitWeight& weight, DType dtype, const void* x, int64_t tokens, float* y, bool accumulate,
                          cudaStream_t stream);
// A bitsandbytes LLM.int8 weight (row-wise, threshold 0): cb [rows, cols] int8, scb [rows] float.
struct Int8Weight {
  const int8_t* cb = nullptr;
  const float* scb = nullptr;
  int64_t rows = 0, cols = 0;
};

// y [tokens, rows] f16 = LLM.int8(x [tokens, cols] f16, W): bnb::llm_int8_matmul on the GPU. threshold 0
// disables the outlier decomposition. Needs cols % 16 == 0 and rows % 4 == 0 (int8 tensor cores).
void llm_int8_matmul(MatmulContext& context, const Int8Weight& weight, const void* x, int64_t tokens, float threshold,
                     void* y, cudaStream_t stream);

// y [tokens, rows] = x · wᵀ with a 16-bit weight w [rows, cols] through cuBLAS (float32 sums): the
// reference the quantized products are measured against, and the large-batch 4-bit path.
void matmul_16bit(MatmulContext& context, DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                  int64_t tokens, void* y, cudaStream_t stream);

// The same product with float32 outputs, y (=, or += with accumulate: a residual added in the same pass)
// [tokens, rows] = x [tokens, cols] (bf16 or f16) · wᵀ: the model runtime's path for many tokens.
void matmul_16bit_f32_out(MatmulContext& context, DType dtype, const void* w, int64_t rows, int64_t cols, const void* x,
                          int64_t tokens, float* y, bool accumulate, cudaStream_t stream);

// y [tokens, rows] (=, or += with accumulate) = x [tokens, cols] · wᵀ, everything float32 (cuBLAS with
// float32 multiplies, no TF32): float32 and float16 weights keep their precision.
void matmul_f32(MatmulContext& context, const float* w, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                bool accumulate, cudaStream_t stream);

// ---- any ggml weight, few tokens ----

inline constexpr int64_t kMatvecMaxTokens = 8;
// Whether matvec_ggml takes a `type` weight of `cols` columns: the types dequantize_ggml covers, cols a
// multiple of 8 and of the type's block.
bool has_ggml_matvec(GgmlType type, int64_t cols);
// y [tokens, rows] (=, or += with accumulate) = x [tokens, cols] · Wᵀ in float32, W's blocks decoded in
// registers to the values dequantize_rows gives (one warp per row, the weight read once for all tokens);
// tokens 1..kMatvecMaxTokens, x 16-byte aligned.
void matvec_ggml(GgmlType type, const void* blocks, int64_t rows, int64_t cols, const float* x, int64_t tokens, float* y,
                 bool accumulate, cudaStream_t stream);

}  // namespace lowbit::cuda
