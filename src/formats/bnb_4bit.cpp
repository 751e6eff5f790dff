// bitsandbytes 4-bit blockwise quantization: the scalar reference, double quantization of the
// block scales, and dequantization. The format is described in include/lowbit/formats/bnb_4bit.h.
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_4bit_packed.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <string>
#include <vector>

#include "formats/bnb_4bit_blocks.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/bnb_tables.h"
#include "lowbit/formats/gpu_rcp_approx.h"
#include "lowbit/formats/value_check.h"

namespace lowbit::bnb {
namespace {

bool is_supported_float(DType dtype) { return dtype == DType::f32 || dtype == DType::f16 || dtype == DType::bf16; }

void check_float_dtype(DType dtype, std::string_view tensor_name, std::string_view what) {
  if (!is_supported_float(dtype))
    throw Error(std::string(what) + ": unsupported dtype " + std::string(dtype_name(dtype)),
                {.tensor = std::string(tensor_name), .expected = "f32, f16 or bf16"});
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Blocks per parallel chunk: about 64 Ki elements, enough to amortise scheduling.
int64_t block_grain(int64_t blocksize) { return std::max<int64_t>(1, (int64_t(1) << 16) / blocksize); }

// "NaN at row 3, column 17": the value at flat `index` of a float input and where it sits.
std::string misfit_at(const TensorView& input, int64_t index) {
  float value;
  convert_to_f32(input.dtype, input.bytes.data() + size_t(index) * dtype_size(input.dtype), &value, 1);
  const int64_t cols = input.shape.size() >= 2 ? input.shape.back() : 0;
  return describe(std::isnan(value) ? ValueProblem::nan : ValueProblem::inf, value) + " at " + element_location(index, cols);
}

Bnb4bitQuantized quantize_4bit_with(detail::QuantizeBlocksFn quantize_blocks, const TensorView& input,
                                    const Bnb4bitOptions& options, std::string_view tensor_name) {
  check_float_dtype(input.dtype, tensor_name, "bnb 4-bit quantization");
  check_blocksize_4bit(options.blocksize, tensor_name);
  Bnb4bitQuantized result;
  Bnb4bitState& state = result.state;
  state.quant_type = options.quant_type;
  state.blocksize = options.blocksize;
  state.dtype = input.dtype;
  state.shape = input.shape;
  state.code = code_map(options.quant_type);
  const int64_t blocks = state.blocks();
  result.packed.assign(size_t(state.packed_bytes()), 0);
  state.absmax.assign(size_t(blocks), 0.0f);

  // Chunks run in any order; keep the smallest bad index so the message does not depend on timing.
  std::atomic<int64_t> first_bad{-1};
  parallel_for(blocks, block_grain(options.blocksize), [&](int64_t begin, int64_t end) {
    const int64_t bad = quantize_blocks(options.quant_type, input, options.blocksize, begin, end,
                                        result.packed.data(), state.absmax.data());
    if (bad < 0) return;
    int64_t seen = first_bad.load();
    while ((seen < 0 || bad < seen) && !first_bad.compare_exchange_weak(seen, bad)) {}
  });
  if (first_bad.load() >= 0)
    throw Error(std::string(quant_type_name(options.quant_type)) + " quantization: " + misfit_at(input, first_bad.load()),
                {.tensor = std::string(tensor_name), .expected = "finite values"});

  if (options.double_quant) {
    state.nested = quantize_absmax_nested(state.absmax, options.nested_offset, options.target);
    state.absmax.clear();
  }
  return result;
}

void check_nested_sizes(const NestedAbsmax& nested) {
  if (nested.blocksize <= 0 || size_t(ceil_div(int64_t(nested.codes.size()), nested.blocksize)) != nested.nested_absmax.size())
    throw Error("bnb double quant: " + std::to_string(nested.nested_absmax.size()) + " nested absmax values for " +
                std::to_string(nested.codes.size()) + " codes in blocks of " + std::to_string(nested.blocksize));
}

// The scales of blocks [first, last) into scales[0 .. last - first), sizes already checked.
void dequantize_absmax_nested_range(const NestedAbsmax& nested, int64_t first, int64_t last, float* scales) {
  for (int64_t i = first; i < last; ++i) {
    scales[i - first] = nested_block_scale(nested.code[nested.codes[size_t(i)]],
                                           nested.nested_absmax[size_t(i / nested.blocksize)], nested.offset);
  }
}

// A block's element can only take 16 values, lut[code] * scale rounded to the output dtype, so
// each block computes them once (the same float32 product and rounding per element as the
// kernel) and then looks them up; `Bits` is the output dtype's storage (uint16_t or uint32_t).
// scales[b - first_block] is block b's scale.
template <class Bits>
void dequantize_blocks(std::span<const uint8_t> packed, const Bnb4bitState& state, const std::array<float, 16>& lut,
                       const float* scales, int64_t first_block, int64_t last_block, DType out_dtype, std::byte* out) {
  const int64_t elements = state.elements();
  Bits* dst = reinterpret_cast<Bits*>(out);
  for (int64_t b = first_block; b < last_block; ++b) {
    std::array<float, 16> products;
    for (size_t code = 0; code < 16; ++code) products[code] = value_4bit(lut[code], scales[b - first_block]);
    std::array<Bits, 16> value_of_code;
    convert_from_f32(products.data(), out_dtype, value_of_code.data(), 16);
    const int64_t begin = b * state.blocksize;
    const int64_t end = std::min(elements, begin + state.blocksize);
    for (int64_t i = begin; i + 1 < end; i += 2) {  // begin is even: whole bytes
      const uint8_t byte = packed[size_t(i / 2)];
      dst[i] = value_of_code[byte >> 4];
      dst[i + 1] = value_of_code[byte & 0x0f];
    }
    if ((end - begin) % 2 != 0) dst[end - 1] = value_of_code[packed[size_t((end - 1) / 2)] >> 4];
  }
}

void dequantize_blocks_reference(std::span<const uint8_t> packed, const Bnb4bitState& state,
                                 const std::array<float, 16>& lut, const float* scales, int64_t first_block,
                                 int64_t last_block, DType out_dtype, std::byte* out) {
  if (out_dtype == DType::f32)
    dequantize_blocks<uint32_t>(packed, state, lut, scales, first_block, last_block, out_dtype, out);
  else
    dequantize_blocks<uint16_t>(packed, state, lut, scales, first_block, last_block, out_dtype, out);
}

// The kernel's LUT: FP4 code 8 is -0.0 there, +0.0 in the state's code map.
const std::array<float, 16>& kernel_lut(QuantType type) {
  return type == QuantType::nf4 ? tables::kNf4Code : tables::kFp4KernelLut;
}

// Throws unless the state's blocksize is one bitsandbytes uses and its shape is what `packed` holds:
// checked before the output (sized by the shape, which a file may claim anything for) is allocated.
void check_packed_size(std::span<const uint8_t> packed, const Bnb4bitState& state, std::string_view tensor_name) {
  check_blocksize_4bit(state.blocksize, tensor_name);
  if (int64_t(packed.size()) != state.packed_bytes())
    throw Error("bnb 4-bit dequantization: " + std::to_string(packed.size()) + " packed bytes for " +
                std::to_string(state.elements()) + " elements", {.tensor = std::string(tensor_name),
                .expected = std::to_string(state.packed_bytes()) + " bytes"});
}

// Throws unless packed, the state and an output of `out_bytes` bytes of out_dtype fit together.
void check_dequantize_inputs(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                             size_t out_bytes, std::string_view tensor_name) {
  check_packed_size(packed, state, tensor_name);
  check_float_dtype(out_dtype, tensor_name, "bnb 4-bit dequantization");
  const ErrorContext context{.tensor = std::string(tensor_name)};
  const size_t scale_count = state.nested ? state.nested->codes.size() : state.absmax.size();
  if (int64_t(scale_count) != state.blocks())
    throw Error("bnb 4-bit dequantization: " + std::to_string(scale_count) + " block scales for " +
                std::to_string(state.blocks()) + " blocks", context);
  if (state.nested) check_nested_sizes(*state.nested);
  const size_t want = size_t(state.elements()) * dtype_size(out_dtype);
  if (out_bytes != want)
    throw Error("bnb 4-bit dequantization: output buffer of " + std::to_string(out_bytes) + " bytes",
                {.tensor = context.tensor, .expected = std::to_string(want) + " bytes"});
}

}  // namespace

namespace detail {

int64_t load_block_f32(const TensorView& input, int64_t begin, int64_t count, float* out) {
  const size_t element_size = dtype_size(input.dtype);
  convert_to_f32(input.dtype, input.bytes.data() + size_t(begin) * element_size, out, size_t(count));
  int64_t bad = -1;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(out[i]) && bad < 0) bad = i;
    out[i] = gpu::flush_subnormal(out[i]);
  }
  return bad;
}

void quantize_dynamic_8bit_reference(const float* centred, int64_t count, float scale,
                                     const std::array<float, 256>& map, uint8_t* codes) {
  for (int64_t i = 0; i < count; ++i) codes[i] = quantize_dynamic_8bit(gpu::mul_ftz(centred[i], scale), map.data());
}

int64_t quantize_4bit_blocks_reference(QuantType type, const TensorView& input, int64_t blocksize,
                                       int64_t first_block, int64_t last_block, uint8_t* packed, float* absmax) {
  const int64_t elements = input.elements();
  std::vector<float> values(static_cast<size_t>(blocksize));
  for (int64_t b = first_block; b < last_block; ++b) {
    const int64_t begin = b * blocksize;
    const int64_t count = std::min(blocksize, elements - begin);
    const int64_t bad = load_block_f32(input, begin, count, values.data());
    if (bad >= 0) return begin + bad;
    absmax[b] = detail::block_absmax_of(values.data(), count);
    const float scale = gpu::rcp_approx_ftz(absmax[b]);
    // begin is even (blocksizes are even), so the block owns whole bytes; an odd last block
    // gets a padding element 0.0 in its last low nibble.
    for (int64_t i = 0; i < count; i += 2) {
      const uint8_t high = quantize_4bit_value(type, values[size_t(i)], scale);
      const uint8_t low = quantize_4bit_value(type, i + 1 < count ? values[size_t(i + 1)] : 0.0f, scale);
      packed[(begin + i) / 2] = uint8_t(high << 4 | low);
    }
  }
  return -1;
}

}  // namespace detail

void check_blocksize_4bit(int64_t blocksize, std::string_view tensor_name) {
  if (std::find(kBlocksizes4bit.begin(), kBlocksizes4bit.end(), blocksize) == kBlocksizes4bit.end())
    throw Error("bnb 4-bit: unsupported blocksize " + std::to_string(blocksize),
                {.tensor = std::string(tensor_name), .expected = "blocksize 32, 64, 128, 256, 512, 1024, 2048 or 4096"});
}

const std::array<float, 16>& code_map(QuantType type) {
  return type == QuantType::nf4 ? tables::kNf4Code : tables::kFp4Code;
}

const std::array<float, 256>& dynamic_map_signed() { return tables::kDynamicMapSigned; }

int64_t Bnb4bitState::elements() const { return shape_elements(shape); }
int64_t Bnb4bitState::blocks() const { return ceil_div(elements(), blocksize); }

std::vector<float> Bnb4bitState::block_scales() const {
  return nested ? dequantize_absmax_nested(*nested) : absmax;
}

Bnb4bitQuantized quantize_4bit_reference(const TensorView& input, const Bnb4bitOptions& options,
                                         std::string_view tensor_name) {
  return quantize_4bit_with(detail::quantize_4bit_blocks_reference, input, options, tensor_name);
}

Bnb4bitQuantized quantize_4bit(const TensorView& input, const Bnb4bitOptions& options, std::string_view tensor_name) {
  detail::QuantizeBlocksFn fast = cpu::cpu_kernels(options.target).bnb_quantize_4bit;
  return quantize_4bit_with(fast ? fast : detail::quantize_4bit_blocks_reference, input, options, tensor_name);
}

std::vector<float> block_absmax(const TensorView& input, int64_t blocksize, std::string_view tensor_name) {
  check_float_dtype(input.dtype, tensor_name, "bnb block absmax");
  if (blocksize <= 0) throw Error("bnb block absmax: blocksize must be positive", {.tensor = std::string(tensor_name)});
  const int64_t elements = input.elements();
  std::vector<float> absmax(size_t(ceil_div(elements, blocksize)));
  std::vector<float> values(static_cast<size_t>(blocksize));
  for (size_t b = 0; b < absmax.size(); ++b) {
    const int64_t begin = int64_t(b) * blocksize;
    const int64_t count = std::min(blocksize, elements - begin);
    if (const int64_t bad = detail::load_block_f32(input, begin, count, values.data()); bad >= 0)
      throw Error("bnb block absmax: " + misfit_at(input, begin + bad),
                  {.tensor = std::string(tensor_name), .expected = "finite values"});
    absmax[b] = detail::block_absmax_of(values.data(), count);
  }
  return absmax;
}

float mean_to_nearest_float(std::span<const float> values) {
  if (values.empty()) return 0.0f;
  // Neumaier's compensated sum: for the few thousand absmaxes of a tensor it is the exact sum.
  double sum = 0.0, compensation = 0.0;
  for (float v : values) {
    const double t = sum + double(v);
    compensation += std::fabs(sum) >= std::fabs(double(v)) ? (sum - t) + double(v) : (double(v) - t) + sum;
    sum = t;
  }
  return float((sum + compensation) / double(values.size()));
}

NestedAbsmax quantize_absmax_nested(std::span<const float> absmax, std::optional<float> offset, cpu::CpuTarget target) {
  NestedAbsmax nested;
  nested.offset = offset ? *offset : mean_to_nearest_float(absmax);
  nested.code = tables::kDynamicMapSigned;
  nested.codes.resize(absmax.size());
  nested.nested_absmax.resize(size_t(ceil_div(int64_t(absmax.size()), kNestedBlocksize)));
  std::vector<float> centred(static_cast<size_t>(kNestedBlocksize));
  const detail::QuantizeDynamic8bitFn fast = cpu::cpu_kernels(target).bnb_quantize_dynamic_8bit;
  const detail::QuantizeDynamic8bitFn quantize_codes = fast ? fast : detail::quantize_dynamic_8bit_reference;
  for (size_t j = 0; j < nested.nested_absmax.size(); ++j) {
    const size_t begin = j * size_t(kNestedBlocksize);
    const size_t count = std::min(size_t(kNestedBlocksize), absmax.size() - begin);
    // torch subtracts the offset (plain float32); the 8-bit kernel then flushes like the 4-bit one.
    for (size_t i = 0; i < count; ++i) centred[i] = gpu::flush_subnormal(absmax[begin + i] - nested.offset);
    nested.nested_absmax[j] = detail::block_absmax_of(centred.data(), int64_t(count));
    quantize_codes(centred.data(), int64_t(count), gpu::rcp_approx_ftz(nested.nested_absmax[j]), nested.code,
                   nested.codes.data() + begin);
  }
  return nested;
}

std::vector<float> dequantize_absmax_nested(const NestedAbsmax& nested) {
  check_nested_sizes(nested);
  std::vector<float> scales(nested.codes.size());
  dequantize_absmax_nested_range(nested, 0, int64_t(scales.size()), scales.data());
  return scales;
}

std::vector<float> block_scales(const Packed4bitView& view) {
  auto floats = [](std::span<const std::byte> bytes) {
    std::vector<float> out(bytes.size() / sizeof(float));
    std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
    return out;
  };
  if (!view.double_quant()) return floats(view.absmax);
  NestedAbsmax nested{.nested_absmax = floats(view.nested_absmax), .offset = view.nested_offset, .code = dynamic_map_signed()};
  const auto* codes = reinterpret_cast<const uint8_t*>(view.absmax.data());
  nested.codes.assign(codes, codes + view.absmax.size());
  return dequantize_absmax_nested(nested);
}

Tensor dequantize_4bit(std::span<const uint8_t> packed, const Bnb4bitState& state, std::string_view tensor_name,
                       cpu::CpuTarget target) {
  return dequantize_4bit(packed, state, state.dtype, tensor_name, target);
}

Tensor dequantize_4bit(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                       std::string_view tensor_name, cpu::CpuTarget target) {
  check_float_dtype(out_dtype, tensor_name, "bnb 4-bit dequantization");
  check_packed_size(packed, state, tensor_name);
  Tensor out(out_dtype, state.shape);
  dequantize_4bit_into(packed, state, out_dtype, out.buffer.span(), tensor_name, target);
  return out;
}

Tensor dequantize_4bit_reference(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                                 std::string_view tensor_name) {
  check_float_dtype(out_dtype, tensor_name, "bnb 4-bit dequantization");
  check_packed_size(packed, state, tensor_name);
  Tensor out(out_dtype, state.shape);
  check_dequantize_inputs(packed, state, out_dtype, out.buffer.size(), tensor_name);
  const std::vector<float> scales = state.block_scales();
  const std::array<float, 16>& lut = kernel_lut(state.quant_type);
  parallel_for(state.blocks(), block_grain(state.blocksize), [&](int64_t first_block, int64_t last_block) {
    dequantize_blocks_reference(packed, state, lut, scales.data() + first_block, first_block, last_block, out_dtype,
                                out.buffer.data());
  });
  return out;
}

void dequantize_4bit_into(std::span<const uint8_t> packed, const Bnb4bitState& state, DType out_dtype,
                          std::span<std::byte> out, std::string_view tensor_name, cpu::CpuTarget target) {
  check_dequantize_inputs(packed, state, out_dtype, out.size(), tensor_name);
  const std::array<float, 16>& lut = kernel_lut(state.quant_type);
  const cpu::CpuKernels& kernels = cpu::cpu_kernels(target);
  const detail::DequantizeBlocksFn fast = kernels.bnb_dequantize_4bit;
  const int64_t whole_blocks = state.elements() / state.blocksize;  // the fast kernel's share
  const bool stream = out.size() >= cpu::kStreamingBytes && reinterpret_cast<uintptr_t>(out.data()) % 64 == 0;
  detail::NestedScalesFn nested_scales = dequantize_absmax_nested_range;
  if (state.nested && state.nested->blocksize == kNestedBlocksize && kernels.bnb_nested_scales)
    nested_scales = kernels.bnb_nested_scales;
  parallel_for(state.blocks(), block_grain(state.blocksize), [&](int64_t first_block, int64_t last_block) {
    // Double quant: recover this chunk's scales a slice at a time, into the stack (no allocation).
    constexpr int64_t kSlice = 256;
    float recovered[kSlice];
    for (int64_t first = first_block; first < last_block; first += kSlice) {
      const int64_t last = std::min(last_block, first + kSlice);
      if (state.nested) nested_scales(*state.nested, first, last, recovered);
      const float* scales = state.nested ? recovered : state.absmax.data() + first;
      const int64_t fast_last = fast ? std::min(last, whole_blocks) : first;
      if (fast_last > first) fast(packed.data(), scales, lut, state.blocksize, first, fast_last, out_dtype, out.data(), stream);
      if (last > fast_last)
        dequantize_blocks_reference(packed, state, lut, scales + (fast_last - first), fast_last, last, out_dtype, out.data());
    }
  });
}

}  // namespace lowbit::bnb
