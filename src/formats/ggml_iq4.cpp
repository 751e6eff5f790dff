// iq4_nl and iq4_xs: ggml-quants.c's quantize_row_iq4_nl_impl (ntry = 7, as ggml_quantize_chunk calls
// it) and the dequantizers, byte for byte.
#if defined(__clang__)
#pragma clang fp contract(off)  // ggml's bytes come from separately rounded multiplies and adds
#endif
#include "lowbit/formats/ggml_iq4.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "formats/ggml_block_check.h"
#include "formats/ggml_kquants_search.h"
#include "kernels/cpu/cpu_kernels.h"
#include "lowbit/core/half.h"

namespace lowbit::ggml {
namespace {

using ggml_search::kGroupMaxEps;
using ggml_search::nearest_codebook_index;
using ggml_search::round_nearest_even;

constexpr int kSub = 32;            // values per scaled sub-block
constexpr int kXsValues = 256;      // values per iq4_xs block
constexpr int kScaleTries = 7;      // ggml's ntry: the 15 extra scales tried per sub-block

inline int codebook_index(float x) { return nearest_codebook_index(16, kIq4Codebook, x); }

// Weights of one sub-block: qw * sqrt(sigma2 + x^2) with importance weights, x^2 without.
void sub_block_weights(const float* x, const float* qw, float sigma2, float* weights) {
  if (qw) {
    for (int j = 0; j < kSub; ++j) weights[j] = qw[j] * std::sqrt(sigma2 + x[j] * x[j]);
  } else {
    for (int j = 0; j < kSub; ++j) weights[j] = x[j] * x[j];
  }
}

// sigma2 = 2 * mean of x^2 over the whole (super-)block, computed as ggml does.
float block_sigma2(const float* x, int n) {
  float sigma2 = 0;
  for (int j = 0; j < n; ++j) sigma2 += x[j] * x[j];
  return sigma2 * (2.f / float(n));
}

// The float scale of one 32-value sub-block: start from the scale mapping the signed extreme onto the
// codebook's -127 end, fit by weighted least squares, then try the 2*ntry+1 inverse scales
// (k - 127)/max, k = -ntry..ntry, keeping the best fit. 0 for an all-zero (or zero-weight) sub-block.
// `batches`: the CPU target's candidate-batch kernels.
float fit_sub_block_scale(const ggml_search::BatchKernels& batches, const float* x, const float* weights) {
  float amax = 0, max = 0;
  for (int j = 0; j < kSub; ++j) {
    const float ax = std::fabs(x[j]);
    if (ax > amax) {
      amax = ax;
      max = x[j];
    }
  }
  if (amax < kGroupMaxEps) return 0;
  // Candidate 0: the scale mapping the extreme onto the codebook's -127 end; then the inverse scales
  // (k - 127)/max for k = -ntry..ntry. Exactly kBatch candidates.
  static_assert(2 * kScaleTries + 2 == ggml_search::kBatch);
  float ids[ggml_search::kBatch];
  ids[0] = 1 / (-max / float(kIq4Codebook[0]));
  for (int step = -kScaleTries; step <= kScaleTries; ++step) ids[step + kScaleTries + 1] = float(step + kIq4Codebook[0]) / max;
  ggml_search::CodebookSums sums;
  batches.codebook_sums(x, weights, kIq4Codebook, ids, ggml_search::kBatch, sums);

  // sumq2 is 0 when every weight is 0: ggml then stores scale 0 (newer ggml; older gave NaN).
  float d = sums.sumq2[0] > 0 ? sums.sumqx[0] / sums.sumq2[0] : 0.f;
  float best = d * sums.sumqx[0];
  for (int c = 1; c < ggml_search::kBatch; ++c) {
    if (sums.sumq2[c] > 0 && sums.sumqx[c] * sums.sumqx[c] > best * sums.sumq2[c]) {
      d = sums.sumqx[c] / sums.sumq2[c];
      best = d * sums.sumqx[c];
    }
  }
  return d;
}

// Codes of one sub-block for inverse scale `id`, packed: value j low nibble of qs[j], j+16 high nibble.
void pack_sub_block(const float* x, float id, uint8_t* qs) {
  for (int j = 0; j < kSub / 2; ++j)
    qs[j] = uint8_t(codebook_index(id * x[j]) | (codebook_index(id * x[j + kSub / 2]) << 4));
}

}  // namespace

void quantize_row_iq4_nl(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq4_nl", n, kSub);
  const ggml_search::BatchKernels& batches = ggml_search::batch_kernels(cpu::cpu_kernels(target));
  auto* y = static_cast<BlockIq4Nl*>(blocks);
  float weights[kSub];
  for (int64_t ib = 0; ib < n / kSub; ++ib) {
    const float* xb = x + kSub * ib;
    sub_block_weights(xb, quant_weights ? quant_weights + kSub * ib : nullptr, block_sigma2(xb, kSub), weights);
    const float d = fit_sub_block_scale(batches, xb, weights);
    y[ib].d = f32_to_f16(d);
    // Codes from the unrounded float scale, as ggml does.
    pack_sub_block(xb, d ? 1 / d : 0, y[ib].qs);
  }
}

void quantize_row_iq4_xs(const float* x, void* blocks, int64_t n, const float* quant_weights, cpu::CpuTarget target) {
  require_whole_blocks("iq4_xs", n, kXsValues);
  const ggml_search::BatchKernels& batches = ggml_search::batch_kernels(cpu::cpu_kernels(target));
  auto* y = static_cast<BlockIq4Xs*>(blocks);
  float weights[kSub], scales[kXsValues / kSub];
  for (int64_t i = 0; i < n / kXsValues; ++i) {
    const float* xb = x + kXsValues * i;
    const float* qw = quant_weights ? quant_weights + kXsValues * i : nullptr;
    const float sigma2 = block_sigma2(xb, kXsValues);
    float max_scale = 0, amax_scale = 0;
    for (int ib = 0; ib < kXsValues / kSub; ++ib) {
      sub_block_weights(xb + kSub * ib, qw ? qw + kSub * ib : nullptr, sigma2, weights);
      scales[ib] = fit_sub_block_scale(batches, xb + kSub * ib, weights);
      if (std::fabs(scales[ib]) > amax_scale) {
        amax_scale = std::fabs(scales[ib]);
        max_scale = scales[ib];
      }
    }
    // The largest-magnitude scale maps to s - 32 = -32. (All zero gives d = -0.0, fp16 0x8000, as ggml.)
    const float d = -max_scale / 32;
    BlockIq4Xs& b = y[i];
    b.d = f32_to_f16(d);
    b.scales_h = 0;
    const float id = d ? 1 / d : 0.f;
    for (int ib = 0; ib < kXsValues / kSub; ++ib) {
      const int l = std::max(-32, std::min(31, round_nearest_even(id * scales[ib])));
      // Codes from the float d times the 6-bit scale (ggml does not round d to fp16 here).
      const float dl = d * float(l);
      pack_sub_block(xb + kSub * ib, dl ? 1 / dl : 0.f, b.qs + 16 * ib);
      const int biased = l + 32;
      if (ib % 2 == 0) b.scales_l[ib / 2] = uint8_t(biased & 0xF);
      else b.scales_l[ib / 2] |= uint8_t((biased & 0xF) << 4);
      b.scales_h |= uint16_t((biased >> 4) << (2 * ib));
    }
  }
}

void dequantize_row_iq4_nl(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq4_nl", n, kSub);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq4_nl(blocks, y, n / kSub, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq4Nl*>(blocks);
  for (int64_t ib = 0; ib < n / kSub; ++ib, y += kSub) {
    const float d = f16_to_f32(b[ib].d);
    for (int j = 0; j < 16; ++j) {
      y[j] = iq4::value(kIq4Codebook, d, b[ib].qs[j]);
      y[j + 16] = iq4::value(kIq4Codebook, d, b[ib].qs[j] >> 4);
    }
  }
}

void dequantize_row_iq4_xs(const void* blocks, float* y, int64_t n, cpu::CpuTarget target, cpu::OutputStores stores) {
  require_whole_blocks("iq4_xs", n, kXsValues);
  if (const IqDequantVectorKernels* fast = cpu::cpu_kernels(target).iq_dequantize) {
    fast->iq4_xs(blocks, y, n / kXsValues, stores);
    return;
  }
  const auto* b = static_cast<const BlockIq4Xs*>(blocks);
  for (int64_t i = 0; i < n / kXsValues; ++i) {
    const float d = f16_to_f32(b[i].d);
    for (int ib = 0; ib < kXsValues / kSub; ++ib, y += kSub) {
      const float dl = iq4::xs_scale(d, b[i].scales_l[ib / 2], b[i].scales_h, ib);
      const uint8_t* qs = b[i].qs + 16 * ib;
      for (int j = 0; j < 16; ++j) {
        y[j] = iq4::value(kIq4Codebook, dl, qs[j]);
        y[j + 16] = iq4::value(kIq4Codebook, dl, qs[j] >> 4);
      }
    }
  }
}

}  // namespace lowbit::ggml
