#include "lowbit/io/json_file.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <sstream>

#include "lowbit/core/key_error.h"

namespace lowbit {
namespace {

using nlohmann::json;

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::object: return "an object";
    case json::value_t::array: return "an array";
    case json::value_t::string: return "a string";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::number_float: return "a fractional number";
    case json::value_t::number_integer:
    case json::value_t::number_unsigned: return "an integer";
    default: return "not a plain JSON value";
  }
}

}  // namespace

json parse_json_text(std::string_view text, const std::string& label) {
  auto limit_depth = [&](int depth, json::parse_event_t, json&) {
    if (depth > kMaxJsonDepth) throw Error(fmt::format("JSON nests deeper than {} levels", kMaxJsonDepth), {.file = label});
    return true;
  };
  try {
    return json::parse(text.begin(), text.end(), limit_depth);
  } catch (const json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = label});
  }
}

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open", {.file = path.string()});
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) throw Error("cannot read", {.file = path.string()});
  return parse_json_text(text.view(), path.string());
}

Error JsonField::error(std::string problem, std::string expected) const {
  return key_error(file_, path_.empty() ? "(top level)" : path_, problem, std::move(expected));
}

void JsonField::wrong_type(std::string_view expected) const { throw error("is " + type_name(*value_), std::string(expected)); }

void JsonField::require_object() const {
  if (!value_->is_object()) wrong_type("an object");
}

std::optional<JsonField> JsonField::find(std::string_view key) const {
  require_object();
  const auto it = value_->find(key);
  if (it == value_->end() || it->is_null()) return std::nullopt;
  return JsonField(*it, file_, path_.empty() ? std::string(key) : path_ + "." + std::string(key));
}

JsonField JsonField::operator[](std::string_view key) const {
  if (auto f = find(key)) return *f;
  throw key_error(file_, path_.empty() ? std::string(key) : path_ + "." + std::string(key), "is missing");
}

std::vector<std::pair<std::string, JsonField>> JsonField::members() const {
  require_object();
  std::vector<std::pair<std::string, JsonField>> out;
  out.reserve(value_->size());
  for (const auto& [key, value] : value_->items()) out.emplace_back(key, JsonField(value, file_, path_.empty() ? key : path_ + "." + key));
  return out;
}

std::vector<JsonField> JsonField::elements() const {
  if (!value_->is_array()) wrong_type("an array");
  std::vector<JsonField> out;
  out.reserve(value_->size());
  for (size_t i = 0; i < value_->size(); ++i) out.emplace_back((*value_)[i], file_, fmt::format("{}[{}]", path_, i));
  return out;
}

std::string JsonField::string() const {
  if (!value_->is_string()) wrong_type("a string");
  return value_->get<std::string>();
}

bool JsonField::boolean() const {
  if (!value_->is_boolean()) wrong_type("true or false");
  return value_->get<bool>();
}

int64_t JsonField::integer(int64_t min, int64_t max) const {
  const std::string range = fmt::format("an integer in [{}, {}]", min, max);
  if (!value_->is_number_integer()) wrong_type(range);
  // An unsigned value above INT64_MAX would wrap in get<int64_t>().
  if (value_->is_number_unsigned() && value_->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw error(fmt::format("{} is out of range", value_->get<uint64_t>()), range);
  const int64_t v = value_->get<int64_t>();
  if (v < min || v > max) throw error(fmt::format("{} is out of range", v), range);
  return v;
}

double JsonField::number() const {
  if (!value_->is_number()) wrong_type("a number");
  const double v = value_->get<double>();
  if (!std::isfinite(v)) throw error("is not finite", "a finite number");
  return v;
}

std::string JsonField::string_or(std::string_view key, std::string fallback) const {
  const auto f = find(key);
  return f ? f->string() : std::move(fallback);
}

bool JsonField::boolean_or(std::string_view key, bool fallback) const {
  const auto f = find(key);
  return f ? f->boolean() : fallback;
}

int64_t JsonField::integer_or(std::string_view key, int64_t fallback, int64_t min, int64_t max) const {
  const auto f = find(key);
  return f ? f->integer(min, max) : fallback;
}

double JsonField::number_or(std::string_view key, double fallback) const {
  const auto f = find(key);
  return f ? f->number() : fallback;
}

}  // namespace lowbit
