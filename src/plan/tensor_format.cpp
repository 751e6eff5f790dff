#include "lowbit/plan/tensor_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace lowbit {

std::optional<TensorFormat> tensor_format_of(FormatId id) {
  if (const auto type = format_info(id).ggml) return *type;
  if (const auto quant_type = bnb::quant_type_of(id)) return Bnb4bitFormat{.quant_type = *quant_type};
  return std::nullopt;
}

std::string_view format_name(const TensorFormat& format) {
  if (const auto* type = std::get_if<GgmlType>(&format)) return ggml_type_name(*type);
  return bnb::quant_type_name(std::get<Bnb4bitFormat>(format).quant_type);
}

std::string format_label(const TensorFormat& format) {
  if (const auto* type = std::get_if<GgmlType>(&format)) return std::string(ggml_type_name(*type));
  const auto& b = std::get<Bnb4bitFormat>(format);
  return fmt::format("{}-b{}{}", bnb::quant_type_name(b.quant_type), b.blocksize, b.double_quant ? "-dq" : "");
}

std::optional<TensorFormat> parse_format_label(std::string_view label) {
  const size_t dash = std::min(label.find('-'), label.size());
  const auto id = parse_format_id(label.substr(0, dash));
  const auto format = id ? tensor_format_of(*id) : std::nullopt;
  if (!format || !std::holds_alternative<Bnb4bitFormat>(*format)) return dash == label.size() ? format : std::nullopt;
  Bnb4bitFormat b = std::get<Bnb4bitFormat>(*format);
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

bool is_float_format(const TensorFormat& format) {
  const auto* type = std::get_if<GgmlType>(&format);
  return type && (*type == GgmlType::F32 || *type == GgmlType::F16 || *type == GgmlType::BF16);
}

}  // namespace lowbit
