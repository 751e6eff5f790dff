#include "lowbit/formats/format.h"

#include <algorithm>
#include <cctype>

namespace lowbit {

std::optional<FormatId> parse_format_id(std::string_view name) {
  auto lower_equal = [](std::string_view a, std::string_view b) {
    return std::ranges::equal(a, b, [](char x, char y) { return std::tolower(x) == std::tolower(y); });
  };
  for (const auto& info : kFormats)
    if (lower_equal(info.name, name)) return info.id;
  return std::nullopt;
}

std::optional<FormatId> parse_bnb_format(std::string_view name) {
  const auto id = parse_format_id(name);
  if (!id || !is_bnb_format(*id)) return std::nullopt;
  return id;
}

std::optional<GgmlType> ggml_type_from_name(std::string_view name) {
  const auto id = parse_format_id(name);
  if (!id) return std::nullopt;
  return format_info(*id).ggml;
}

}  // namespace lowbit
