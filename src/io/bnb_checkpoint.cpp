#include "lowbit/io/bnb_checkpoint.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

namespace lowbit::bnb {

std::string python_float_repr(double x) {
  if (std::isnan(x)) return "NaN";  // json.dumps' spelling
  if (std::isinf(x)) return x > 0 ? "Infinity" : "-Infinity";
  // Shortest round-trip digits, then laid out as Python's float_repr_style 'short' does.
  char buf[64];
  const auto [end, ec] = std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
  std::string sci(buf, end);                        // "-1.2345e-05"
  const bool negative = sci[0] == '-';
  const size_t e = sci.find('e');
  std::string digits;
  for (size_t i = negative ? 1 : 0; i < e; ++i)
    if (sci[i] != '.') digits += sci[i];
  const int exponent = std::stoi(sci.substr(e + 1));  // value = d1.d2d3... × 10^exponent
  std::string out = negative ? "-" : "";
  if (exponent >= -4 && exponent < 16) {
    if (exponent >= 0) {
      const size_t int_digits = size_t(exponent) + 1;
      if (digits.size() <= int_digits) {
        out += digits + std::string(int_digits - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, int_digits) + "." + digits.substr(int_digits);
      }
    } else {
      out += "0." + std::string(size_t(-exponent - 1), '0') + digits;
    }
    return out;
  }
  out += digits.substr(0, 1);
  if (digits.size() > 1) out += "." + digits.substr(1);
  out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
  return out;
}

std::string_view torch_dtype_name(DType dtype) {
  switch (dtype) {
    case DType::f32: return "float32";
    case DType::f16: return "float16";
    case DType::bf16: return "bfloat16";
    case DType::f64: return "float64";
    default: throw Error(fmt::format("bitsandbytes cannot record dtype {}", dtype_name(dtype)));
  }
}

std::string pack_quant_state(const QuantStateJson& s) {
  std::string out = fmt::format(R"({{"quant_type": "{}", "blocksize": {}, "dtype": "{}", "shape": [{}])", s.quant_type,
                                s.blocksize, torch_dtype_name(s.dtype), fmt::join(s.shape, ", "));
  if (s.nested_offset)
    out += fmt::format(R"(, "nested_blocksize": {}, "nested_dtype": "float32", "nested_offset": {})", s.nested_blocksize,
                       python_float_repr(double(*s.nested_offset)));
  return out + "}";
}

QuantStateJson parse_quant_state(std::string_view text, const ErrorContext& where) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    throw Error(fmt::format("quant state is not valid JSON: {}", e.what()), where);
  }
  auto fail = [&](const std::string& problem) { throw Error("quant state " + problem, where); };
  if (!j.is_object()) fail("is not a JSON object");
  QuantStateJson s;
  if (!j.contains("quant_type") || !j["quant_type"].is_string()) fail("has no quant_type");
  s.quant_type = j["quant_type"].get<std::string>();
  if (s.quant_type != "nf4" && s.quant_type != "fp4") fail("has quant_type '" + s.quant_type + "', not nf4 or fp4");
  if (!j.contains("blocksize") || !j["blocksize"].is_number_integer()) fail("has no integer blocksize");
  s.blocksize = j["blocksize"].get<int>();
  if (!j.contains("dtype") || !j["dtype"].is_string()) fail("has no dtype");
  const auto dtype = dtype_from_name(j["dtype"].get<std::string>());
  if (!dtype || !dtype_is_float(*dtype)) fail("has dtype '" + j["dtype"].get<std::string>() + "', not a float type");
  s.dtype = *dtype;
  if (!j.contains("shape") || !j["shape"].is_array()) fail("has no shape list");
  for (const auto& d : j["shape"]) {
    if (!d.is_number_unsigned()) fail("shape holds a value that is not a non-negative integer");
    s.shape.push_back(d.get<int64_t>());
  }
  if (j.contains("nested_offset")) {
    if (!j["nested_offset"].is_number()) fail("nested_offset is not a number");
    s.nested_offset = j["nested_offset"].get<float>();
    if (j.contains("nested_blocksize")) s.nested_blocksize = j["nested_blocksize"].get<int>();
  }
  return s;
}

nlohmann::ordered_json quantization_config(const QuantizationConfig& c) {
  const bool four_bit = c.format != "int8";
  nlohmann::ordered_json j;
  j["_load_in_4bit"] = four_bit;
  j["_load_in_8bit"] = !four_bit;
  j["bnb_4bit_compute_dtype"] = std::string(torch_dtype_name(c.compute_dtype));
  j["bnb_4bit_quant_storage"] = "uint8";
  j["bnb_4bit_quant_type"] = four_bit ? c.format : "fp4";
  j["bnb_4bit_use_double_quant"] = four_bit && c.double_quant;
  j["llm_int8_enable_fp32_cpu_offload"] = false;
  j["llm_int8_has_fp16_weight"] = false;
  j["llm_int8_skip_modules"] = c.skip_modules.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(c.skip_modules);
  j["llm_int8_threshold"] = c.int8_threshold;
  j["load_in_4bit"] = four_bit;
  j["load_in_8bit"] = !four_bit;
  j["quant_method"] = "bitsandbytes";
  return j;
}

}  // namespace lowbit::bnb
