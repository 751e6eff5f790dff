// The per-value and per-block arithmetic of bitsandbytes' 4-bit codec (private to src/formats).
// The scalar functions here define the bytes; the CPU backend's kernels (kernels/cpu/cpu_kernels.h,
// the *Fn signatures below) must produce the same ones.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>

#include "lowbit/core/tensor.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_tables.h"
#include "lowbit/formats/gpu_rcp_approx.h"

namespace lowbit::bnb::detail {

// dQuantizeNF4 is a decision tree over ascending thresholds, so its result is the number of
// thresholds v exceeds; NaN exceeds none (code 0).
inline uint8_t nf4_code_of_scaled(float v) {
  uint8_t code = 0;
  for (float threshold : tables::kNf4Thresholds) code += v > threshold ? 1 : 0;
  return code;
}

// dQuantizeFP4 ranks |v| among its thresholds, then maps the rank to the FP4 bit pattern
// (0b0eem: the codes of 0, 1/192, 1/6, 1/4, 1/3, 1/2, 2/3, 1 in increasing order) and adds the sign.
inline constexpr std::array<uint8_t, 8> kFp4CodeOfRank = {0, 1, 6, 7, 4, 5, 2, 3};
inline uint8_t fp4_code_of_scaled(float v) {
  const float magnitude = std::fabs(v);
  uint8_t rank = 0;
  for (float threshold : tables::kFp4AbsThresholds) rank += magnitude > threshold ? 1 : 0;
  return uint8_t(kFp4CodeOfRank[rank] | (v < 0.0f ? 8 : 0));
}

// One element: x already float32 with subnormals flushed, scale = rcp.approx(absmax).
inline uint8_t quantize_4bit_value(QuantType type, float x, float scale) {
  const float v = gpu::mul_ftz(x, scale);
  return type == QuantType::nf4 ? nf4_code_of_scaled(v) : fp4_code_of_scaled(v);
}

// max |x| over a block, as the kernel's fmaxf reduction (inputs already flushed, no NaN).
inline float block_absmax_of(const float* x, int64_t count) {
  float absmax = 0.0f;
  for (int64_t i = 0; i < count; ++i) absmax = std::fmax(absmax, std::fabs(x[i]));
  return absmax;
}

// Converts elements [begin, begin + count) of `input` to float32 in `out`, with the GPU's ftz
// flushing of subnormal inputs. Returns the index (within the block) of the first NaN or Inf, or -1.
int64_t load_block_f32(const TensorView& input, int64_t begin, int64_t count, float* out);

// Quantizes blocks [first_block, last_block) of `input`: writes their absmax and their packed
// bytes (all of them, including the padding nibble of an odd element count). Returns the global
// index of the first non-finite element found, or -1 (the blocks holding it are left undefined).
using QuantizeBlocksFn = int64_t (*)(QuantType type, const TensorView& input, int64_t blocksize,
                                     int64_t first_block, int64_t last_block, uint8_t* packed, float* absmax);

int64_t quantize_4bit_blocks_reference(QuantType type, const TensorView& input, int64_t blocksize,
                                       int64_t first_block, int64_t last_block, uint8_t* packed, float* absmax);

// Double quant: codes[i] = dQuantize(mul_ftz(centred[i], scale)) over the 256-entry `map`, for
// i < count.
using QuantizeDynamic8bitFn = void (*)(const float* centred, int64_t count, float scale,
                                       const std::array<float, 256>& map, uint8_t* codes);
void quantize_dynamic_8bit_reference(const float* centred, int64_t count, float scale,
                                     const std::array<float, 256>& map, uint8_t* codes);

// Dequantizes the whole blocks [first_block, last_block) to out_dtype (f32, f16 or bf16) at `out`
// (the tensor's first element): scales[b - first_block] is block b's float32 scale, lut the
// kernel's 16 code values. `stream`: write with non-temporal stores (out must be 64-byte aligned).
using DequantizeBlocksFn = void (*)(const uint8_t* packed, const float* scales, const std::array<float, 16>& lut,
                                    int64_t blocksize, int64_t first_block, int64_t last_block, DType out_dtype,
                                    std::byte* out, bool stream);

// Double quant: the float32 scales of blocks [first, last) into scales[0 .. last - first), for a
// NestedAbsmax with blocksize kNestedBlocksize whose sizes are checked.
using NestedScalesFn = void (*)(const NestedAbsmax& nested, int64_t first, int64_t last, float* scales);

}  // namespace lowbit::bnb::detail
