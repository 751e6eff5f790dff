// GGUF writer and reader round trips: every value type, nested arrays, alignment, the writer's rules,
// and that nothing reaches the destination unless finish() succeeds.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <limits>

#include "io/gguf_test_util.h"
#include "lowbit/io/gguf.h"
#include "support/paths.h"

namespace lowbit::gguf {
namespace {

using test::TempDir;

// Exact equality, floats compared bit for bit (so -0.0 and NaN payloads must survive).
bool same_value(const Value& a, const Value& b) {
  if (a.type() != b.type()) return false;
  if (const Array* x = a.get_if<Array>()) {
    const Array& y = *b.get_if<Array>();
    if (x->element_type != y.element_type || x->items.size() != y.items.size()) return false;
    for (size_t i = 0; i < x->items.size(); ++i)
      if (!same_value(x->items[i], y.items[i])) return false;
    return true;
  }
  if (const float* x = a.get_if<float>()) return std::memcmp(x, b.get_if<float>(), sizeof(float)) == 0;
  if (const double* x = a.get_if<double>()) return std::memcmp(x, b.get_if<double>(), sizeof(double)) == 0;
  return std::visit(
      [&](const auto& x) {
        using V = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<V, Array>) return false;  // handled above
        else return x == *b.get_if<V>();
      },
      a.data);
}

Value array_of(ValueType element_type, std::vector<Value> items) { return Value{Array{element_type, std::move(items)}}; }

std::vector<std::byte> bytes_of(std::string_view text) {
  std::vector<std::byte> out(text.size());
  std::memcpy(out.data(), text.data(), text.size());
  return out;
}

std::vector<KeyValue> every_value_type() {
  using std::numeric_limits;
  const std::string with_nul("a\0b", 3);
  // Nests arrays `depth` deep, the innermost holding one u8.
  auto nested = [](int depth) {
    Value v = array_of(ValueType::u8, {Value{uint8_t(7)}});
    for (int i = 1; i < depth; ++i) v = array_of(ValueType::array, {std::move(v)});
    return v;
  };
  return {
      {"t.u8", Value{numeric_limits<uint8_t>::max()}},
      {"t.i8", Value{numeric_limits<int8_t>::min()}},
      {"t.u16", Value{numeric_limits<uint16_t>::max()}},
      {"t.i16", Value{numeric_limits<int16_t>::min()}},
      {"t.u32", Value{numeric_limits<uint32_t>::max()}},
      {"t.i32", Value{numeric_limits<int32_t>::min()}},
      {"t.f32", Value{-0.0f}},
      {"t.f32.nan", Value{std::bit_cast<float>(0x7fc00123u)}},
      {"t.bool.true", Value{true}},
      {"t.bool.false", Value{false}},
      {"t.str", Value{std::string("h\xc3\xa9llo \xe2\x96\x81 \xe6\x97\xa5\xe6\x9c\xac")}},
      {"t.str.nul", Value{with_nul}},
      {"t.str.empty", Value{std::string()}},
      {"t.u64", Value{numeric_limits<uint64_t>::max()}},
      {"t.i64", Value{numeric_limits<int64_t>::min()}},
      {"t.f64", Value{numeric_limits<double>::infinity()}},
      {"t.arr.i32", array_of(ValueType::i32, {Value{int32_t(-1)}, Value{int32_t(2)}})},
      {"t.arr.f32", array_of(ValueType::f32, {Value{1.5f}})},
      {"t.arr.bool", array_of(ValueType::boolean, {Value{true}, Value{false}})},
      {"t.arr.str", make_string_array({"<unk>", with_nul, "", "\xe2\x96\x81the"})},
      {"t.arr.empty.u8", array_of(ValueType::u8, {})},
      {"t.arr.empty.str", array_of(ValueType::string, {})},
      {"t.arr.empty.arr", array_of(ValueType::array, {})},
      {"t.arr.nested", array_of(ValueType::array, {array_of(ValueType::u16, {Value{uint16_t(1)}, Value{uint16_t(2)}}),
                                                   array_of(ValueType::string, {}),
                                                   array_of(ValueType::string, {Value{std::string("x")}})})},
      {"t.arr.depth8", nested(8)},
  };
}

TEST(GgufRoundTrip, EveryValueTypeSurvives) {
  TempDir dir;
  const auto expected = every_value_type();
  {
    Writer writer(dir / "values.gguf");
    for (const auto& kv : expected) writer.set(kv.key, kv.value);
    writer.finish();
  }
  const File file(dir / "values.gguf");
  EXPECT_EQ(file.version(), 3u);
  EXPECT_EQ(file.alignment(), kDefaultAlignment);
  EXPECT_TRUE(file.tensors().empty());
  ASSERT_EQ(file.metadata().size(), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(file.metadata()[i].key, expected[i].key);
    EXPECT_TRUE(same_value(file.metadata()[i].value, expected[i].value)) << expected[i].key;
  }
  EXPECT_EQ(file.find("t.str.nul")->get_if<std::string>()->size(), 3u);
  EXPECT_EQ(file.find("absent"), nullptr);
  EXPECT_FALSE(file.metadata().empty());
  // ggml pads the header to the alignment even with no tensors; the file ends there.
  EXPECT_EQ(file.data_offset() % kDefaultAlignment, 0u);
  EXPECT_EQ(std::filesystem::file_size(dir / "values.gguf"), file.data_offset());
}

// Writes three tensors whose sizes are not multiples of the alignment and checks layout and padding.
void check_tensor_layout(std::optional<uint32_t> alignment) {
  TempDir dir;
  const auto a = bytes_of("0123456789ab");                                   // F32 [3]: 12 bytes
  const auto b = std::vector<std::byte>(72, std::byte{0x5a});                 // Q4_0 [64, 2]: 4 blocks of 18
  const auto c = bytes_of("abcdefghij");                                     // F16 [5]: 10 bytes
  {
    Writer writer(dir / "t.gguf");
    writer.set("general.architecture", Value{std::string("test")});
    writer.add_tensor("a", GgmlType::F32, {3});
    writer.add_tensor("b", GgmlType::Q4_0, {64, 2});
    writer.add_tensor("c", GgmlType::F16, {5});
    if (alignment) writer.set("general.alignment", Value{*alignment});  // after the tensors: still honoured
    writer.write_data("a", a);
    writer.write_data("b", b);
    writer.write_data("c", c);
    writer.finish();
  }
  const uint32_t align = alignment.value_or(kDefaultAlignment);
  const File file(dir / "t.gguf");
  EXPECT_EQ(file.alignment(), align);
  EXPECT_EQ(file.find("general.alignment") != nullptr, alignment.has_value());
  EXPECT_EQ(file.data_offset() % align, 0u);
  ASSERT_EQ(file.tensors().size(), 3u);
  const auto& ts = file.tensors();
  EXPECT_EQ(ts[0].offset, 0u);
  auto padded = [&](uint64_t size) { return (size + align - 1) / align * align; };
  EXPECT_EQ(ts[1].offset, padded(12));
  EXPECT_EQ(ts[2].offset, padded(12) + padded(72));
  EXPECT_EQ(ts[1].type, GgmlType::Q4_0);
  EXPECT_EQ(ts[1].ne, (Shape{64, 2}));
  EXPECT_EQ(ts[1].size, 72u);
  EXPECT_TRUE(std::ranges::equal(file.data(ts[0]), a));
  EXPECT_TRUE(std::ranges::equal(file.data(ts[1]), b));
  EXPECT_TRUE(std::ranges::equal(file.data(*file.find_tensor("c")), c));
  // Padding after every tensor, the last included, is zeros.
  const uint64_t end = file.data_offset() + ts[2].offset + padded(10);
  EXPECT_EQ(std::filesystem::file_size(dir / "t.gguf"), end);
  std::ifstream in(dir / "t.gguf", std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), {});
  for (uint64_t i = file.data_offset() + 12; i < file.data_offset() + padded(12); ++i) EXPECT_EQ(raw[i], 0) << i;
  for (uint64_t i = file.data_offset() + ts[2].offset + 10; i < end; ++i) EXPECT_EQ(raw[i], 0) << i;
}

TEST(GgufRoundTrip, TensorsAtDefaultAlignment32) { check_tensor_layout(std::nullopt); }
TEST(GgufRoundTrip, TensorsAtAlignment64) { check_tensor_layout(64); }
TEST(GgufRoundTrip, TensorsAtAlignment8) { check_tensor_layout(8); }

TEST(GgufWriter, ReplacingAKeyMovesItToTheEnd) {
  TempDir dir;
  Writer writer(dir / "k.gguf");
  writer.set("a", Value{uint32_t(1)});
  writer.set("b", Value{uint32_t(2)});
  writer.set("a", Value{std::string("again")});
  writer.finish();
  const File file(dir / "k.gguf");
  ASSERT_EQ(file.metadata().size(), 2u);
  EXPECT_EQ(file.metadata()[0].key, "b");
  EXPECT_EQ(file.metadata()[1].key, "a");
  EXPECT_EQ(*file.metadata()[1].value.get_if<std::string>(), "again");
}

TEST(GgufWriter, RejectsWhatTheReaderWouldReject) {
  TempDir dir;
  Writer writer(dir / "bad.gguf");
  EXPECT_THROW(writer.set("", Value{uint8_t(1)}), Error);
  EXPECT_THROW(writer.set("general.alignment", Value{uint64_t(32)}), Error);
  EXPECT_THROW(writer.set("general.alignment", Value{uint32_t(48)}), Error);
  EXPECT_THROW(writer.set("general.alignment", Value{uint32_t(0)}), Error);
  EXPECT_THROW(writer.set("mixed", array_of(ValueType::u8, {Value{int8_t(1)}})), Error);
  Value too_deep = array_of(ValueType::u8, {});
  for (int i = 0; i < 8; ++i) too_deep = array_of(ValueType::array, {too_deep});
  EXPECT_THROW(writer.set("deep", too_deep), Error);
  EXPECT_THROW(writer.add_tensor("", GgmlType::F32, {1}), Error);
  EXPECT_THROW(writer.add_tensor(std::string(257, 'n'), GgmlType::F32, {1}), Error);
  EXPECT_THROW(writer.add_tensor("q", GgmlType::Q4_K, {128}), Error);  // not whole 256-blocks
  EXPECT_THROW(writer.add_tensor("neg", GgmlType::F32, {-1}), Error);
  EXPECT_THROW(writer.add_tensor("dims", GgmlType::F32, {1, 1, 1, 1, 1}), Error);
  EXPECT_THROW(writer.add_tensor("big", GgmlType::F32, {int64_t(1) << 62, 4}), Error);
  EXPECT_THROW(writer.add_tensor("type", GgmlType(4), {32}), Error);  // id 4 was removed from ggml
  writer.add_tensor("x", GgmlType::F32, {2});
  EXPECT_THROW(writer.add_tensor("x", GgmlType::F32, {2}), Error);
  writer.add_tensor("y", GgmlType::F32, {1});
  const auto eight = std::vector<std::byte>(8);
  EXPECT_THROW(writer.write_data("y", std::vector<std::byte>(4)), Error);  // out of order
  EXPECT_THROW(writer.write_data("x", std::vector<std::byte>(7)), Error);  // wrong size
  writer.write_data("x", eight);
  EXPECT_THROW(writer.set("late", Value{uint8_t(1)}), Error);
  EXPECT_THROW(writer.add_tensor("late", GgmlType::F32, {1}), Error);
  try {
    writer.finish();
    ADD_FAILURE() << "finish() accepted an unwritten tensor";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("never written"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("'y'"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "bad.gguf"));
  writer.write_data("y", std::vector<std::byte>(4));
  EXPECT_THROW(writer.write_data("z", std::vector<std::byte>(4)), Error);  // nothing left to write
  writer.finish();
  EXPECT_THROW(writer.finish(), Error);
  EXPECT_EQ(File(dir / "bad.gguf").tensors().size(), 2u);
}

// Nothing but the destination may be left in the directory: no file, no temporary.
size_t entries_in(const std::filesystem::path& dir) {
  return size_t(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()));
}

TEST(GgufWriter, UnfinishedWriterLeavesNoFile) {
  TempDir dir;
  {
    Writer writer(dir / "partial.gguf");
    writer.set("k", Value{uint32_t(1)});
    writer.add_tensor("x", GgmlType::F32, {1});
    writer.add_tensor("y", GgmlType::F32, {1});
    writer.write_data("x", std::vector<std::byte>(4));
  }
  EXPECT_EQ(entries_in(dir.path()), 0u);
  {
    Writer writer(dir / "failed.gguf");
    writer.add_tensor("x", GgmlType::F32, {1});
    EXPECT_THROW(writer.finish(), Error);
  }
  EXPECT_EQ(entries_in(dir.path()), 0u);
}

TEST(GgufWriter, FailedWriteKeepsTheOldDestination) {
  TempDir dir;
  { std::ofstream(dir / "keep.gguf") << "old"; }
  {
    Writer writer(dir / "keep.gguf");
    writer.add_tensor("x", GgmlType::F32, {1});
  }
  EXPECT_EQ(std::filesystem::file_size(dir / "keep.gguf"), 3u);
  EXPECT_EQ(entries_in(dir.path()), 1u);
}

TEST(GgufValue, HelpersBehave) {
  EXPECT_EQ(Value{uint8_t(200)}.as_int(), 200);
  EXPECT_EQ(Value{int16_t(-5)}.as_int(), -5);
  EXPECT_EQ(Value{uint64_t(1) << 63}.as_int(), std::nullopt);
  EXPECT_EQ(Value{true}.as_int(), std::nullopt);
  EXPECT_EQ(Value{1.0f}.as_int(), std::nullopt);
  EXPECT_EQ(value_type_name(ValueType::string), "str");
  EXPECT_EQ(value_type_name(ValueType::f64), "f64");
  const Value tokens = make_string_array({"a", "b"});
  ASSERT_NE(tokens.get_if<Array>(), nullptr);
  EXPECT_EQ(tokens.get_if<Array>()->element_type, ValueType::string);
  EXPECT_EQ(tokens.get_if<Array>()->items.size(), 2u);
  EXPECT_EQ(tensor_bytes(GgmlType::Q4_K, {512, 3}), 2u * 3u * 144u);
  EXPECT_EQ(tensor_bytes(GgmlType::F32, {0, 7}), 0u);
  EXPECT_THROW(tensor_bytes(GgmlType::Q8_0, {33}), Error);
  EXPECT_THROW(tensor_bytes(GgmlType::F32, {}), Error);
}

}  // namespace
}  // namespace lowbit::gguf
