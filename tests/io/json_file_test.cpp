// JsonField: typed reads of side-file JSON whose errors name the file, the key path and what was
// expected, instead of nlohmann's bare "[json.exception.type_error.302] type must be number".
#include <gtest/gtest.h>

#include <fstream>
#include <functional>

#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"
#include "support/paths.h"

namespace lowbit {
namespace {

using nlohmann::json;

std::string error_of(const std::function<void()>& read) {
  try {
    read();
  } catch (const Error& e) {
    return e.what();
  }
  return {};
}

TEST(JsonField, TypedReadsNameFileKeyPathAndExpectedType) {
  const json doc = json::parse(R"({"a": {"b": [1, "two", 3.5, 18446744073709551615]}, "flag": true, "none": null})");
  const JsonField root(doc, "x/config.json");
  const auto items = root["a"]["b"].elements();
  EXPECT_EQ(items[0].integer(0, 10), 1);
  EXPECT_EQ(error_of([&] { items[1].integer(); }), "x/config.json: key 'a.b[1]': is a string (expected an integer in [-9223372036854775808, 9223372036854775807])");
  EXPECT_EQ(error_of([&] { items[0].integer(2, 10); }), "x/config.json: key 'a.b[0]': 1 is out of range (expected an integer in [2, 10])");
  EXPECT_NE(error_of([&] { items[2].integer(); }).find("is a fractional number"), std::string::npos);
  EXPECT_NE(error_of([&] { items[3].integer(); }).find("18446744073709551615 is out of range"), std::string::npos);  // no wrap to -1
  EXPECT_EQ(items[2].number(), 3.5);
  EXPECT_EQ(error_of([&] { root["a"]["c"]; }), "x/config.json: key 'a.c': is missing");
  EXPECT_EQ(error_of([&] { root["flag"].string(); }), "x/config.json: key 'flag': is a boolean (expected a string)");
  EXPECT_EQ(error_of([&] { root["a"]["b"]["c"]; }), "x/config.json: key 'a.b': is an array (expected an object)");
  // null is how Hugging Face writes "not set": a fallback applies, a required read says missing.
  EXPECT_FALSE(root.has("none"));
  EXPECT_EQ(root.integer_or("none", 7), 7);
  EXPECT_EQ(error_of([&] { root["none"]; }), "x/config.json: key 'none': is missing");
  EXPECT_TRUE(root.boolean_or("flag", false));
  EXPECT_NE(error_of([&] { root.string_or("flag", ""); }).find("key 'flag': is a boolean"), std::string::npos);
}

TEST(JsonField, FilesAreParsedWithANestingLimit) {
  test::TempDir dir;
  std::ofstream(dir / "deep.json") << std::string(100000, '[') << std::string(100000, ']');
  EXPECT_NE(error_of([&] { read_json_file(dir / "deep.json"); }).find("deep.json: JSON nests deeper than 64 levels"), std::string::npos);
  std::ofstream(dir / "bad.json") << "{\"a\": ";
  EXPECT_NE(error_of([&] { read_json_file(dir / "bad.json"); }).find("bad.json: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of([&] { read_json_file(dir / "missing.json"); }).find("missing.json: cannot open"), std::string::npos);
}

}  // namespace
}  // namespace lowbit
