// ggml's non-linear 4-bit types: each 4-bit code indexes a fixed 16-entry codebook (denser near zero,
// fitted to the bell shape of LLM weights) scaled per block (ggml src/ggml-common.h).
// All fields little-endian; `d` is an IEEE binary16 bit pattern.
//
// Quantizers reproduce ggml_quantize_chunk byte for byte (ggml's quantize_row_iq4_nl_impl with ntry = 7,
// with or without `quant_weights`). Note: ggml's own quantize_row_iq4_nl_ref (ntry = -1) gives other
// bytes; llama-quantize writes these. The row length must be a multiple of 32 (iq4_nl) or 256 (iq4_xs).
//
// The codebook, the block structs and the decode rules (namespace iq4 below) are read by the C++
// compiler and by nvcc: the scalar dequantizers and the CUDA kernels (ggml_iquants.cu, which keeps the
// codebook in registers and multiplies as iq4::value does) decode through the same rules.
#pragma once

#include <cstdint>

#include "lowbit/core/host_device.h"
#include "lowbit/formats/cpu_target.h"

namespace lowbit::ggml {

// ggml's kvalues_iq4nl.
inline constexpr int8_t kIq4Codebook[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                            1,    13,   25,  38,  53,  69,  89,  113};

// iq4_nl: 32 values; value = d * kIq4Codebook[q].
// bytes 0-1 d | 2-17 qs (value j low nibble of qs[j], value j+16 high nibble)
struct BlockIq4Nl {
  uint16_t d;
  uint8_t qs[16];
};
static_assert(sizeof(BlockIq4Nl) == 18);

// iq4_xs: 256 values in 8 sub-blocks of 32; value = d * (s - 32) * kIq4Codebook[q], s 6 bits per
// sub-block ib: low 4 bits in scales_l[ib/2] (low nibble for even ib), high 2 bits at bit 2*ib of
// scales_h. qs packs each 32-value sub-block as iq4_nl does.
// bytes 0-1 d | 2-3 scales_h | 4-7 scales_l | 8-135 qs (16 bytes per sub-block)
struct BlockIq4Xs {
  uint16_t d;
  uint16_t scales_h;
  uint8_t scales_l[4];
  uint8_t qs[128];
};
static_assert(sizeof(BlockIq4Xs) == 136);

// ---- decode rules, shared by every backend ----
namespace iq4 {

// A value: scale * codebook[code], code the low 4 bits; `codebook` is kIq4Codebook (or the device's copy).
LOWBIT_HOST_DEVICE inline float value(const int8_t* codebook, float scale, uint32_t code) {
  return mul_rn(scale, float(codebook[code & 15]));
}
// iq4_xs's scale of 32-value sub-block ib: d * (s - 32), s from scales_l[ib / 2] (`low`) and scales_h,
// which sits at bit kHighAt of `high` (0: scales_h itself; the GPU loads d and scales_h as one word).
template <int kHighAt = 0>
LOWBIT_HOST_DEVICE inline float xs_scale(float d, uint32_t low, uint32_t high, int ib) {
  const int s = int((low >> (4 * (ib % 2))) & 15) | int(((high >> (kHighAt + 2 * ib)) & 3) << 4);
  return mul_rn(d, small_int_to_float(s - 32));
}

}  // namespace iq4

void quantize_row_iq4_nl(const float* x, void* blocks, int64_t n, const float* quant_weights,
                         cpu::CpuTarget target = cpu::best_cpu_target());
void quantize_row_iq4_xs(const float* x, void* blocks, int64_t n, const float* quant_weights,
                         cpu::CpuTarget target = cpu::best_cpu_target());

void dequantize_row_iq4_nl(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);
void dequantize_row_iq4_xs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target = cpu::best_cpu_target(),
                         cpu::OutputStores stores = cpu::OutputStores::cached);

}  // namespace lowbit::ggml
