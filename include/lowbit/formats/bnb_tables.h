// The constant tables of bitsandbytes' 4-bit and 8-bit codecs, as float32 bit patterns.
// Provenance: read from bitsandbytes 0.50.2.dev0 (commit 95f9af3) by the team's golden generator
// (golden/bnb/tables.safetensors); the CUDA side's values are those of csrc/kernels.cu
// (dQuantizeNF4, dQuantizeFP4, the dequantization LUTs) and the Python side's of
// bitsandbytes/functional.py (get_4bit_type, create_dynamic_map). Bit patterns, not decimals, so
// nothing depends on how a compiler rounds a literal. Read by the C++ compiler and by nvcc: the CPU
// codecs and the CUDA kernels (which copy them into constant memory) use these same tables.
#pragma once

#include <array>
#include <bit>
#include <cstdint>

namespace lowbit::bnb::tables {

template <std::size_t N>
constexpr std::array<float, N> floats_from_bits(const std::array<uint32_t, N>& bits) {
  std::array<float, N> out{};
  for (std::size_t i = 0; i < N; ++i) out[i] = std::bit_cast<float>(bits[i]);
  return out;
}

// NF4 codebook indexed by code: normal-distribution quantiles scaled to [-1, 1], code 7 = 0.
// The CUDA dequantization kernel uses the same 16 values.
inline constexpr std::array<float, 16> kNf4Code = floats_from_bits<16>({
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f,
    0xbdba7871, 0x00000000, 0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a,
    0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
});

// FP4 (1 sign, 2 exponent, 1 mantissa bit) codebook as QuantState.code holds it: code 8 is +0.0.
inline constexpr std::array<float, 16> kFp4Code = floats_from_bits<16>({
    0x00000000, 0x3baaaaab, 0x3f2aaaab, 0x3f800000, 0x3eaaaaab, 0x3f000000,
    0x3e2aaaab, 0x3e800000, 0x00000000, 0xbbaaaaab, 0xbf2aaaab, 0xbf800000,
    0xbeaaaaab, 0xbf000000, 0xbe2aaaab, 0xbe800000,
});

// What the CUDA kernel multiplies by: it computes lut[code & 7] * (code & 8 ? -1 : 1), so code 8
// dequantizes to -0.0; otherwise equal to kFp4Code.
inline constexpr std::array<float, 16> kFp4KernelLut = [] {
  std::array<float, 16> lut = kFp4Code;
  for (std::size_t i = 8; i < 16; ++i) lut[i] = -kFp4Code[i - 8];
  return lut;
}();

// dQuantizeNF4's decision points, ascending: the code is how many of them v exceeds.
inline constexpr std::array<float, 15> kNf4Thresholds = floats_from_bits<15>({
    0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc,
    0xbd3a7871, 0x3d22faff, 0x3df64862, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9,
    0x3f006d04, 0x3f248daf, 0x3f5c89da,
});

// dQuantizeFP4's decision points on |v|, ascending (1/384, 11/128, 5/24, 7/24, 5/12, 7/12, 5/6 as
// the kernel spells them in float32).
inline constexpr std::array<float, 7> kFp4AbsThresholds = floats_from_bits<7>({
    0x3b2aaab9, 0x3db00000, 0x3e555555, 0x3e955555, 0x3ed55556, 0x3f155550,
    0x3f555555,
});

// The positive half of create_dynamic_map(signed=True) (indices 128 .. 254 of the 256-entry map).
// The negative half mirrors it (see kDynamicMapSigned).
inline constexpr std::array<uint32_t, 127> kDynamicMapPositiveBits = {
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3,
    0x38ba1f4b, 0x3923d70b, 0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1,
    0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d, 0x3af1a9fc, 0x3b1db22d,
    0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418,
    0x3c1f3b64, 0x3c3ae148, 0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a,
    0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, 0x3d166667, 0x3d21eb85,
    0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b,
    0x3d9bd70a, 0x3da1999a, 0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7,
    0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, 0x3df80000, 0x3e0a6666,
    0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a,
    0x3ea2cccc, 0x3eaa0000, 0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc,
    0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a, 0x3eeacccc, 0x3ef20000,
    0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334,
    0x3f27cccd, 0x3f2b6666, 0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd,
    0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, 0x3f4bcccd, 0x3f4f6666,
    0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a,
    0x3f7e3333,
};

// The full signed dynamic map, ascending: 127 negatives (mirror of the positives), 0, 127
// positives, then 1.0. Used for the second level of double quantization.
inline constexpr std::array<float, 256> kDynamicMapSigned = [] {
  std::array<float, 256> map{};
  for (std::size_t k = 0; k < 127; ++k) {
    map[128 + k] = std::bit_cast<float>(kDynamicMapPositiveBits[k]);
    map[126 - k] = -map[128 + k];
  }
  map[127] = 0.0f;
  map[255] = 1.0f;
  return map;
}();

}  // namespace lowbit::bnb::tables
