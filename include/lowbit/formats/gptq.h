// GPTQ (Frantar et al., 2022) writing ggml's block formats and bitsandbytes' nf4/fp4 and int8 rows:
// each weight row is quantized column by column, in order, and every column's rounding error is fed to
// the columns not yet quantized through the inverse of the layer input's Hessian H = XᵀX, so the error
// that survives is the one the layer's output ‖(W − Ŵ)X‖² is least sensitive to.
//
// The codes land on the format's own grid: when the sweep reaches the first column of one of the
// format's blocks (32 or 256 values along the row), the block's scales are fitted by the format's own
// quantizer from the error-updated weights, and each of its values is then rounded to the nearest
// point of that fixed grid. The bytes are the format's ordinary bytes: any dequantizer reads them.
// Columns go in their stored order: GPTQ's act-order (columns sorted by diag(H)) cannot be stored in
// these formats, whose blocks are runs of consecutive columns.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/ggml_types.h"

namespace lowbit {

// What the sweep reads: U, the upper Cholesky factor of (H + λI)⁻¹ (Uᵀ U = (H + λI)⁻¹), with
// λ = damp × mean(diag H). A dead input (H_ii = 0: the column never saw a non-zero activation) gets
// H_ii = 1, which leaves its column rounded to nearest. If the factorization fails (H not positive
// definite in practice), λ grows tenfold, up to four times, before lowbit::Error.
class GptqFactor {
 public:
  GptqFactor(std::span<const float> hessian, int64_t cols, float damp = 0.01f);

  int64_t cols() const { return cols_; }
  const float* row(int64_t j) const { return upper_.data() + j * cols_; }  // U[j][*], zero left of j
  float damp_used() const { return damp_used_; }                           // λ / mean(diag H) in the end

 private:
  int64_t cols_ = 0;
  std::vector<float> upper_;
  float damp_used_ = 0;
};

// Whether GPTQ can write `type`: the affine ggml types q1_0, q4_0, q4_1, q5_0, q5_1, q8_0, q2_K … q6_K,
// tq1_0, tq2_0; the per-value codebooks of iq4_nl, iq4_xs, mxfp4, nvfp4; and the codebooks over groups
// of values of iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s (a group of 8 coded at once, at its
// first column).
bool gptq_supports(GgmlType type);

// Quantizes rows × cols row-major weights into dst (rows × ggml_row_bytes(type, cols) bytes).
// `importance`: cols per-column weights handed to the format's quantizer when it fits a block's scales
// (diag(H)/tokens is the importance matrix), or null for its unweighted fit. Rows are independent and
// spread over lowbit::parallel_for; the bytes do not depend on it. Throws lowbit::Error for a type
// gptq_supports rejects, a factor of other size, or cols that are not whole blocks. `target`: the CPU
// kernels of the format's quantizer.
void gptq_quantize_rows(GgmlType type, const float* weights, int64_t rows, int64_t cols, const GptqFactor& factor,
                        const float* importance, void* dst, cpu::CpuTarget target = cpu::best_cpu_target());

// The same sweep writing bitsandbytes' nf4/fp4: when it reaches one of the blocks (blocksize values
// along the row, so cols % blocksize == 0), the block's absmax is taken from the error-updated values,
// and each value is then coded as bitsandbytes codes it (dQuantizeNF4/FP4 of value × rcp(absmax)); its
// error against the code's dequantized value feeds the later columns. `weight`: [rows, cols], f32, f16
// or bf16, finite. Double quant: the absmaxes' 8-bit codes are fitted once every block has its absmax,
// as bitsandbytes fits them, so the sweep's errors are measured against the exact absmax, the stored
// scale differing by the nested code's rounding. With H = identity the bytes are quantize_4bit's.
// Throws lowbit::Error naming `tensor_name` for a shape, blocksize or factor that does not fit, or a
// value that is not finite.
bnb::Bnb4bitQuantized gptq_quantize_4bit(const TensorView& weight, const bnb::Bnb4bitOptions& options, const GptqFactor& factor,
                                         std::string_view tensor_name = {});

// The same sweep writing bitsandbytes' int8 rows (LLM.int8's weights, threshold 0): each row's SCB is its
// absmax as bitsandbytes takes it, before the sweep (the scale spans the whole row), and each error-updated
// value is coded round(v × 127 / SCB), clamped to ±127. With H = identity the bytes are
// quantize_int8_rowwise's. `weight`: [rows, cols] in f16 (what bitsandbytes quantizes), bf16 or f32.
bnb::Int8RowwiseQuantized gptq_quantize_int8_rows(const TensorView& weight, const GptqFactor& factor,
                                                  std::string_view tensor_name = {},
                                                  cpu::CpuTarget target = cpu::best_cpu_target());

}  // namespace lowbit
