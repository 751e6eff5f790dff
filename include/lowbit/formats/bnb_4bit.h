// bitsandbytes 4-bit blockwise quantization (NF4 and FP4), byte for byte as its CUDA kernels.
//
// Layout. The tensor is flattened row-major and cut into blocks of `blocksize` consecutive
// elements (the last block may be short). Each block b has one float32 scale absmax_b = max |x|
// over the block. Each element becomes a 4-bit code: element 2i is the HIGH nibble (bits 7-4) of
// packed byte i, element 2i+1 the low nibble. For an odd element count the last low nibble holds
// the code of a padding element 0.0 quantized with the last block's scale (7 for NF4, 0 for FP4,
// as long as the scale is not 0).
//
// Quantize (kQuantizeBlockwise): s = rcp.approx(absmax_b), the GPU's approximate reciprocal (see
// gpu_rcp_approx.h); v = x * s in float32 (.ftz); NF4: code = number of the 15 NF4 thresholds that
// v exceeds; FP4: r = number of the 7 thresholds that |v| exceeds, code = {0,1,6,7,4,5,2,3}[r],
// + 8 when v < 0. An all-zero block has absmax 0, s = +Inf, v = NaN and every code 0.
//
// Double quantization ("compress_statistics"): the block absmaxes are themselves quantized to
// 8 bits. offset = mean(absmax); c = absmax - offset; per 256 consecutive c a nested absmax
// max |c|, and code = dQuantize(c * rcp.approx(nested absmax)) over bitsandbytes' signed dynamic
// map. The scale that dequantization uses is then map[code] * nested_absmax + offset (two float32
// roundings), not the original absmax.
//
// Dequantize (kDequantizeBlockwise): y = to_dtype(float32(lut[code] * scale_b)), rounding to
// nearest even; lut equals the code map except that FP4 code 8 gives -0.0.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/core/host_device.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/cpu_target.h"
#include "lowbit/formats/format.h"
#include "lowbit/formats/gpu_rcp_approx.h"

namespace lowbit::bnb {

enum class QuantType : uint8_t { nf4, fp4 };
// The registry's id and name of a quant type ("nf4", "fp4"), and the quant type of an id (nullopt
// for a format outside the bnb 4-bit family).
constexpr FormatId format_id(QuantType type) { return type == QuantType::nf4 ? FormatId::nf4 : FormatId::fp4; }
constexpr std::string_view quant_type_name(QuantType type) { return format_name(format_id(type)); }
constexpr std::optional<QuantType> quant_type_of(FormatId id) {
  if (id == FormatId::nf4) return QuantType::nf4;
  if (id == FormatId::fp4) return QuantType::fp4;
  return std::nullopt;
}
// The 4-bit quant types, in the registry's order.
inline constexpr QuantType kQuantTypes[] = {QuantType::nf4, QuantType::fp4};

// The block sizes bitsandbytes' CUDA kernels accept for 4-bit quantization.
inline constexpr std::array<int64_t, 8> kBlocksizes4bit = {32, 64, 128, 256, 512, 1024, 2048, 4096};
inline constexpr int64_t kNestedBlocksize = 256;
// Throws lowbit::Error naming `tensor_name` unless blocksize is one of kBlocksizes4bit.
void check_blocksize_4bit(int64_t blocksize, std::string_view tensor_name = {});

// The codebook a QuantState holds (QuantState.code) for each type, indexed by code.
const std::array<float, 16>& code_map(QuantType type);
// bitsandbytes' create_dynamic_map(signed=True): 256 values, ascending, the nested code map.
const std::array<float, 256>& dynamic_map_signed();

// ---- per-value rules, read by the C++ compiler and nvcc: the CPU codecs and the CUDA kernels
// compute through these same functions (the tables: lowbit/formats/bnb_tables.h) ----

// An element: lut[code] * the block's scale, the dequantize kernel's .ftz multiply.
LOWBIT_HOST_DEVICE inline float value_4bit(float lut_value, float scale) { return gpu::mul_ftz(lut_value, scale); }

// Double quant: a block's scale, map[code] * nested_absmax + offset. The 8-bit dequantize kernel
// multiplies (.ftz); torch then adds the offset (IEEE): two roundings.
LOWBIT_HOST_DEVICE inline float nested_block_scale(float map_value, float nested_absmax, float offset) {
  return add_rn(gpu::mul_ftz(map_value, nested_absmax), offset);
}

// bitsandbytes' dQuantize (no stochastic rounding) of a scaled value x over the ascending 256-entry
// `map`: a 7-step binary search, then the nearer of the two neighbours by their float32 midpoint,
// so ties and NaN land where they do in the kernel.
LOWBIT_HOST_DEVICE inline uint8_t quantize_dynamic_8bit(float x, const float* map) {
  int pivot = 127, upper_pivot = 255, lower_pivot = 0;
  float lower = -1.0f, upper = 1.0f;
  for (int step = 64; step > 0; step >>= 1) {
    if (x > map[pivot]) {
      lower_pivot = pivot;
      lower = map[pivot];
      pivot += step;
    } else {
      upper_pivot = pivot;
      upper = map[pivot];
      pivot -= step;
    }
  }
  if (upper_pivot == 255) upper = map[255];
  if (lower_pivot == 0) lower = map[0];
  const float value = map[pivot];
  if (x > value) return uint8_t(x > mul_rn(add_rn(upper, value), 0.5f) ? upper_pivot : pivot);
  return uint8_t(x < mul_rn(add_rn(lower, value), 0.5f) ? lower_pivot : pivot);
}

// The second level of double quantization: 8-bit codes for the block absmaxes.
struct NestedAbsmax {
  std::vector<uint8_t> codes;         // one per 4-bit block
  std::vector<float> nested_absmax;   // one per kNestedBlocksize codes: max |absmax - offset|
  float offset = 0.0f;                // subtracted before quantizing: the mean of the absmaxes
  int64_t blocksize = kNestedBlocksize;
  std::array<float, 256> code{};      // the code map (dynamic_map_signed())
};

// Everything needed to dequantize, as bitsandbytes' QuantState holds it.
struct Bnb4bitState {
  QuantType quant_type = QuantType::nf4;
  int64_t blocksize = 64;
  DType dtype = DType::f32;            // the quantized tensor's dtype: dequantize's default output
  Shape shape;                         // the quantized tensor's shape
  std::vector<float> absmax;           // per block; empty when `nested` holds the scales instead
  std::optional<NestedAbsmax> nested;  // set with double quantization
  std::array<float, 16> code{};        // the 4-bit code map (code_map(quant_type))

  int64_t elements() const;
  int64_t blocks() const;
  int64_t packed_bytes() const { return (elements() + 1) / 2; }
  // The float32 scale of every block as dequantization uses it (recovered when nested).
  std::vector<float> block_scales() const;
};

struct Bnb4bitOptions {
  QuantType quant_type = QuantType::nf4;
  int64_t blocksize = 64;
  bool double_quant = false;
  // Double quant: the offset to subtract. Unset: the float32 nearest the exact mean of the
  // absmaxes. (bitsandbytes takes torch.mean on the GPU, whose summation order is not
  // reproducible; pass its value here to reproduce its bytes.)
  std::optional<float> nested_offset;
  // The CPU kernels quantize_4bit runs (cpu_target.h); quantize_4bit_reference runs its double quant on them.
  cpu::CpuTarget target = cpu::best_cpu_target();
};

struct Bnb4bitQuantized {
  std::vector<uint8_t> packed;  // ceil(elements / 2) bytes, element 2i in the high nibble
  Bnb4bitState state;
};

// Quantizes a f32, f16 or bf16 tensor. Throws lowbit::Error naming `tensor_name` on NaN or Inf
// input, an unsupported dtype or blocksize. Uses the fast CPU kernel of options.target where it has one;
// the bytes are the same as quantize_4bit_reference's.
Bnb4bitQuantized quantize_4bit(const TensorView& input, const Bnb4bitOptions& options,
                               std::string_view tensor_name = {});
// The scalar definition of the format, one block after another.
Bnb4bitQuantized quantize_4bit_reference(const TensorView& input, const Bnb4bitOptions& options,
                                         std::string_view tensor_name = {});

// Dequantizes to the recorded dtype (state.dtype) or to `out_dtype` (f32, f16 or bf16), with the CPU
// kernels of `target`. Throws lowbit::Error naming `tensor_name` when packed or the state are inconsistent.
Tensor dequantize_4bit(std::span<const uint8_t> packed, const Bnb4bitState& state, std::string_view tensor_name = {},
                       cpu::CpuTarget target = cpu::best_cpu_target());
Tensor dequantize_4bit(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                       std::string_view tensor_name = {}, cpu::CpuTarget target = cpu::best_cpu_target());
// The same into a caller's buffer of exactly elements * dtype_size(out_dtype) bytes, so a caller
// that dequantizes many tensors reuses one allocation (fresh pages cost a fault each on first write).
void dequantize_4bit_into(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                          std::span<std::byte> out, std::string_view tensor_name = {},
                          cpu::CpuTarget target = cpu::best_cpu_target());
// The scalar definition of dequantization, which the fast CPU kernel must match byte for byte.
Tensor dequantize_4bit_reference(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                                 std::string_view tensor_name = {});

// The per-block max |x| (float32) that quantization scales by: bitsandbytes' absmax without
// double quantization.
std::vector<float> block_absmax(const TensorView& input, int64_t blocksize, std::string_view tensor_name = {});

// Double quantization of block absmaxes, with a given offset or (unset) the float32 nearest
// their exact mean, on the CPU kernels of `target`.
NestedAbsmax quantize_absmax_nested(std::span<const float> absmax, std::optional<float> offset = std::nullopt,
                                    cpu::CpuTarget target = cpu::best_cpu_target());
// map[code] * nested_absmax + offset per block: the scales dequantization multiplies by.
std::vector<float> dequantize_absmax_nested(const NestedAbsmax& nested);

// The float32 nearest the exact mean (compensated summation in double), 0 for no values.
float mean_to_nearest_float(std::span<const float> values);

}  // namespace lowbit::bnb
