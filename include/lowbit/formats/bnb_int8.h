// bitsandbytes LLM.int8: row-wise int8 quantization and the int8 matmul with outlier decomposition,
// byte for byte as its CUDA kernels (int8_vectorwise_quant, int8_linear_matmul, int8_mm_dequant).
//
// Row-wise quantization of a [rows, cols] matrix with threshold T (0 = none):
//   SCB_r  = max |x| over row r's values with |x| < T (all values when T = 0), float32;
//   scale_r = div.approx(127, SCB_r) = RN(127 * rcp.approx(SCB_r)), the GPU's fast division;
//   CB     = round-half-even(float32(x) * scale_r) as int8; 0 where |x| >= T; a zero row gives 0.
// With T > 0 the outlier columns are those holding any |x| >= T; when rows > 1 they are zeroed
// in every row of CB (their values go through the 16-bit path of the matmul instead).
// Dequantization: (float32(CB) * SCB_r) * 0.007874016f (float32 nearest 1/127), two roundings.
//
// The matmul out = X Wᵀ (X: [m, k] activations, W: [n, k] weight quantized with T = 0):
//   CA, SCA = row-wise quantization of X with threshold T;   acc = CA · CBᵀ exactly in int32;
//   int8 part = f16(float32(float32(float32(acc) * SCA_r) * SCB_c) * 6.200012e-05f)  (1/127²);
//   T > 0: out = f16(float32(int8 part) + Σ_k X[:, k] * f16(float32(CB[:, k]) * SCB * 1/127)) over the
//   outlier columns k, the sum in float32 (bitsandbytes' cuBLAS fp16 addmm; its summation order is
//   not specified, so this sum may differ from the GPU's by an fp16 ulp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "lowbit/core/host_device.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::bnb {

// float32 nearest 1/127 and 1/127², the constants of bitsandbytes' int8 dequantization.
inline constexpr float kInt8DequantScale = 0.007874016f;
inline constexpr float kInt8MatmulDequantScale = 6.200012e-05f;

// One value of row r: (code * SCB[r]) * kInt8DequantScale, rounded twice as bitsandbytes does. Read
// by the C++ compiler and by nvcc: the CPU reference, GPTQ's int8 sweep and the CUDA kernels
// (dequantize, the LLM.int8 matmul's outlier columns) compute it through this one function.
LOWBIT_HOST_DEVICE inline float int8_value(int code, float scb) {
  return mul_rn(mul_rn(float(code), scb), kInt8DequantScale);
}

struct Int8RowwiseQuantized {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<int8_t> cb;             // [rows, cols] row-major codes
  std::vector<float> scb;             // [rows] absmax of each row's non-outlier values
  std::vector<int64_t> outlier_cols;  // ascending; empty when threshold is 0
};

// Quantizes a 1-D (one row) or 2-D f32/f16/bf16 tensor, on the CPU kernels of `target`. Throws
// lowbit::Error naming `tensor_name` on NaN/Inf input, a negative threshold, another dtype or rank.
Int8RowwiseQuantized quantize_int8_rowwise(const TensorView& input, float threshold = 0.0f,
                                           std::string_view tensor_name = {},
                                           cpu::CpuTarget target = cpu::best_cpu_target());

// The scalar definition of the codes and scales, which quantize_int8_rowwise's fast CPU kernel
// (used when the machine has one and threshold is 0) must match byte for byte.
Int8RowwiseQuantized quantize_int8_rowwise_reference(const TensorView& input, float threshold = 0.0f,
                                                     std::string_view tensor_name = {});

// float32 [rows, cols]: (CB * SCB) * kInt8DequantScale, on the CPU kernels of `target`.
Tensor dequantize_int8_rowwise(const Int8RowwiseQuantized& quantized, cpu::CpuTarget target = cpu::best_cpu_target());
// The same float32 values rounded (to nearest even) to out_dtype: f32, f16 or bf16, as torch's
// .to(dtype) after bitsandbytes' int8_vectorwise_dequant.
Tensor dequantize_int8_rowwise(const Int8RowwiseQuantized& quantized, DType out_dtype,
                               cpu::CpuTarget target = cpu::best_cpu_target());
// Into a caller's buffer of exactly rows * cols * dtype_size(out_dtype) bytes (no allocation).
void dequantize_int8_rowwise_into(const Int8RowwiseQuantized& quantized, DType out_dtype, std::span<std::byte> out,
                                  cpu::CpuTarget target = cpu::best_cpu_target());
// The scalar definition of dequantization, which the fast CPU kernel must match byte for byte.
Tensor dequantize_int8_rowwise_reference(const Int8RowwiseQuantized& quantized, DType out_dtype);

// The stages of the LLM.int8 matmul, kept for inspection and testing.
struct Int8MatmulResult {
  Int8RowwiseQuantized activations;  // CA, SCA and the outlier columns of X
  std::vector<int32_t> acc;          // [m, n] CA · CBᵀ
  Tensor int8_part;                  // f16 [m, n]
  Tensor output;                     // f16 [m, n]: int8 part + outlier columns in 16-bit
};

// x: f16 [m, k]; weight: the row-wise quantization (threshold 0) of an [n, k] weight.
// threshold 0 disables the outlier decomposition. `target`: the CPU kernels that quantize x. Throws
// lowbit::Error on mismatched shapes.
Int8MatmulResult llm_int8_matmul_detailed(const TensorView& x, const Int8RowwiseQuantized& weight, float threshold,
                                          std::string_view tensor_name = {},
                                          cpu::CpuTarget target = cpu::best_cpu_target());
// Just the f16 [m, n] output.
Tensor llm_int8_matmul(const TensorView& x, const Int8RowwiseQuantized& weight, float threshold,
                       std::string_view tensor_name = {}, cpu::CpuTarget target = cpu::best_cpu_target());

}  // namespace lowbit::bnb
