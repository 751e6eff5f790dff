#include "lowbit/formats/ggml_types.h"

#include <algorithm>
#include <cctype>

namespace lowbit {

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  auto lower_equal = [](std::string_view a, std::string_view b) {
    return std::ranges::equal(a, b, [](char x, char y) { return std::tolower(x) == std::tolower(y); });
  };
  for (const auto& info : kGgmlTypes)
    if (lower_equal(info.name, name)) return info.type;
  return std::nullopt;
}

}  // namespace lowbit
