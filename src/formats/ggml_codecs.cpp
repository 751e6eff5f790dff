// The codec table, the plain-type passthroughs, and the row-parallel drivers.
#include "lowbit/formats/ggml_codecs.h"

#include <algorithm>
#include <array>
#include <cstring>
#include <string>

#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_fp4.h"
#include "lowbit/formats/ggml_iq1.h"
#include "lowbit/formats/ggml_iq3.h"
#include "lowbit/formats/ggml_iq2.h"
#include "lowbit/formats/ggml_iq4.h"
#include "lowbit/formats/ggml_kquants.h"
#include "lowbit/formats/ggml_legacy.h"
#include "lowbit/formats/ggml_q1_q2.h"
#include "lowbit/formats/ggml_ternary.h"

namespace lowbit {
namespace {

// ---- plain types: f32 copies, f16 / bf16 round to nearest even (ggml's GGML_FP32_TO_FP16 / _BF16) ----
// (Scalar loops the compiler vectorises: no SIMD kernels, so the CPU target goes unused.)

void f32_from_f32(const float* x, void* out, int64_t n, const float*, cpu::CpuTarget) {
  std::memcpy(out, x, size_t(n) * 4);
}
void f32_to_f32(const void* in, float* y, int64_t n, cpu::CpuTarget, cpu::OutputStores) {
  std::memcpy(y, in, size_t(n) * 4);
}

void f16_from_f32(const float* x, void* out, int64_t n, const float*, cpu::CpuTarget) {
  auto* h = static_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_f16(x[i]);
}
void f16_to_f32_row(const void* in, float* y, int64_t n, cpu::CpuTarget, cpu::OutputStores) {
  const auto* h = static_cast<const uint16_t*>(in);
  for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(h[i]);
}

void bf16_from_f32(const float* x, void* out, int64_t n, const float*, cpu::CpuTarget) {
  auto* h = static_cast<uint16_t*>(out);
  for (int64_t i = 0; i < n; ++i) h[i] = f32_to_bf16(x[i]);
}
void bf16_to_f32_row(const void* in, float* y, int64_t n, cpu::CpuTarget, cpu::OutputStores) {
  const auto* h = static_cast<const uint16_t*>(in);
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(h[i]);
}

// One line per type lowbit writes (also the order require_codec lists them in).
constexpr GgmlCodec kCodecs[] = {
    {GgmlType::F32, f32_from_f32, f32_to_f32, false},
    {GgmlType::F16, f16_from_f32, f16_to_f32_row, false},
    {GgmlType::BF16, bf16_from_f32, bf16_to_f32_row, false},
    {GgmlType::Q4_0, ggml::quantize_row_q4_0, ggml::dequantize_row_q4_0, true},
    {GgmlType::Q4_1, ggml::quantize_row_q4_1, ggml::dequantize_row_q4_1, true},
    {GgmlType::Q5_0, ggml::quantize_row_q5_0, ggml::dequantize_row_q5_0, true},
    {GgmlType::Q5_1, ggml::quantize_row_q5_1, ggml::dequantize_row_q5_1, true},
    {GgmlType::Q8_0, ggml::quantize_row_q8_0, ggml::dequantize_row_q8_0, false},
    {GgmlType::Q2_K, ggml::quantize_row_q2_K, ggml::dequantize_row_q2_K, true},
    {GgmlType::Q3_K, ggml::quantize_row_q3_K, ggml::dequantize_row_q3_K, true},
    {GgmlType::Q4_K, ggml::quantize_row_q4_K, ggml::dequantize_row_q4_K, true},
    {GgmlType::Q5_K, ggml::quantize_row_q5_K, ggml::dequantize_row_q5_K, true},
    {GgmlType::Q6_K, ggml::quantize_row_q6_K, ggml::dequantize_row_q6_K, true},
    {GgmlType::IQ4_NL, ggml::quantize_row_iq4_nl, ggml::dequantize_row_iq4_nl, true},
    {GgmlType::IQ4_XS, ggml::quantize_row_iq4_xs, ggml::dequantize_row_iq4_xs, true},
    {GgmlType::IQ1_S, ggml::quantize_row_iq1_s, ggml::dequantize_row_iq1_s, true},
    {GgmlType::IQ1_M, ggml::quantize_row_iq1_m, ggml::dequantize_row_iq1_m, true},
    {GgmlType::IQ2_XXS, ggml::quantize_row_iq2_xxs, ggml::dequantize_row_iq2_xxs, true},
    {GgmlType::IQ2_XS, ggml::quantize_row_iq2_xs, ggml::dequantize_row_iq2_xs, true},
    {GgmlType::IQ2_S, ggml::quantize_row_iq2_s, ggml::dequantize_row_iq2_s, true},
    {GgmlType::IQ3_XXS, ggml::quantize_row_iq3_xxs, ggml::dequantize_row_iq3_xxs, true},
    {GgmlType::IQ3_S, ggml::quantize_row_iq3_s, ggml::dequantize_row_iq3_s, true},
    {GgmlType::TQ1_0, ggml::quantize_row_tq1_0, ggml::dequantize_row_tq1_0, false},
    {GgmlType::TQ2_0, ggml::quantize_row_tq2_0, ggml::dequantize_row_tq2_0, false},
    {GgmlType::MXFP4, ggml::quantize_row_mxfp4, ggml::dequantize_row_mxfp4, false},
    {GgmlType::NVFP4, ggml::quantize_row_nvfp4, ggml::dequantize_row_nvfp4, false},
    {GgmlType::Q1_0, ggml::quantize_row_q1_0, ggml::dequantize_row_q1_0, false},
    {GgmlType::Q2_0, ggml::quantize_row_q2_0, ggml::dequantize_row_q2_0, false},
};

const GgmlCodec& require_codec(GgmlType type) {
  const GgmlCodec* codec = ggml_codec(type);
  if (!codec) {
    std::string known = "one of";
    for (const GgmlCodec& c : kCodecs) {
      known += ' ';
      known += ggml_type_name(c.type);
    }
    throw Error("lowbit has no codec for ggml type " + std::string(ggml_type_name(type)), {.expected = known});
  }
  return *codec;
}

// Rows per parallel chunk: enough values (~64k) that scheduling costs little next to quantizing.
int64_t row_grain(int64_t cols) { return std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(cols, 1)); }

}  // namespace

bool ggml_requires_imatrix(GgmlType type) { return ggml_type_info(type).needs_imatrix; }

const GgmlCodec* ggml_codec(GgmlType type) {
  for (const GgmlCodec& codec : kCodecs)
    if (codec.type == type) return &codec;
  return nullptr;
}

size_t ggml_row_bytes(GgmlType type, int64_t cols) {
  const FormatInfo& info = ggml_type_info(type);
  if (cols < 0 || cols % info.block_elements != 0)
    throw Error("a " + std::string(info.name) + " row of " + std::to_string(cols) +
                    " values is not a whole number of " + std::to_string(info.block_elements) + "-value blocks",
                {.expected = "a row length that is a multiple of " + std::to_string(info.block_elements)});
  return size_t(cols / info.block_elements) * info.block_bytes;
}

void quantize_rows(GgmlType type, const float* x, int64_t rows, int64_t cols, const float* weights, void* dst,
                   cpu::CpuTarget target) {
  const GgmlCodec& codec = require_codec(type);
  const size_t row_bytes = ggml_row_bytes(type, cols);
  if (rows <= 0 || cols == 0) return;
  auto* out = static_cast<std::byte*>(dst);
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      codec.quantize_row(x + r * cols, out + size_t(r) * row_bytes, cols, weights, target);
  });
}

void dequantize_rows(GgmlType type, const void* src, int64_t rows, int64_t cols, float* dst,
                     cpu::CpuTarget target) {
  const GgmlCodec& codec = require_codec(type);
  const size_t row_bytes = ggml_row_bytes(type, cols);
  if (rows <= 0 || cols == 0) return;
  const auto* in = static_cast<const std::byte*>(src);
  const cpu::OutputStores stores = size_t(rows) * size_t(cols) * sizeof(float) >= cpu::kStreamingBytes
                                       ? cpu::OutputStores::streaming
                                       : cpu::OutputStores::cached;
  parallel_for(rows, row_grain(cols), [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r)
      codec.dequantize_row(in + size_t(r) * row_bytes, dst + r * cols, cols, target, stores);
  });
}

}  // namespace lowbit
