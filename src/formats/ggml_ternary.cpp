// tq1_0 and tq2_0: ggml-quants.c's quantize_row_tq{1,2}_0_ref and the dequantizers, byte for byte.
#include "lowbit/formats/ggml_ternary.h"

#include <algorithm>
#include <cmath>

#include "formats/ggml_block_check.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

constexpr int kBlock = kTernaryBlockValues;

// d = max|x|; ggml computes the trits from 1/d of the unrounded float d, then stores d as fp16.
float block_amax(const float* x) {
  float amax = 0;
  for (int j = 0; j < kBlock; ++j) amax = std::max(amax, std::fabs(x[j]));
  return amax;
}

// ggml's lroundf (halves away from zero) for the |v| <= ~1 here, without a libm call so that loops
// vectorise: truncate, then step away from zero when the dropped part (exact: v - trunc(v)) is >= 1/2.
inline int round_half_away(float v) {
  const int t = int(v);
  const float rest = v - float(t);
  return t + int(rest >= 0.5f) - int(rest <= -0.5f);
}

// -1, 0, +1 -> trit 0, 1, 2.
inline int trit(float x, float id) { return round_half_away(x * id) + 1; }

// Packs the trits of `count` values x[0], x[stride], ... as a base-3 fraction of 256: the byte is
// ceil(t * 256 / 243) with t the trits read as a base-3 number (first trit most significant), so
// multiplying the byte by 3^n (mod 256) brings trit n to the top, where (q * 3) >> 8 reads it.
// Four-trit bytes (qh) are padded with a trailing 0 trit to keep the same decoder.
uint8_t pack_trits(const float* x, int stride, int count, float id) {
  unsigned t = 0;
  for (int n = 0; n < count; ++n) t = t * 3 + unsigned(trit(x[n * stride], id));
  for (int n = count; n < 5; ++n) t *= 3;
  return uint8_t((t * 256 + 242) / 243);
}


}  // namespace

void quantize_row_tq1_0(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("tq1_0", n, kBlock);
  auto* y = static_cast<BlockTq1_0*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i, x += kBlock) {
    const float d = block_amax(x);
    const float id = d ? 1.f / d : 0.f;
    BlockTq1_0& b = y[i];
    b.d = f32_to_f16(d);
    for (int m = 0; m < 32; ++m) b.qs[m] = pack_trits(x + m, 32, 5, id);             // values 0..159
    for (int m = 0; m < 16; ++m) b.qs[32 + m] = pack_trits(x + 160 + m, 16, 5, id);  // values 160..239
    for (int j = 0; j < 4; ++j) b.qh[j] = pack_trits(x + 240 + j, 4, 4, id);         // values 240..255
  }
}

void quantize_row_tq2_0(const float* x, void* blocks, int64_t n, const float* /*quant_weights: unused by ggml*/,
                       cpu::CpuTarget /*target: no SIMD kernel*/) {
  require_whole_blocks("tq2_0", n, kBlock);
  auto* y = static_cast<BlockTq2_0*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i, x += kBlock) {
    const float d = block_amax(x);
    const float id = d ? 1.f / d : 0.f;
    BlockTq2_0& b = y[i];
    b.d = f32_to_f16(d);
    for (int h = 0; h < 2; ++h)
      for (int m = 0; m < 32; ++m) {
        unsigned q = 0;
        for (int l = 0; l < 4; ++l) q |= unsigned(trit(x[128 * h + 32 * l + m], id) & 3) << (2 * l);
        b.qs[32 * h + m] = uint8_t(q);
      }
  }
}

void dequantize_row_tq1_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("tq1_0", n, kBlock);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->tq1_0(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockTq1_0*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i, y += kBlock) {
    const float d = f16_to_f32(b[i].d);
    const auto* bytes = reinterpret_cast<const uint8_t*>(&b[i]);  // qs, then qh
    for (int v = 0; v < kBlock; ++v) {
      const ternary::TritPlace p = ternary::tq1_0_place(v);
      y[v] = ternary::value(ternary::unpack_trit(bytes[p.byte], p.trit), d);
    }
  }
}

void dequantize_row_tq2_0(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("tq2_0", n, kBlock);
  if (const TernaryFp4DequantVectorKernels* fast = cpu::cpu_kernels(target).ternary_fp4_dequantize) {
    fast->tq2_0(blocks, y, n / kBlock, stores);
    return;
  }
  const auto* b = static_cast<const BlockTq2_0*>(blocks);
  for (int64_t i = 0; i < n / kBlock; ++i, y += kBlock) {
    const float d = f16_to_f32(b[i].d);
    for (int v = 0; v < kBlock; ++v) {
      const ternary::TwoBitPlace p = ternary::tq2_0_place(v);
      y[v] = ternary::value(ternary::two_bit_trit(b[i].qs[p.byte], p.shift), d);
    }
  }
}

}  // namespace lowbit::ggml
