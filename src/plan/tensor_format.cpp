#include "lowbit/plan/tensor_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "lowbit/formats/bnb_4bit.h"

namespace lowbit {

std::optional<FormatSpec> plan_format_of(FormatId id) {
  if (format_info(id).ggml || bnb::quant_type_of(id)) return FormatSpec{.id = id};
  return std::nullopt;
}

std::string format_label(const FormatSpec& format) {
  if (!is_bnb_4bit(format)) return std::string(format_name(format.id));
  return fmt::format("{}-b{}{}", format_name(format.id), format.blocksize, format.double_quant ? "-dq" : "");
}

std::optional<FormatSpec> parse_format_label(std::string_view label) {
  const size_t dash = std::min(label.find('-'), label.size());
  const auto id = parse_format_id(label.substr(0, dash));
  const auto format = id ? plan_format_of(*id) : std::nullopt;
  if (!format || !is_bnb_4bit(*format)) return dash == label.size() ? format : std::nullopt;
  FormatSpec b = *format;
  std::string_view rest = label.substr(dash);
  if (rest.starts_with("-b")) {
    const char* end = rest.data() + rest.size();
    const auto [ptr, ec] = std::from_chars(rest.data() + 2, end, b.blocksize);
    if (ec != std::errc() || std::ranges::find(bnb::kBlocksizes4bit, b.blocksize) == bnb::kBlocksizes4bit.end()) return std::nullopt;
    rest = rest.substr(size_t(ptr - rest.data()));
  }
  if (rest == "-dq") {
    b.double_quant = true;
    rest = {};
  }
  if (!rest.empty()) return std::nullopt;
  return b;
}

bool is_float_format(const FormatSpec& format) {
  return format.id == FormatId::f32 || format.id == FormatId::f16 || format.id == FormatId::bf16;
}

}  // namespace lowbit
