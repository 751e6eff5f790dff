// The element types of plain (unquantized) tensors, with safetensors' spellings.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace lowbit {

enum class DType : uint8_t { f32, f16, bf16, f64, i8, u8, i16, i32, i64, boolean };

struct DTypeInfo {
  DType dtype;
  std::string_view name;             // lowbit's and PyTorch-like short name: "bf16"
  std::string_view safetensors_name; // the header's spelling: "BF16"
  uint8_t size;                      // bytes per element
  bool is_float;
};

inline constexpr DTypeInfo kDTypes[] = {
    {DType::f32, "f32", "F32", 4, true},  {DType::f16, "f16", "F16", 2, true},
    {DType::bf16, "bf16", "BF16", 2, true}, {DType::f64, "f64", "F64", 8, true},
    {DType::i8, "i8", "I8", 1, false},    {DType::u8, "u8", "U8", 1, false},
    {DType::i16, "i16", "I16", 2, false}, {DType::i32, "i32", "I32", 4, false},
    {DType::i64, "i64", "I64", 8, false}, {DType::boolean, "bool", "BOOL", 1, false},
};

constexpr const DTypeInfo& dtype_info(DType t) { return kDTypes[static_cast<size_t>(t)]; }
constexpr size_t dtype_size(DType t) { return dtype_info(t).size; }
constexpr std::string_view dtype_name(DType t) { return dtype_info(t).name; }
constexpr bool dtype_is_float(DType t) { return dtype_info(t).is_float; }

// "F32" (safetensors) or "f32"/"float32"/"bfloat16"/"float16" (lowbit, PyTorch).
std::optional<DType> dtype_from_safetensors(std::string_view name);
std::optional<DType> dtype_from_name(std::string_view name);

static_assert([] {
  for (size_t i = 0; i < std::size(kDTypes); ++i)
    if (static_cast<size_t>(kDTypes[i].dtype) != i) return false;
  return true;
}(), "kDTypes must be indexed by DType");

}  // namespace lowbit
