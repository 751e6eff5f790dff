// JSON side files (config.json, tokenizer.json, plan.json, quant states ...): parsed with a nesting
// limit, and read through JsonField, whose errors name the file, the key path and the expected type
// ("config.json: key 'num_attention_heads': is a string (expected an integer)"), never
// nlohmann's bare "[json.exception.type_error.302]".
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/core/error.h"

namespace lowbit {

// Real side files nest a few levels; a hostile one nested 100,000 deep would overflow the stack of
// anything recursive (dump(), comparison), so parsing stops here.
inline constexpr int kMaxJsonDepth = 64;

// Parses a file or a text; throws lowbit::Error naming `label` when it cannot be read, is not JSON,
// or nests deeper than kMaxJsonDepth.
nlohmann::json read_json_file(const std::filesystem::path& path);
nlohmann::json parse_json_text(std::string_view text, const std::string& label);

// A value inside a parsed JSON document, with the file it came from and its key path. The document
// must outlive it. Accessors check the type (and range) and throw lowbit::Error otherwise.
class JsonField {
 public:
  JsonField(const nlohmann::json& value, std::string file, std::string path = {})
      : value_(&value), file_(std::move(file)), path_(std::move(path)) {}

  const nlohmann::json& json() const { return *value_; }
  const std::string& file() const { return file_; }
  const std::string& path() const { return path_; }

  // Members of an object. find() is nullopt for a missing key or a null value (how Hugging Face
  // writes "not set"); operator[] throws for both.
  bool has(std::string_view key) const { return find(key).has_value(); }
  std::optional<JsonField> find(std::string_view key) const;
  JsonField operator[](std::string_view key) const;
  std::vector<std::pair<std::string, JsonField>> members() const;  // throws unless an object
  std::vector<JsonField> elements() const;                         // throws unless an array

  std::string string() const;
  bool boolean() const;
  int64_t integer(int64_t min = std::numeric_limits<int64_t>::min(), int64_t max = std::numeric_limits<int64_t>::max()) const;
  double number() const;  // any finite JSON number (integers too)

  // An optional member with a fallback: missing or null gives the fallback; a wrong type throws.
  std::string string_or(std::string_view key, std::string fallback) const;
  bool boolean_or(std::string_view key, bool fallback) const;
  int64_t integer_or(std::string_view key, int64_t fallback, int64_t min = std::numeric_limits<int64_t>::min(),
                     int64_t max = std::numeric_limits<int64_t>::max()) const;
  double number_or(std::string_view key, double fallback) const;

  // An error about this value: "<file>: key '<path>': <problem> (expected <expected>)".
  Error error(std::string problem, std::string expected = {}) const;

 private:
  void require_object() const;
  [[noreturn]] void wrong_type(std::string_view expected) const;

  const nlohmann::json* value_;
  std::string file_;
  std::string path_;
};

}  // namespace lowbit
