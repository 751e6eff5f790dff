// Helpers for the GGUF tests: a builder of raw GGUF bytes (to forge malformed files field by field)
// and a small SHA-256 (to check tensor data against the golden manifest).
#pragma once

#include <gtest/gtest.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit::test {

// Appends little-endian GGUF fields; each call mirrors one field of the layout in gguf.h.
class GgufBytes {
 public:
  template <class T>
  GgufBytes& put(T value) {
    const size_t at = bytes_.size();
    bytes_.resize(at + sizeof(T));
    std::memcpy(bytes_.data() + at, &value, sizeof(T));
    return *this;
  }
  GgufBytes& u8(uint8_t v) { return put(v); }
  GgufBytes& u32(uint32_t v) { return put(v); }
  GgufBytes& i64(int64_t v) { return put(v); }
  GgufBytes& u64(uint64_t v) { return put(v); }
  GgufBytes& str(std::string_view s) {
    u64(s.size());
    for (char c : s) bytes_.push_back(std::byte(c));
    return *this;
  }
  // "GGUF", version, n_tensors, n_kv.
  GgufBytes& header(int64_t n_tensors, int64_t n_kv, uint32_t version = 3) {
    bytes_.insert(bytes_.end(), {std::byte('G'), std::byte('G'), std::byte('U'), std::byte('F')});
    return u32(version).i64(n_tensors).i64(n_kv);
  }
  GgufBytes& kv_u32(std::string_view key, uint32_t v) { return str(key).u32(uint32_t(gguf::ValueType::u32)).u32(v); }
  GgufBytes& tensor_info(std::string_view name, std::vector<int64_t> ne, lowbit::GgmlType type, uint64_t offset) {
    str(name).u32(uint32_t(ne.size()));
    for (int64_t d : ne) i64(d);
    return u32(uint32_t(type)).u64(offset);
  }
  GgufBytes& pad_to(size_t alignment) {
    while (bytes_.size() % alignment != 0) bytes_.push_back(std::byte{0});
    return *this;
  }
  GgufBytes& zeros(size_t count) {
    bytes_.resize(bytes_.size() + count);
    return *this;
  }
  const std::vector<std::byte>& bytes() const { return bytes_; }
  size_t size() const { return bytes_.size(); }

 private:
  std::vector<std::byte> bytes_;
};

// Parses `bytes` expecting a lowbit::Error whose message names the label and contains every fragment.
inline void expect_gguf_rejected(const std::vector<std::byte>& bytes, std::vector<std::string> fragments) {
  try {
    gguf::File::parse(bytes, "forged.gguf");
    ADD_FAILURE() << "parsed without error; wanted: " << fragments.front();
  } catch (const lowbit::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("forged.gguf"), std::string::npos) << message;
    for (const auto& fragment : fragments) EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
}

// FIPS 180-4 SHA-256 over a padded copy of the input: short rather than fast; the test data is small.
inline std::string sha256_hex(std::span<const std::byte> data) {
  static constexpr uint32_t k[64] = {
      0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98, 0x12835b01,
      0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc,
      0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147,
      0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
      0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08,
      0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208,
      0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
  std::array<uint32_t, 8> h = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  auto rotr = [](uint32_t x, int n) { return (x >> n) | (x << (32 - n)); };
  auto compress = [&](const uint8_t* block) {
    uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = uint32_t(block[4 * i]) << 24 | uint32_t(block[4 * i + 1]) << 16 | uint32_t(block[4 * i + 2]) << 8 | block[4 * i + 3];
    for (int i = 16; i < 64; ++i) {
      const uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    auto [a, b, c, d, e, f, g, hh] = h;
    for (int i = 0; i < 64; ++i) {
      const uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      hh = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    const uint32_t add[8] = {a, b, c, d, e, f, g, hh};
    for (int i = 0; i < 8; ++i) h[i] += add[i];
  };
  // Message, 0x80, zeros to 56 mod 64, then the bit length big-endian.
  std::vector<uint8_t> message(data.size());
  if (!data.empty()) std::memcpy(message.data(), data.data(), data.size());
  message.push_back(0x80);
  while (message.size() % 64 != 56) message.push_back(0);
  const uint64_t bits = uint64_t(data.size()) * 8;
  for (int i = 7; i >= 0; --i) message.push_back(uint8_t(bits >> (8 * i)));
  for (size_t at = 0; at < message.size(); at += 64) compress(message.data() + at);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (uint32_t word : h)
    for (int i = 28; i >= 0; i -= 4) hex.push_back(kHex[(word >> i) & 0xf]);
  return hex;
}

}  // namespace lowbit::test
