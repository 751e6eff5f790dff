#include "formats/ggml_block_grid.h"

#include <algorithm>
#include <array>

#include "formats/ggml_kquants_search.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_fp4.h"
#include "lowbit/formats/ggml_iq4.h"
#include "lowbit/formats/ggml_kquants.h"
#include "lowbit/formats/ggml_legacy.h"
#include "lowbit/formats/ggml_q1_q2.h"
#include "lowbit/formats/ggml_ternary.h"

namespace lowbit::ggml {

int ValueGrid::nearest(float x) const {
  if (codebook) return codebook->code_of_ascending[ggml_search::nearest_codebook_index(codebook->size, codebook->ascending, x / step)];
  // Clamped before rounding, so a tiny step cannot push x / step beyond what the rounding handles.
  const float t = std::clamp((x - offset) / step, float(min_code - zero - 1), float(max_code - zero + 1));
  return std::clamp(ggml_search::round_nearest_even(t) + zero, min_code, max_code);
}

namespace {

// ---- codes of the 32-value types: value j in the low nibble of qs[j % 16] (j < 16) or its high nibble;
// the 5-bit types keep bit 4 of value j in bit j of the little-endian u32 qh ----

int nibble(const uint8_t* qs, int j) { return j < 16 ? qs[j] & 0xF : qs[j - 16] >> 4; }
void set_nibble(uint8_t* qs, int j, int q) {
  if (j < 16) qs[j] = uint8_t((qs[j] & 0xF0) | q);
  else qs[j - 16] = uint8_t((qs[j - 16] & 0x0F) | (q << 4));
}
int bit(const uint8_t* bits, int j) { return (bits[j / 8] >> (j % 8)) & 1; }
void set_bit(uint8_t* bits, int j, int b) { bits[j / 8] = uint8_t((bits[j / 8] & ~(1 << (j % 8))) | (b << (j % 8))); }

template <class Block>
const Block& as(const void* p) { return *static_cast<const Block*>(p); }
template <class Block>
Block& as(void* p) { return *static_cast<Block*>(p); }

void fill(ValueGrid* out, int n, ValueGrid g) { std::fill(out, out + n, g); }

const BlockGridCodec kQ4_0{GgmlType::Q4_0, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, {f16_to_f32(as<BlockQ4_0>(b).d), 0, 8, 0, 15}); },
    [](const void* b, int j) { return nibble(as<BlockQ4_0>(b).qs, j); },
    [](void* b, int j, int q) { set_nibble(as<BlockQ4_0>(b).qs, j, q); }};

const BlockGridCodec kQ4_1{GgmlType::Q4_1, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, {f16_to_f32(as<BlockQ4_1>(b).d), f16_to_f32(as<BlockQ4_1>(b).m), 0, 0, 15}); },
    [](const void* b, int j) { return nibble(as<BlockQ4_1>(b).qs, j); },
    [](void* b, int j, int q) { set_nibble(as<BlockQ4_1>(b).qs, j, q); }};

const BlockGridCodec kQ5_0{GgmlType::Q5_0, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, {f16_to_f32(as<BlockQ5_0>(b).d), 0, 16, 0, 31}); },
    [](const void* b, int j) { return nibble(as<BlockQ5_0>(b).qs, j) | bit(as<BlockQ5_0>(b).qh, j) << 4; },
    [](void* b, int j, int q) {
      set_nibble(as<BlockQ5_0>(b).qs, j, q & 0xF);
      set_bit(as<BlockQ5_0>(b).qh, j, q >> 4);
    }};

const BlockGridCodec kQ5_1{GgmlType::Q5_1, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, {f16_to_f32(as<BlockQ5_1>(b).d), f16_to_f32(as<BlockQ5_1>(b).m), 0, 0, 31}); },
    [](const void* b, int j) { return nibble(as<BlockQ5_1>(b).qs, j) | bit(as<BlockQ5_1>(b).qh, j) << 4; },
    [](void* b, int j, int q) {
      set_nibble(as<BlockQ5_1>(b).qs, j, q & 0xF);
      set_bit(as<BlockQ5_1>(b).qh, j, q >> 4);
    }};

const BlockGridCodec kQ8_0{GgmlType::Q8_0, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, {f16_to_f32(as<BlockQ8_0>(b).d), 0, 0, -128, 127}); },
    [](const void* b, int j) { return int(as<BlockQ8_0>(b).qs[j]); },
    [](void* b, int j, int q) { as<BlockQ8_0>(b).qs[j] = int8_t(q); }};

// ---- the k-quants (layouts in lowbit/formats/ggml_kquants.h) ----

// 2-bit fields of q2_K and q3_K: value e (h = e/128, r = e%128) at bits 2*(r/32) of qs[32h + r%32].
int two_bits(const uint8_t* qs, int e) { return (qs[32 * (e / 128) + e % 32] >> (2 * (e % 128 / 32))) & 3; }
void set_two_bits(uint8_t* qs, int e, int q) {
  uint8_t& byte = qs[32 * (e / 128) + e % 32];
  const int shift = 2 * (e % 128 / 32);
  byte = uint8_t((byte & ~(3 << shift)) | (q << shift));
}

const BlockGridCodec kQ2K{GgmlType::Q2_K, 256,
    [](const void* p, ValueGrid* out) {
      const auto& b = as<BlockQ2K>(p);
      const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
      for (int s = 0; s < 16; ++s) fill(out + 16 * s, 16, {d * float(b.scales[s] & 0xF), -(dmin * float(b.scales[s] >> 4)), 0, 0, 3});
    },
    [](const void* b, int e) { return two_bits(as<BlockQ2K>(b).qs, e); },
    [](void* b, int e, int q) { set_two_bits(as<BlockQ2K>(b).qs, e, q); }};

// q3_K's 6-bit signed sub-block scale j (stored as s + 32).
int q3_scale(const uint8_t* packed, int j) {
  const int low = j < 8 ? packed[j] & 0xF : packed[j - 8] >> 4;
  const int high = (packed[8 + j % 4] >> (2 * (j / 4))) & 3;
  return (low | (high << 4)) - 32;
}

const BlockGridCodec kQ3K{GgmlType::Q3_K, 256,
    [](const void* p, ValueGrid* out) {
      const auto& b = as<BlockQ3K>(p);
      const float d = f16_to_f32(b.d);
      for (int s = 0; s < 16; ++s) fill(out + 16 * s, 16, {d * float(q3_scale(b.scales, s)), 0, 4, 0, 7});
    },
    [](const void* p, int e) {
      const auto& b = as<BlockQ3K>(p);
      return two_bits(b.qs, e) | ((b.hmask[e % 32] >> (e / 32)) & 1) << 2;
    },
    [](void* p, int e, int q) {
      auto& b = as<BlockQ3K>(p);
      set_two_bits(b.qs, e, q & 3);
      b.hmask[e % 32] = uint8_t((b.hmask[e % 32] & ~(1 << (e / 32))) | ((q >> 2) << (e / 32)));
    }};

// q4_K and q5_K: 6-bit scale and min of sub-block j (ggml's get_scale_min_k4).
std::array<int, 2> scale_min(const uint8_t* packed, int j) {
  if (j < 4) return {packed[j] & 63, packed[j + 4] & 63};
  return {(packed[j + 4] & 0xF) | ((packed[j - 4] >> 6) << 4), (packed[j + 4] >> 4) | ((packed[j] >> 6) << 4)};
}

template <class Block>
void scale_min_grids(const Block& b, int max_code, ValueGrid* out) {
  const float d = f16_to_f32(b.d), dmin = f16_to_f32(b.dmin);
  for (int s = 0; s < 8; ++s) {
    const auto [scale, min] = scale_min(b.scales, s);
    fill(out + 32 * s, 32, {d * float(scale), -(dmin * float(min)), 0, 0, max_code});
  }
}

// Nibble of value e of q4_K/q5_K: qs[32*(e/64) + e%32], low if e%64 < 32.
int k_nibble(const uint8_t* qs, int e) { return (qs[32 * (e / 64) + e % 32] >> (e % 64 < 32 ? 0 : 4)) & 0xF; }
void set_k_nibble(uint8_t* qs, int e, int q) {
  uint8_t& byte = qs[32 * (e / 64) + e % 32];
  byte = e % 64 < 32 ? uint8_t((byte & 0xF0) | q) : uint8_t((byte & 0x0F) | (q << 4));
}

const BlockGridCodec kQ4K{GgmlType::Q4_K, 256,
    [](const void* b, ValueGrid* out) { scale_min_grids(as<BlockQ4K>(b), 15, out); },
    [](const void* b, int e) { return k_nibble(as<BlockQ4K>(b).qs, e); },
    [](void* b, int e, int q) { set_k_nibble(as<BlockQ4K>(b).qs, e, q); }};

// q5_K: bit 4 of value e in qh[e%32] at bit e/32.
const BlockGridCodec kQ5K{GgmlType::Q5_K, 256,
    [](const void* b, ValueGrid* out) { scale_min_grids(as<BlockQ5K>(b), 31, out); },
    [](const void* p, int e) {
      const auto& b = as<BlockQ5K>(p);
      return k_nibble(b.qs, e) | ((b.qh[e % 32] >> (e / 32)) & 1) << 4;
    },
    [](void* p, int e, int q) {
      auto& b = as<BlockQ5K>(p);
      set_k_nibble(b.qs, e, q & 0xF);
      b.qh[e % 32] = uint8_t((b.qh[e % 32] & ~(1 << (e / 32))) | ((q >> 4) << (e / 32)));
    }};

// q6_K: value e (h = e/128, r = e%128, k = r/32, l = r%32): low 4 bits in ql[64h + l + 32*(k&1)] (low
// nibble if k < 2), high 2 bits at bit 2k of qh[32h + l].
const BlockGridCodec kQ6K{GgmlType::Q6_K, 256,
    [](const void* p, ValueGrid* out) {
      const auto& b = as<BlockQ6K>(p);
      const float d = f16_to_f32(b.d);
      for (int s = 0; s < 16; ++s) fill(out + 16 * s, 16, {d * float(b.scales[s]), 0, 32, 0, 63});
    },
    [](const void* p, int e) {
      const auto& b = as<BlockQ6K>(p);
      const int h = e / 128, k = e % 128 / 32, l = e % 32;
      const int low = (b.ql[64 * h + l + 32 * (k & 1)] >> (k < 2 ? 0 : 4)) & 0xF;
      return low | ((b.qh[32 * h + l] >> (2 * k)) & 3) << 4;
    },
    [](void* p, int e, int q) {
      auto& b = as<BlockQ6K>(p);
      const int h = e / 128, k = e % 128 / 32, l = e % 32;
      uint8_t& low = b.ql[64 * h + l + 32 * (k & 1)];
      low = k < 2 ? uint8_t((low & 0xF0) | (q & 0xF)) : uint8_t((low & 0x0F) | ((q & 0xF) << 4));
      uint8_t& high = b.qh[32 * h + l];
      high = uint8_t((high & ~(3 << (2 * k))) | ((q >> 4) << (2 * k)));
    }};

// ---- iq4_nl and iq4_xs: 4-bit indices into ggml's 16-entry codebook, packed as q4_0's nibbles (iq4_xs:
// per 32-value sub-block, its 6-bit scale times the block's d) ----

constexpr uint8_t kInOrder[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
constexpr Codebook kIq4{16, kIq4Codebook, kIq4Codebook, kInOrder};
ValueGrid codebook_grid(float step) { return {step, 0, 0, 0, 15, &kIq4}; }

const BlockGridCodec kIq4Nl{GgmlType::IQ4_NL, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, codebook_grid(f16_to_f32(as<BlockIq4Nl>(b).d))); },
    [](const void* b, int j) { return nibble(as<BlockIq4Nl>(b).qs, j); },
    [](void* b, int j, int q) { set_nibble(as<BlockIq4Nl>(b).qs, j, q); }};

const BlockGridCodec kIq4Xs{GgmlType::IQ4_XS, 256,
    [](const void* p, ValueGrid* out) {
      const auto& b = as<BlockIq4Xs>(p);
      const float d = f16_to_f32(b.d);
      for (int ib = 0; ib < 8; ++ib) {
        const int ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) | (((b.scales_h >> (2 * ib)) & 3) << 4);
        fill(out + 32 * ib, 32, codebook_grid(d * float(ls - 32)));  // the dequantizer's dl
      }
    },
    [](const void* b, int j) { return nibble(as<BlockIq4Xs>(b).qs + 16 * (j / 32), j % 32); },
    [](void* b, int j, int q) { set_nibble(as<BlockIq4Xs>(b).qs + 16 * (j / 32), j % 32, q); }};

// ---- mxfp4 and nvfp4: E2M1 codes (kFp4Doubled, sign in bit 3) under a power of two per 32 values or an
// E4M3 scale per 16; +0 listed before -0 so that a zero is stored as code 0, as ggml's quantizers do ----

constexpr int8_t kFp4Ascending[16] = {-12, -8, -6, -4, -3, -2, -1, 0, 0, 1, 2, 3, 4, 6, 8, 12};
constexpr uint8_t kFp4CodeOfAscending[16] = {15, 14, 13, 12, 11, 10, 9, 0, 8, 1, 2, 3, 4, 5, 6, 7};
constexpr Codebook kFp4{16, kFp4Doubled.data(), kFp4Ascending, kFp4CodeOfAscending};
ValueGrid fp4_grid(float step) { return {step, 0, 0, 0, 15, &kFp4}; }

const BlockGridCodec kMxfp4{GgmlType::MXFP4, 32,
    [](const void* b, ValueGrid* out) { fill(out, 32, fp4_grid(e8m0_to_f32_half(as<BlockMxfp4>(b).e))); },
    [](const void* b, int j) { return nibble(as<BlockMxfp4>(b).qs, j); },
    [](void* b, int j, int q) { set_nibble(as<BlockMxfp4>(b).qs, j, q); }};

// nvfp4: sub-block s of 16 packs value 16s + j in the low nibble of qs[8s + j % 8] (j < 8) or the high one.
const BlockGridCodec kNvfp4{GgmlType::NVFP4, 64,
    [](const void* p, ValueGrid* out) {
      const auto& b = as<BlockNvfp4>(p);
      for (int s = 0; s < 4; ++s) fill(out + 16 * s, 16, fp4_grid(ue4m3_to_f32_half(b.d[s])));
    },
    [](const void* p, int e) {
      const uint8_t byte = as<BlockNvfp4>(p).qs[8 * (e / 16) + e % 8];
      return e % 16 < 8 ? byte & 0xF : byte >> 4;
    },
    [](void* p, int e, int q) {
      uint8_t& byte = as<BlockNvfp4>(p).qs[8 * (e / 16) + e % 8];
      byte = e % 16 < 8 ? uint8_t((byte & 0xF0) | q) : uint8_t((byte & 0x0F) | (q << 4));
    }};

// ---- q1_0: one fp16 d per 128 values, a sign bit per value (-d or +d), packed from bit 0. (q2_0, -d/0/+d
// under d = the block's largest magnitude, is left to rounding: on the test layer GPTQ's feedback through
// so coarse a grid gave a larger output error than rounding, 47,079 against 44,665.) ----

int packed_bits(const uint8_t* qs, int j, int bits) { return (qs[j * bits / 8] >> (j * bits % 8)) & ((1 << bits) - 1); }
void set_packed_bits(uint8_t* qs, int j, int bits, int q) {
  uint8_t& byte = qs[j * bits / 8];
  const int shift = j * bits % 8, mask = ((1 << bits) - 1) << shift;
  byte = uint8_t((byte & ~mask) | (q << shift));
}

const BlockGridCodec kQ1_0{GgmlType::Q1_0, 128,
    [](const void* b, ValueGrid* out) {
      const float d = f16_to_f32(as<BlockQ1_0>(b).d);
      fill(out, 128, {2 * d, -d, 0, 0, 1});
    },
    [](const void* b, int j) { return packed_bits(as<BlockQ1_0>(b).qs, j, 1); },
    [](void* b, int j, int q) { set_packed_bits(as<BlockQ1_0>(b).qs, j, 1, q); }};

// ---- tq1_0 and tq2_0: trits t in {0, 1, 2} for (t - 1) * d, one fp16 d per 256 values ----

const BlockGridCodec kTq2_0{GgmlType::TQ2_0, 256,
    [](const void* b, ValueGrid* out) { fill(out, 256, {f16_to_f32(as<BlockTq2_0>(b).d), 0, 1, 0, 2}); },
    [](const void* b, int e) { return two_bits(as<BlockTq2_0>(b).qs, e); },  // q2_K's placement of 2-bit fields
    [](void* b, int e, int q) { set_two_bits(as<BlockTq2_0>(b).qs, e, q); }};

// tq1_0 packs five trits to a byte as a base-3 fraction (ggml_ternary.h): the byte holding value e
// (qh follows qs, so an offset into the block), and the trit's place in it.
int tq1_byte(int e, int& place) {
  if (e < 160) return place = e / 32, e % 32;
  if (e < 240) return place = (e - 160) / 16, 32 + (e - 160) % 16;
  return place = (e - 240) / 4, 48 + (e - 240) % 4;
}

const BlockGridCodec kTq1_0{GgmlType::TQ1_0, 256,
    [](const void* b, ValueGrid* out) { fill(out, 256, {f16_to_f32(as<BlockTq1_0>(b).d), 0, 1, 0, 2}); },
    [](const void* b, int e) {
      int place = 0;
      const uint8_t byte = static_cast<const uint8_t*>(b)[tq1_byte(e, place)];
      return ternary::unpack_trit(byte, place) + 1;
    },
    [](void* b, int e, int q) {
      int place = 0;
      uint8_t& byte = static_cast<uint8_t*>(b)[tq1_byte(e, place)];
      // Read the byte's five trits, change one, pack them again as ggml does: ceil(sum t_n 3^(4-n) * 256/243).
      int sum = 0;
      for (int n = 0; n < 5; ++n) sum = 3 * sum + (n == place ? q : ternary::unpack_trit(byte, n) + 1);
      byte = uint8_t((sum * 256 + 242) / 243);
    }};

}  // namespace

const BlockGridCodec* block_grid_codec(GgmlType type) {
  for (const BlockGridCodec* c : {&kQ4_0, &kQ4_1, &kQ5_0, &kQ5_1, &kQ8_0, &kQ2K, &kQ3K, &kQ4K, &kQ5K, &kQ6K, &kIq4Nl, &kIq4Xs, &kMxfp4, &kNvfp4,
                                    &kQ1_0, &kTq1_0, &kTq2_0, &kIq3XxsGroups, &kIq3SGroups, &kIq2XxsGroups, &kIq2XsGroups, &kIq2SGroups,
                                    &kIq1SGroups, &kIq1MGroups})
    if (c->type == type) return c;
  return nullptr;
}

}  // namespace lowbit::ggml
