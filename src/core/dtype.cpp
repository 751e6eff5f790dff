#include "lowbit/core/dtype.h"

namespace lowbit {

std::optional<DType> dtype_from_safetensors(std::string_view name) {
  for (const auto& info : kDTypes)
    if (info.safetensors_name == name) return info.dtype;
  return std::nullopt;
}

std::optional<DType> dtype_from_name(std::string_view name) {
  for (const auto& info : kDTypes)
    if (info.name == name) return info.dtype;
  // PyTorch's spellings, as bitsandbytes' quant state and config.json write them.
  struct Alias { std::string_view name; DType dtype; };
  static constexpr Alias kAliases[] = {
      {"float32", DType::f32}, {"float16", DType::f16}, {"bfloat16", DType::bf16},
      {"float64", DType::f64}, {"int8", DType::i8},     {"uint8", DType::u8},
      {"int16", DType::i16},   {"int32", DType::i32},   {"int64", DType::i64},
  };
  for (const auto& a : kAliases)
    if (a.name == name) return a.dtype;
  return std::nullopt;
}

}  // namespace lowbit
