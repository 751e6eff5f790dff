// GGUF interoperability with llama.cpp's own Python package, gguf-py, as an independent checker:
// what lowbit writes, gguf-py reads back the same; what gguf-py writes, lowbit reads the same.
// scripts/test.sh installs gguf-py in a virtual environment and sets LOWBIT_PYTHON to it.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include "lowbit/io/gguf.h"
#include "support/paths.h"
#include "support/python.h"

namespace lowbit {
namespace {


template <class T>
gguf::Value v(T x) { return gguf::Value{x}; }

TEST(GgufInterop, GgufPyReadsWhatLowbitWrites) {
  REQUIRE_GGUF_PY();
  test::TempDir dir;
  const auto path = dir / "lowbit.gguf";
  std::mt19937 rng(7);
  std::vector<std::byte> q8(2 * 34), q4k(3 * 144);
  for (auto& b : q8) b = std::byte(rng());
  for (auto& b : q4k) b = std::byte(rng());
  std::vector<float> f32(4 * 16);
  std::iota(f32.begin(), f32.end(), 0.0f);
  {
    gguf::Writer w(path);
    w.set("general.architecture", v(std::string("llama")));
    w.set("t.u8", v(uint8_t(200)));
    w.set("t.i8", v(int8_t(-100)));
    w.set("t.u16", v(uint16_t(60000)));
    w.set("t.i16", v(int16_t(-30000)));
    w.set("t.u32", v(uint32_t(4000000000u)));
    w.set("t.i32", v(int32_t(-2000000000)));
    w.set("t.f32", v(1.5f));
    w.set("t.bool", v(true));
    w.set("t.string", v(std::string("héllo")));
    w.set("t.u64", v(uint64_t(1) << 60));
    w.set("t.i64", v(-(int64_t(1) << 60)));
    w.set("t.f64", v(0.25));
    w.set("t.strings", gguf::make_string_array({"a", "", "ü"}));
    w.set("t.i32s", gguf::Value{gguf::Array{gguf::ValueType::i32, {v(int32_t(1)), v(int32_t(-2)), v(int32_t(3))}}});
    w.add_tensor("a.weight", GgmlType::F32, {16, 4});
    w.add_tensor("b.weight", GgmlType::Q8_0, {64});
    w.add_tensor("c.weight", GgmlType::Q4_K, {256, 3});
    w.write_data("a.weight", std::as_bytes(std::span(f32)));
    w.write_data("b.weight", q8);
    w.write_data("c.weight", q4k);
    w.finish();
  }
  int status = 0;
  const auto out = test::run_command(test::python() + " " + test::interop_script("gguf_py_dump.py") + " " + path.string(), &status);
  ASSERT_EQ(status, 0) << out;
  const auto j = nlohmann::json::parse(out);
  const auto& kv = j["kv"];
  EXPECT_EQ(kv["general.architecture"]["value"], "llama");
  EXPECT_EQ(kv["t.u8"]["types"][0], "UINT8");
  EXPECT_EQ(kv["t.u8"]["value"], 200);
  EXPECT_EQ(kv["t.i8"]["value"], -100);
  EXPECT_EQ(kv["t.u16"]["value"], 60000);
  EXPECT_EQ(kv["t.i16"]["value"], -30000);
  EXPECT_EQ(kv["t.u32"]["types"][0], "UINT32");
  EXPECT_EQ(kv["t.u32"]["value"], 4000000000u);
  EXPECT_EQ(kv["t.i32"]["value"], -2000000000);
  EXPECT_EQ(kv["t.f32"]["value"], 1.5);
  EXPECT_EQ(kv["t.bool"]["value"], true);
  EXPECT_EQ(kv["t.string"]["value"], "héllo");
  EXPECT_EQ(kv["t.u64"]["value"], uint64_t(1) << 60);
  EXPECT_EQ(kv["t.i64"]["value"], -(int64_t(1) << 60));
  EXPECT_EQ(kv["t.f64"]["value"], 0.25);
  EXPECT_EQ(kv["t.strings"]["value"], nlohmann::json::array({"a", "", "ü"}));
  EXPECT_EQ(kv["t.i32s"]["types"], nlohmann::json::array({"ARRAY", "INT32"}));
  EXPECT_EQ(kv["t.i32s"]["value"], nlohmann::json::array({1, -2, 3}));

  const auto& t = j["tensors"];
  ASSERT_EQ(t.size(), 3u);
  EXPECT_EQ(t[0]["name"], "a.weight");
  EXPECT_EQ(t[0]["type"], "F32");
  EXPECT_EQ(t[0]["ne"], nlohmann::json::array({16, 4}));
  EXPECT_EQ(t[1]["type"], "Q8_0");
  EXPECT_EQ(t[1]["bytes"], 68);
  EXPECT_EQ(t[2]["type"], "Q4_K");
  EXPECT_EQ(t[2]["ne"], nlohmann::json::array({256, 3}));
  auto byte_sum = [](std::span<const std::byte> b) {
    uint64_t s = 0;
    for (auto x : b) s += uint8_t(x);
    return s;
  };
  EXPECT_EQ(t[1]["data_sum"], byte_sum(q8));
  EXPECT_EQ(t[2]["data_sum"], byte_sum(q4k));
  EXPECT_EQ(t[0]["data_sum"], byte_sum(std::as_bytes(std::span(f32))));
}

TEST(GgufInterop, LowbitReadsWhatGgufPyWrites) {
  REQUIRE_GGUF_PY();
  test::TempDir dir;
  const auto path = dir / "py.gguf";
  int status = 0;
  const auto out = test::run_command(test::python() + " " + test::interop_script("gguf_py_write.py") + " " + path.string() + " 2>&1", &status);
  ASSERT_EQ(status, 0) << out;
  const gguf::File f(path);
  EXPECT_EQ(*f.find("general.architecture")->get_if<std::string>(), "llama");
  EXPECT_EQ(*f.find("llama.block_count")->get_if<uint32_t>(), 2u);
  EXPECT_EQ(*f.find("general.name")->get_if<std::string>(), "gguf-py fixture ✓");
  EXPECT_EQ(*f.find("test.flag")->get_if<bool>(), true);
  EXPECT_EQ(*f.find("test.i64")->get_if<int64_t>(), -5);
  EXPECT_EQ(*f.find("test.f64")->get_if<double>(), 0.1);
  const auto* strings = f.find("test.strings")->get_if<gguf::Array>();
  ASSERT_NE(strings, nullptr);
  ASSERT_EQ(strings->items.size(), 3u);
  EXPECT_EQ(*strings->items[2].get_if<std::string>(), "ü");
  ASSERT_EQ(f.tensors().size(), 3u);
  const auto* a = f.find_tensor("a.weight");
  EXPECT_EQ(a->type, GgmlType::F32);
  EXPECT_EQ(a->ne, (Shape{16, 4}));
  EXPECT_EQ(reinterpret_cast<const float*>(f.data(*a).data())[63], 63.0f);
  const auto* b = f.find_tensor("b.weight");
  EXPECT_EQ(b->type, GgmlType::F16);
  EXPECT_EQ(b->ne, (Shape{32, 3}));
  const auto* c = f.find_tensor("c.weight");
  EXPECT_EQ(c->type, GgmlType::Q8_0);
  EXPECT_EQ(c->ne, (Shape{32, 2}));  // gguf-py turns the raw [2, 34] bytes into 2 rows of 32 values
  EXPECT_EQ(uint8_t(f.data(*c)[67]), 67);
}

}  // namespace
}  // namespace lowbit
