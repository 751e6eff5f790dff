#include "lowbit/plan/tensor_format.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

namespace lowbit {

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
  const std::string_view family = label.substr(0, 3);
  if (family != "nf4" && family != "fp4") {
    if (const auto type = ggml_type_from_name(label)) return *type;
    return std::nullopt;
  }
  Bnb4bitFormat b{.quant_type = family == "nf4" ? bnb::QuantType::nf4 : bnb::QuantType::fp4};
  std::string_view rest = label.substr(3);
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
