#include "lowbit/io/bnb_checkpoint.h"

#include <fmt/format.h>

#include <charconv>
#include <cmath>
#include <cstring>

#include "lowbit/formats/bnb_int8.h"
#include "lowbit/io/json_file.h"
#include "lowbit/io/value_guard.h"

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

namespace lowbit {
namespace {

// A 4-bit weight's statistics: the code map and every block's scale (nested ones dequantized) must
// be finite, and the scales within `out`'s range (the block's largest value is ±scale exactly).
void check_4bit_state(const bnb::Bnb4bitState& state, DType out, const ValueSite& site, ValueGuard& guard) {
  guard.statistics(site, "quant_map", state.code, ValueRange::finite);
  if (state.nested) {
    guard.statistics(site, "nested_quant_map", state.nested->code, ValueRange::finite);
    guard.statistics(site, "nested_absmax", state.nested->nested_absmax, ValueRange::finite);
    guard.statistics(site, "nested offset", std::span(&state.nested->offset, 1), ValueRange::finite);
  }
  guard.statistics(site, "absmax", state.block_scales(), value_range_of(out));
}

}  // namespace

BnbReader::BnbReader(const Checkpoint& ckpt) : ckpt_(ckpt), int8_dtype_(ckpt.torch_dtype().value_or(DType::f16)) {
  for (const auto& e : ckpt.tensors()) by_name_[e.info->name] = &e;
}

bool BnbReader::holds_quantized_weights(const Checkpoint& ckpt) {
  for (const auto& e : ckpt.tensors()) {
    const auto& name = e.info->name;
    if (name.find(bnb::quant_state_key("")) != std::string::npos || name.ends_with(".SCB")) return true;
  }
  return false;
}

const Checkpoint::Entry* BnbReader::quant_state(const std::string& weight) const {
  for (const bnb::QuantType type : bnb::kQuantTypes)
    if (const auto* e = find(weight + bnb::quant_state_key(bnb::quant_type_name(type)))) return e;
  return nullptr;
}

const Checkpoint::Entry* BnbReader::scb(const std::string& weight) const {
  if (const auto* e = find(bnb::module_of(weight) + ".SCB")) return e;
  return find(weight + ".SCB");
}

std::vector<std::string> BnbReader::companions(const std::string& weight) const {
  std::vector<std::string> out;
  if (const auto* state = quant_state(weight)) {
    out.push_back(state->info->name);
    for (auto suffix : {bnb::kAbsmax, bnb::kQuantMap, bnb::kNestedAbsmax, bnb::kNestedQuantMap})
      if (find(weight + std::string(suffix))) out.push_back(weight + std::string(suffix));
  } else if (const auto* s = scb(weight); s && view(*find(weight)).dtype == DType::i8) {
    out.push_back(s->info->name);
    if (find(bnb::module_of(weight) + ".weight_format")) out.push_back(bnb::module_of(weight) + ".weight_format");
  }
  return out;
}

bool BnbReader::quantized(const std::string& weight) const {
  if (quant_state(weight)) return true;
  const auto* e = find(weight);
  return e && e->info->dtype == DType::i8 && scb(weight);
}

std::optional<FormatId> BnbReader::format(const std::string& weight) const {
  for (const bnb::QuantType type : bnb::kQuantTypes)
    if (find(weight + bnb::quant_state_key(bnb::quant_type_name(type)))) return bnb::format_id(type);
  if (quantized(weight)) return FormatId::int8;
  return std::nullopt;
}

Shape BnbReader::logical_shape(const std::string& weight) const {
  if (quant_state(weight)) return state_4bit(weight).shape;
  return find(weight)->info->shape;
}

DType BnbReader::recorded_dtype(const std::string& weight) const {
  return quant_state(weight) ? state_4bit(weight).dtype : int8_dtype_;
}

bnb::QuantStateJson BnbReader::quant_state_json(const std::string& weight) const {
  const auto* state = quant_state(weight);
  const ErrorContext where{.file = state->shard->label(), .tensor = state->info->name};
  const TensorView v = view(*state);
  if (v.dtype != DType::u8) throw Error("quant state is not a uint8 tensor", where);
  // e.g. {"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [4096, 4096]}
  return bnb::parse_quant_state({reinterpret_cast<const char*>(v.bytes.data()), v.bytes.size()}, where);
}

bnb::Bnb4bitState BnbReader::state_4bit(const std::string& weight) const {
  const auto json = quant_state_json(weight);
  bnb::Bnb4bitState s;
  s.quant_type = *bnb::quant_type_of(*parse_format_id(json.quant_type));  // parse_quant_state accepts nf4 and fp4 only
  s.blocksize = json.blocksize;
  s.dtype = json.dtype;
  s.shape = json.shape;
  s.code = floats<16>(weight + std::string(bnb::kQuantMap));
  const auto* absmax = require(weight + std::string(bnb::kAbsmax));
  const TensorView a = view(*absmax);
  if (json.nested_offset) {
    bnb::NestedAbsmax nested;
    if (a.dtype != DType::u8) throw Error("absmax of a double-quantized weight must be uint8 codes", {.file = absmax->shard->label(), .tensor = absmax->info->name});
    nested.codes.assign(reinterpret_cast<const uint8_t*>(a.bytes.data()), reinterpret_cast<const uint8_t*>(a.bytes.data()) + a.bytes.size());
    nested.nested_absmax = float_vector(weight + std::string(bnb::kNestedAbsmax));
    nested.code = floats<256>(weight + std::string(bnb::kNestedQuantMap));
    nested.offset = *json.nested_offset;
    nested.blocksize = json.nested_blocksize;
    s.nested = std::move(nested);
  } else {
    s.absmax = float_vector(weight + std::string(bnb::kAbsmax));
  }
  return s;
}

std::optional<bnb::Packed4bitView> BnbReader::packed_4bit(const std::string& weight) const {
  if (!quant_state(weight)) return std::nullopt;
  const auto json = quant_state_json(weight);
  if (json.nested_offset && (json.nested_blocksize != bnb::kNestedBlocksize ||
                             floats<256>(weight + std::string(bnb::kNestedQuantMap)) != bnb::dynamic_map_signed()))
    return std::nullopt;
  const auto& e = *find(weight);
  const int64_t elements = shape_elements(json.shape), blocks = (elements + json.blocksize - 1) / json.blocksize;
  bnb::Packed4bitView v{.format = *parse_format_id(json.quant_type), .blocksize = json.blocksize, .dtype = json.dtype};
  // Each part: its tensor's bytes when they are of the dtype and count the quant state implies.
  auto part = [&](std::string_view suffix, DType dtype, int64_t count) {
    const std::string name = weight + std::string(suffix);
    const auto* entry = suffix.empty() ? &e : require(name);
    const TensorView t = view(*entry);
    if (t.dtype != dtype || t.bytes.size() != size_t(count) * dtype_size(dtype))
      throw Error(fmt::format("{} {} bytes", dtype_name(t.dtype), t.bytes.size()),
                  {.file = entry->shard->label(), .tensor = name,
                   .expected = fmt::format("{} {} bytes for the quant state's shape {} in blocks of {}", dtype_name(dtype),
                                           size_t(count) * dtype_size(dtype), shape_to_string(json.shape), json.blocksize)});
    return t.bytes;
  };
  v.packed = part("", DType::u8, (elements + 1) / 2);
  if (json.nested_offset) {
    v.absmax = part(bnb::kAbsmax, DType::u8, blocks);
    v.nested_absmax = part(bnb::kNestedAbsmax, DType::f32, (blocks + bnb::kNestedBlocksize - 1) / bnb::kNestedBlocksize);
    v.nested_offset = *json.nested_offset;
  } else {
    v.absmax = part(bnb::kAbsmax, DType::f32, blocks);
  }
  return v;
}

const Checkpoint::Entry* BnbReader::require(const std::string& name) const {
  const auto* e = find(name);
  if (!e) throw Error("bitsandbytes companion tensor is missing", {.file = ckpt_.path().string(), .tensor = name});
  return e;
}

std::vector<float> BnbReader::float_vector(const std::string& name) const {
  const auto* e = require(name);
  const TensorView v = view(*e);
  if (v.dtype != DType::f32) throw Error("expected a float32 tensor", {.file = e->shard->label(), .tensor = name});
  std::vector<float> out(v.bytes.size() / 4);
  std::memcpy(out.data(), v.bytes.data(), v.bytes.size());
  return out;
}

template <size_t N>
std::array<float, N> BnbReader::floats(const std::string& name) const {
  const auto values = float_vector(name);
  if (values.size() != N)
    throw Error(fmt::format("{} values", values.size()), {.file = ckpt_.path().string(), .tensor = name, .expected = fmt::format("{}", N)});
  std::array<float, N> out{};
  std::copy(values.begin(), values.end(), out.begin());
  return out;
}

Tensor BnbReader::dequantize(const std::string& weight, std::optional<DType> to, ValueGuard& guard) const {
  const auto& e = *find(weight);
  const TensorView v = view(e);
  const ValueSite site{e.shard->label(), weight, v.shape.size() >= 2 ? v.shape.back() : 0};
  try {
    if (quant_state(weight)) {
      const auto state = state_4bit(weight);
      check_4bit_state(state, to.value_or(state.dtype), site, guard);
      const std::span<const uint8_t> packed(reinterpret_cast<const uint8_t*>(v.bytes.data()), v.bytes.size());
      return bnb::dequantize_4bit(packed, state, to.value_or(state.dtype), weight);
    }
    if (v.shape.size() != 2) throw Error("int8 weight is not 2-D", {.file = e.shard->label(), .tensor = weight});
    bnb::Int8RowwiseQuantized q{.rows = v.shape[0], .cols = v.shape[1]};
    q.cb.resize(v.bytes.size());
    std::memcpy(q.cb.data(), v.bytes.data(), v.bytes.size());
    const auto* scb_entry = scb(weight);
    const TensorView scb_view = view(*scb_entry);
    if (scb_view.dtype != DType::f32 || scb_view.elements() != q.rows)
      throw Error("SCB must hold one float32 per row", {.file = e.shard->label(), .tensor = scb_entry->info->name});
    q.scb.resize(size_t(q.rows));
    std::memcpy(q.scb.data(), scb_view.bytes.data(), scb_view.bytes.size());
    // SCB is the largest |w| of a float16 row: beyond f16 it was never written by bitsandbytes.
    guard.statistics({e.shard->label(), scb_entry->info->name, 0}, "SCB", q.scb, ValueRange::f16);
    Tensor f32 = bnb::dequantize_int8_rowwise(q);
    const DType out = to.value_or(int8_dtype_);
    if (out == DType::f32) return f32;
    return convert_checked(f32.view(), out, site, guard);
  } catch (const Error& error) {  // the codecs name the tensor; the user needs the file too
    if (!error.context().file.empty()) throw;
    ErrorContext c = error.context();
    c.file = e.shard->label();
    throw Error(error.problem(), c);
  }
}

}  // namespace lowbit
