// Decoding of the embedded rcp.approx delta table, and the GPU arithmetic built on it.
#include "lowbit/formats/gpu_rcp_approx.h"

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit::gpu {
namespace {

#include "gpu_rcp_delta_table.inc"  // kRcpDeltaBase64, kRcpDeltaGapBytes

constexpr uint32_t kMantissas = 1u << 23;
constexpr size_t kLzMinMatch = 4;  // must match the generator

std::vector<uint8_t> decode_base64(std::string_view text) {
  auto value = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;  // '=' padding
  };
  std::vector<uint8_t> out;
  out.reserve(text.size() / 4 * 3);
  uint32_t acc = 0;
  int bits = 0;
  for (char c : text) {
    const int v = value(c);
    if (v < 0) break;
    acc = (acc << 6) | uint32_t(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(uint8_t(acc >> bits));
    }
  }
  return out;
}

// LZ77 as written by the generator: { varint literals, literals, [varint len-4, varint dist-1] }*.
std::vector<uint8_t> decode_lz77(const std::vector<uint8_t>& in, size_t out_size) {
  std::vector<uint8_t> out;
  out.reserve(out_size);
  size_t pos = 0;
  auto varint = [&]() {
    size_t v = 0;
    for (int shift = 0; pos < in.size(); shift += 7) {
      const uint8_t b = in[pos++];
      v |= size_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return v;
    }
    throw Error("embedded rcp.approx table: truncated LZ stream");
  };
  while (out.size() < out_size) {
    const size_t literals = varint();
    if (pos + literals > in.size()) throw Error("embedded rcp.approx table: literals past the end");
    out.insert(out.end(), in.begin() + ptrdiff_t(pos), in.begin() + ptrdiff_t(pos + literals));
    pos += literals;
    if (out.size() >= out_size) break;
    const size_t length = varint() + kLzMinMatch;
    const size_t distance = varint() + 1;
    if (distance > out.size()) throw Error("embedded rcp.approx table: match before the start");
    for (size_t i = 0; i < length; ++i) out.push_back(out[out.size() - distance]);  // may overlap
  }
  if (out.size() != out_size) throw Error("embedded rcp.approx table: wrong decoded size");
  return out;
}

// The table as the golden file stores it: 2 bits (delta + 1) per mantissa, 4 per byte.
std::vector<uint8_t> decode_delta_table() {
  const std::vector<uint8_t> gaps = decode_lz77(decode_base64(kRcpDeltaBase64), kRcpDeltaGapBytes);
  std::vector<uint8_t> packed(kMantissas / 4, 0x55);  // every delta 0
  uint32_t m = 0;
  for (uint8_t g : gaps) {
    m += g & 0x7f;
    if ((g & 0x7f) == 127) continue;  // a run of zeros without a value
    if (m >= kMantissas) throw Error("embedded rcp.approx table: mantissa out of range");
    const uint8_t code = (g & 0x80) ? 2 : 0;  // delta +1 or -1, stored as delta + 1
    packed[m >> 2] = uint8_t((packed[m >> 2] & ~(3u << (2 * (m & 3)))) | (code << (2 * (m & 3))));
    ++m;
  }
  return packed;
}

const std::vector<uint8_t>& delta_table() {
  static const std::vector<uint8_t> table = decode_delta_table();  // thread-safe, decoded once
  return table;
}

}  // namespace

int rcp_approx_delta(uint32_t mantissa) {
  mantissa &= kMantissas - 1;
  return int((delta_table()[mantissa >> 2] >> (2 * (mantissa & 3))) & 3) - 1;
}

float flush_subnormal(float x) {
  return std::fpclassify(x) == FP_SUBNORMAL ? std::copysign(0.0f, x) : x;
}

float mul_ftz_on_host(float a, float b) { return flush_subnormal(flush_subnormal(a) * flush_subnormal(b)); }

float rcp_approx_ftz(float x) {
  x = flush_subnormal(x);
  if (x == 0.0f || std::isinf(x) || std::isnan(x)) return 1.0f / x;  // ±Inf, ±0, NaN: exact cases
  const float correctly_rounded = 1.0f / x;
  if (std::fpclassify(correctly_rounded) != FP_NORMAL) return std::copysign(0.0f, x);  // ftz output
  const uint32_t mantissa = std::bit_cast<uint32_t>(x) & (kMantissas - 1);
  const uint32_t bits = std::bit_cast<uint32_t>(correctly_rounded);
  // The sign bit is not touched: |delta| = 1 on a normal non-extreme pattern stays within its sign.
  return std::bit_cast<float>(uint32_t(int64_t(bits) + rcp_approx_delta(mantissa)));
}

float div_approx_ftz(float a, float b) { return mul_ftz(a, rcp_approx_ftz(b)); }

}  // namespace lowbit::gpu
