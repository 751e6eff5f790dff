// Facts about the GGUF layout shared by the reader and the writer, so both accept exactly the same files.
#pragma once

#include <cstdint>
#include <string_view>

#include "lowbit/io/gguf.h"

namespace lowbit::gguf::format {

inline constexpr std::string_view kMagic = "GGUF";  // bytes 0..3
inline constexpr uint32_t kVersion = 3;             // what the writer emits; the reader also takes 2
inline constexpr std::string_view kAlignmentKey = "general.alignment";

// ggml's tensors have at most 4 dimensions (GGML_MAX_DIMS); a 0-dimensional tensor is never written.
inline constexpr uint32_t kMaxDims = 4;
// ggml caps names at 63 bytes (GGML_MAX_NAME = 64); other writers (gguf-py) do not, so lowbit accepts
// longer names up to a bound that still rejects garbage lengths.
inline constexpr uint64_t kMaxTensorNameBytes = 256;
// ggml rejects arrays of arrays; gguf-py writes them. A top-level array is depth 1; deeper is hostile.
inline constexpr int kMaxArrayDepth = 8;

constexpr bool is_value_type(uint32_t id) { return id <= uint32_t(ValueType::f64); }

// Bytes a scalar of `type` occupies in the file; 0 for string and array, whose size is variable.
constexpr uint64_t fixed_value_bytes(ValueType type) {
  switch (type) {
    case ValueType::u8: case ValueType::i8: case ValueType::boolean: return 1;
    case ValueType::u16: case ValueType::i16: return 2;
    case ValueType::u32: case ValueType::i32: case ValueType::f32: return 4;
    case ValueType::u64: case ValueType::i64: case ValueType::f64: return 8;
    case ValueType::string: case ValueType::array: return 0;
  }
  return 0;
}

// The fewest bytes one element of `type` can take: a string is at least its u64 length, an array
// at least its i32 element type and u64 count. Used to reject counts that cannot fit in the file.
constexpr uint64_t min_value_bytes(ValueType type) {
  if (type == ValueType::string) return 8;
  if (type == ValueType::array) return 12;
  return fixed_value_bytes(type);
}

constexpr bool is_power_of_two(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// GGML_PAD: rounds x up to a multiple of `alignment` (a power of two). Callers keep x far below 2^64.
constexpr uint64_t align_up(uint64_t x, uint64_t alignment) { return (x + alignment - 1) & ~(alignment - 1); }

}  // namespace lowbit::gguf::format
