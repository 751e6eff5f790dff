#include "lowbit/io/bnb_checkpoint.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>

#include "lowbit/io/json_file.h"

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

namespace {

// Bitsandbytes' own blocksizes are at most 4096; a weight of more than 2^48 elements is no real model's
// and keeps every later size computation far from overflow.
constexpr int64_t kMaxBlocksize = 1 << 20, kMaxElements = int64_t(1) << 48;

QuantStateJson read_quant_state(const JsonField& j) {
  QuantStateJson s;
  s.quant_type = j["quant_type"].string();
  // The file's spelling exactly (bitsandbytes writes it lower-case): nf4 or fp4.
  const auto id = parse_format_id(s.quant_type);
  if (!id || format_info(*id).family != FormatFamily::bnb_4bit || format_name(*id) != s.quant_type)
    throw j["quant_type"].error("is '" + s.quant_type + "'", "nf4 or fp4");
  s.blocksize = int(j["blocksize"].integer(1, kMaxBlocksize));
  const auto dtype = dtype_from_name(j["dtype"].string());
  if (!dtype || !dtype_is_float(*dtype)) throw j["dtype"].error("is '" + j["dtype"].string() + "'", "a float type");
  s.dtype = *dtype;
  int64_t elements = 1;
  for (const auto& d : j["shape"].elements()) {
    s.shape.push_back(d.integer(0, kMaxElements));
    if (s.shape.back() != 0 && elements > kMaxElements / s.shape.back())
      throw j["shape"].error(fmt::format("{} holds more than 2^48 elements", shape_to_string(s.shape)), "a real weight's shape");
    elements *= s.shape.back();
  }
  if (const auto offset = j.find("nested_offset")) {
    s.nested_offset = float(offset->number());
    s.nested_blocksize = int(j.integer_or("nested_blocksize", s.nested_blocksize, 1, kMaxBlocksize));
  }
  return s;
}

}  // namespace

QuantStateJson parse_quant_state(std::string_view text, const ErrorContext& where) {
  try {
    const nlohmann::json j = parse_json_text(text, where.file);
    return read_quant_state(JsonField(j, where.file));
  } catch (const Error& e) {  // name the quant state tensor too
    ErrorContext c = e.context();
    c.tensor = where.tensor;
    throw Error("quant state: " + e.problem(), c);
  }
}

nlohmann::ordered_json quantization_config(const QuantizationConfig& c) {
  const bool four_bit = c.format != FormatId::int8;
  nlohmann::ordered_json j;
  j["_load_in_4bit"] = four_bit;
  j["_load_in_8bit"] = !four_bit;
  j["bnb_4bit_compute_dtype"] = std::string(torch_dtype_name(c.compute_dtype));
  j["bnb_4bit_quant_storage"] = "uint8";
  j["bnb_4bit_quant_type"] = std::string(four_bit ? format_name(c.format) : "fp4");
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
