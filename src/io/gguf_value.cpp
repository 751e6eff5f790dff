// Small helpers of the GGUF API that neither reader nor writer owns.
#include <fmt/format.h>

#include <limits>

#include "io/gguf_format.h"
#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit::gguf {

std::string_view value_type_name(ValueType type) {
  // Spelled as gguf_type_name() in ggml, so messages read the same as llama.cpp's.
  switch (type) {
    case ValueType::u8: return "u8";
    case ValueType::i8: return "i8";
    case ValueType::u16: return "u16";
    case ValueType::i16: return "i16";
    case ValueType::u32: return "u32";
    case ValueType::i32: return "i32";
    case ValueType::f32: return "f32";
    case ValueType::boolean: return "bool";
    case ValueType::string: return "str";
    case ValueType::array: return "arr";
    case ValueType::u64: return "u64";
    case ValueType::i64: return "i64";
    case ValueType::f64: return "f64";
  }
  return "unknown";
}

std::optional<int64_t> Value::as_int() const {
  return std::visit(
      [](const auto& v) -> std::optional<int64_t> {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, uint64_t>) {
          if (v > uint64_t(std::numeric_limits<int64_t>::max())) return std::nullopt;
          return int64_t(v);
        } else if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
          return int64_t(v);
        } else {
          return std::nullopt;
        }
      },
      data);
}

Value make_string_array(std::vector<std::string> strings) {
  Array array{.element_type = ValueType::string};
  array.items.reserve(strings.size());
  for (auto& s : strings) array.items.push_back(Value{std::move(s)});
  return Value{std::move(array)};
}

uint64_t tensor_bytes(GgmlType type, const Shape& ne) {
  const FormatInfo* info = ggml_type_info(uint32_t(type));
  if (!info) throw Error(fmt::format("ggml type id {} is not defined", uint32_t(type)));
  if (ne.empty() || ne.size() > format::kMaxDims)
    throw Error(fmt::format("tensor has {} dimensions", ne.size()), {.expected = "1 to 4"});
  const int64_t elements = shape_elements(ne);  // throws on a negative dimension or int64 overflow
  if (ne[0] % info->block_elements != 0)
    throw Error(fmt::format("row length ne[0] = {} is not a whole number of {} blocks", ne[0], info->name),
                {.expected = fmt::format("a multiple of {}", info->block_elements)});
  // ne[0] is a multiple of the block, so the element count is too: ggml's ne[1]*ne[2]*ne[3]*(ne[0]/blck)*type_size.
  const uint64_t blocks = uint64_t(elements) / info->block_elements;
  if (blocks > std::numeric_limits<uint64_t>::max() / info->block_bytes)
    throw Error(fmt::format("shape {} of {} overflows a 64-bit byte count", shape_to_string(ne), info->name));
  return blocks * info->block_bytes;
}

}  // namespace lowbit::gguf
