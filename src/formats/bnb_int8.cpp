// bitsandbytes LLM.int8 on the CPU: row-wise quantization, dequantization and the int8 matmul
// with outlier decomposition. The arithmetic is described in include/lowbit/formats/bnb_int8.h.
#include "lowbit/formats/bnb_int8.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <string>

#include "formats/bnb_int8_rows.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/gpu_rcp_approx.h"
#include "lowbit/formats/value_check.h"

namespace lowbit::bnb {
namespace {

ErrorContext context_for(std::string_view tensor_name, std::string expected = {}) {
  return {.tensor = std::string(tensor_name), .expected = std::move(expected)};
}

// The [rows, cols] of a 1-D (one row) or 2-D f32/f16/bf16 input; throws for anything else.
void matrix_shape(const TensorView& input, int64_t& rows, int64_t& cols, std::string_view tensor_name) {
  if (input.dtype != DType::f32 && input.dtype != DType::f16 && input.dtype != DType::bf16)
    throw Error("bnb int8 quantization: unsupported dtype " + std::string(dtype_name(input.dtype)),
                context_for(tensor_name, "f32, f16 or bf16"));
  if (input.shape.size() == 1) {
    rows = 1;
    cols = input.shape[0];
  } else if (input.shape.size() == 2) {
    rows = input.shape[0];
    cols = input.shape[1];
  } else {
    throw Error("bnb int8 quantization: shape " + shape_to_string(input.shape) + " is not a matrix",
                context_for(tensor_name, "a 1-D or 2-D tensor"));
  }
}

[[noreturn]] void throw_non_finite(int64_t index, int64_t cols, float value, std::string_view tensor_name) {
  throw Error("bnb int8 quantization: " + describe(std::isnan(value) ? ValueProblem::nan : ValueProblem::inf, value) + " at " +
                  element_location(index, cols),
              context_for(tensor_name, "finite values"));
}

// The input as float32 rows, checked finite.
std::vector<float> load_matrix(const TensorView& input, int64_t& rows, int64_t& cols, std::string_view tensor_name) {
  matrix_shape(input, rows, cols, tensor_name);
  std::vector<float> values(size_t(rows * cols));
  convert_to_f32(input.dtype, input.bytes.data(), values.data(), values.size());
  for (size_t i = 0; i < values.size(); ++i)
    if (!std::isfinite(values[i])) throw_non_finite(int64_t(i), cols, values[i], tensor_name);
  return values;
}

// One row: SCB, then the codes. |x| >= threshold (threshold > 0) is an outlier: left out of SCB, coded 0.
void quantize_row(const float* x, int64_t cols, float threshold, int8_t* codes, float& scb) {
  auto is_outlier = [threshold](float v) { return threshold > 0.0f && std::fabs(v) >= threshold; };
  float absmax = 0.0f;
  for (int64_t c = 0; c < cols; ++c)
    if (!is_outlier(x[c])) absmax = std::fmax(absmax, std::fabs(gpu::flush_subnormal(x[c])));
  scb = absmax;
  const float scale = gpu::div_approx_ftz(127.0f, absmax);  // +Inf for a zero row
  for (int64_t c = 0; c < cols; ++c) {
    const float v = gpu::mul_ftz(x[c], scale);
    // A zero row gives 0 * Inf = NaN, which the GPU's float->int conversion turns into 0.
    codes[c] = (is_outlier(x[c]) || std::isnan(v)) ? int8_t(0) : int8_t(std::nearbyint(v));
  }
}

void check_output_dtype(DType out_dtype) {
  if (out_dtype != DType::f32 && out_dtype != DType::f16 && out_dtype != DType::bf16)
    throw Error("bnb int8 dequantization: unsupported output dtype " + std::string(dtype_name(out_dtype)),
                {.expected = "f32, f16 or bf16"});
}

void check_dequantize_inputs(const Int8RowwiseQuantized& q, DType out_dtype, size_t out_bytes) {
  if (q.rows < 0 || q.cols < 0 || int64_t(q.cb.size()) != q.rows * q.cols || int64_t(q.scb.size()) != q.rows)
    throw Error("bnb int8 dequantization: CB/SCB sizes do not match " + std::to_string(q.rows) + "x" + std::to_string(q.cols));
  const size_t want = q.cb.size() * dtype_size(out_dtype);
  if (out_bytes != want)
    throw Error("bnb int8 dequantization: output buffer of " + std::to_string(out_bytes) + " bytes",
                {.expected = std::to_string(want) + " bytes"});
}

}  // namespace

Int8RowwiseQuantized quantize_int8_rowwise_reference(const TensorView& input, float threshold,
                                                     std::string_view tensor_name) {
  if (!(threshold >= 0.0f))
    throw Error("bnb int8 quantization: threshold must be >= 0", context_for(tensor_name, "threshold >= 0"));
  Int8RowwiseQuantized q;
  const std::vector<float> values = load_matrix(input, q.rows, q.cols, tensor_name);
  q.cb.resize(values.size());
  q.scb.resize(size_t(q.rows));
  parallel_for(q.rows, 0, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      quantize_row(&values[size_t(r * q.cols)], q.cols, threshold, &q.cb[size_t(r * q.cols)], q.scb[size_t(r)]);
  });
  if (threshold > 0.0f) {
    for (int64_t c = 0; c < q.cols; ++c)
      for (int64_t r = 0; r < q.rows; ++r)
        if (std::fabs(values[size_t(r * q.cols + c)]) >= threshold) {
          q.outlier_cols.push_back(c);
          break;
        }
    // bitsandbytes zeroes the outlier columns only for matrices: a single row keeps its other codes.
    if (q.rows > 1)
      for (int64_t c : q.outlier_cols)
        for (int64_t r = 0; r < q.rows; ++r) q.cb[size_t(r * q.cols + c)] = 0;
  }
  return q;
}

Int8RowwiseQuantized quantize_int8_rowwise(const TensorView& input, float threshold, std::string_view tensor_name,
                                           cpu::CpuTarget target) {
  const detail::QuantizeInt8RowsFn fast = cpu::cpu_kernels(target).bnb_quantize_int8_rows;
  // Outliers (threshold > 0) are an activation-time feature: weights take the fast path.
  if (!fast || threshold != 0.0f) return quantize_int8_rowwise_reference(input, threshold, tensor_name);
  Int8RowwiseQuantized q;
  matrix_shape(input, q.rows, q.cols, tensor_name);
  q.cb.resize(size_t(q.rows * q.cols));
  q.scb.resize(size_t(q.rows));
  // Rows run in any order; keep the smallest bad index so the message does not depend on timing.
  std::atomic<int64_t> first_bad{-1};
  parallel_for(q.rows, 0, [&](int64_t first, int64_t last) {
    const int64_t bad = fast(input.dtype, input.bytes.data(), q.cols, first, last, q.cb.data(), q.scb.data());
    if (bad < 0) return;
    int64_t seen = first_bad.load();
    while ((seen < 0 || bad < seen) && !first_bad.compare_exchange_weak(seen, bad)) {}
  });
  if (const int64_t bad = first_bad.load(); bad >= 0) {
    float value;
    convert_to_f32(input.dtype, input.bytes.data() + size_t(bad) * dtype_size(input.dtype), &value, 1);
    throw_non_finite(bad, q.cols, value, tensor_name);
  }
  return q;
}

Tensor dequantize_int8_rowwise(const Int8RowwiseQuantized& q, cpu::CpuTarget target) {
  return dequantize_int8_rowwise(q, DType::f32, target);
}

Tensor dequantize_int8_rowwise(const Int8RowwiseQuantized& q, DType out_dtype, cpu::CpuTarget target) {
  check_output_dtype(out_dtype);
  Tensor out(out_dtype, {q.rows, q.cols});
  dequantize_int8_rowwise_into(q, out_dtype, out.buffer.span(), target);
  return out;
}

Tensor dequantize_int8_rowwise_reference(const Int8RowwiseQuantized& q, DType out_dtype) {
  check_output_dtype(out_dtype);
  Tensor out(out_dtype, {q.rows, q.cols});
  check_dequantize_inputs(q, out_dtype, out.buffer.size());
  parallel_for(q.rows, 0, [&](int64_t first, int64_t last) {
    std::vector<float> row(size_t(q.cols));
    for (int64_t r = first; r < last; ++r) {
      for (int64_t c = 0; c < q.cols; ++c) row[size_t(c)] = int8_value(q.cb[size_t(r * q.cols + c)], q.scb[size_t(r)]);
      convert_from_f32(row.data(), out_dtype, out.buffer.data() + size_t(r * q.cols) * dtype_size(out_dtype), row.size());
    }
  });
  return out;
}

void dequantize_int8_rowwise_into(const Int8RowwiseQuantized& q, DType out_dtype, std::span<std::byte> out,
                                  cpu::CpuTarget target) {
  check_output_dtype(out_dtype);
  check_dequantize_inputs(q, out_dtype, out.size());
  const detail::DequantizeInt8RowsFn fast = cpu::cpu_kernels(target).bnb_dequantize_int8_rows;
  if (!fast) {
    const Tensor reference = dequantize_int8_rowwise_reference(q, out_dtype);
    std::copy(reference.buffer.data(), reference.buffer.data() + reference.buffer.size(), out.data());
    return;
  }
  const size_t row_bytes = size_t(q.cols) * dtype_size(out_dtype);
  const bool stream = out.size() >= cpu::kStreamingBytes && reinterpret_cast<uintptr_t>(out.data()) % 64 == 0 && row_bytes % 64 == 0;
  parallel_for(q.rows, 0, [&](int64_t first, int64_t last) {
    fast(q.cb.data(), q.scb.data(), q.cols, first, last, out_dtype, out.data(), stream);
  });
}

Int8MatmulResult llm_int8_matmul_detailed(const TensorView& x, const Int8RowwiseQuantized& weight, float threshold,
                                          std::string_view tensor_name, cpu::CpuTarget target) {
  if (x.dtype != DType::f16 || x.shape.size() != 2)
    throw Error("LLM.int8 matmul: activations must be a 2-D f16 matrix, got " + std::string(dtype_name(x.dtype)) + " " +
                shape_to_string(x.shape), context_for(tensor_name, "f16 [m, k]"));
  const int64_t m = x.shape[0], k = x.shape[1], n = weight.rows;
  if (weight.cols != k || int64_t(weight.cb.size()) != n * k || int64_t(weight.scb.size()) != n)
    throw Error("LLM.int8 matmul: weight is " + std::to_string(n) + "x" + std::to_string(weight.cols) +
                ", activations have " + std::to_string(k) + " columns", context_for(tensor_name, "weight [n, k]"));

  Int8MatmulResult result;
  result.activations = quantize_int8_rowwise(x, threshold, tensor_name, target);
  const Int8RowwiseQuantized& a = result.activations;
  result.acc.assign(size_t(m * n), 0);
  result.int8_part = Tensor(DType::f16, {m, n});
  result.output = Tensor(DType::f16, {m, n});
  std::span<uint16_t> int8_part = result.int8_part.as<uint16_t>();
  std::span<uint16_t> output = result.output.as<uint16_t>();
  const std::span<const uint16_t> x_bits = x.as<uint16_t>();

  // The outlier columns of the weight, dequantized from int8 and rounded to f16 as bitsandbytes does.
  std::vector<float> weight_outliers(size_t(n) * a.outlier_cols.size());
  for (int64_t c = 0; c < n; ++c)
    for (size_t j = 0; j < a.outlier_cols.size(); ++j) {
      const float w = int8_value(weight.cb[size_t(c * k + a.outlier_cols[j])], weight.scb[size_t(c)]);
      weight_outliers[size_t(c) * a.outlier_cols.size() + j] = f16_to_f32(f32_to_f16(w));
    }

  parallel_for(m, 0, [&](int64_t first, int64_t last) {
    for (int64_t r = first; r < last; ++r)
      for (int64_t c = 0; c < n; ++c) {
        const int8_t* ca = &a.cb[size_t(r * k)];
        const int8_t* cb = &weight.cb[size_t(c * k)];
        int32_t acc = 0;
        for (int64_t i = 0; i < k; ++i) acc += int32_t(ca[i]) * int32_t(cb[i]);
        const size_t o = size_t(r * n + c);
        result.acc[o] = acc;
        const float scaled = float(acc) * a.scb[size_t(r)] * weight.scb[size_t(c)];  // left to right, float32
        int8_part[o] = f32_to_f16(scaled * kInt8MatmulDequantScale);
        float sum = f16_to_f32(int8_part[o]);
        if (!a.outlier_cols.empty()) {
          float dot = 0.0f;
          for (size_t j = 0; j < a.outlier_cols.size(); ++j)
            dot = std::fma(f16_to_f32(x_bits[size_t(r * k + a.outlier_cols[j])]),
                           weight_outliers[size_t(c) * a.outlier_cols.size() + j], dot);
          sum += dot;
        }
        output[o] = f32_to_f16(sum);
      }
  });
  return result;
}

Tensor llm_int8_matmul(const TensorView& x, const Int8RowwiseQuantized& weight, float threshold,
                       std::string_view tensor_name, cpu::CpuTarget target) {
  return std::move(llm_int8_matmul_detailed(x, weight, threshold, tensor_name, target).output);
}

}  // namespace lowbit::bnb
