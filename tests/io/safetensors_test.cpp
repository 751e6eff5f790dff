#include <gtest/gtest.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <numeric>

#include "lowbit/core/error.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/io/safetensors.h"
#include "support/paths.h"

namespace lowbit {
namespace {

// A safetensors image: 8-byte length, the header text as given, then `data_size` bytes of data.
std::vector<std::byte> make_image(const std::string& header, size_t data_size) {
  std::vector<std::byte> bytes(8 + header.size() + data_size, std::byte{0x5a});
  const uint64_t len = header.size();
  std::memcpy(bytes.data(), &len, 8);
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  return bytes;
}

// Expects parsing to fail with a message containing `needle`.
void expect_rejected(const std::vector<std::byte>& bytes, const std::string& needle) {
  try {
    safetensors::File::parse(bytes, "bad.safetensors");
    ADD_FAILURE() << "accepted a file that should fail with: " << needle;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_EQ(e.context().file, "bad.safetensors");
  }
}

TEST(Safetensors, RejectsEachMalformation) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(safetensors::File::parse(make_image(ok, 8), "ok"));

  expect_rejected(std::vector<std::byte>(5), "too short");
  auto huge = make_image(ok, 8);
  const uint64_t too_long = 1000;
  std::memcpy(huge.data(), &too_long, 8);
  expect_rejected(huge, "runs past the end of the file");
  expect_rejected(make_image(ok, 12), "belong to no tensor");                                 // trailing bytes
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "past the end");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "overlaps");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8), "gap");
  expect_rejected(make_image(R"({"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}})", 8), "unknown dtype");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8), "does not match");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                             R"("a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})", 16), "duplicate");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "end before begin");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "non-negative");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2]}})", 8), "missing field");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8), "unknown field");
  expect_rejected(make_image(R"({"__metadata__":{"k":1}})", 0), "not a string");
  expect_rejected(make_image(R"({"a":)", 0), "not valid JSON");
  expect_rejected(make_image(R"([1,2])", 0), "start with '{'");
  expect_rejected(make_image(R"({"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,8]}})", 8), "overflow");
  std::string deep = "{\"a\":" + std::string(100, '[') + std::string(100, ']') + "}";
  expect_rejected(make_image(deep, 0), "nests deeper");
}

TEST(Safetensors, WriterRoundTripsTensorsAndMetadata) {
  test::TempDir dir;
  std::vector<float> a(6);
  std::iota(a.begin(), a.end(), 1.0f);
  std::vector<uint16_t> b{1, 2, 3};
  std::vector<uint8_t> empty;
  const auto path = dir / "t.safetensors";
  safetensors::Writer::write_file(path,
                                  {{"b", TensorView::make(DType::bf16, {3}, std::as_bytes(std::span(b)))},
                                   {"a", TensorView::make(DType::f32, {2, 3}, std::as_bytes(std::span(a)))},
                                   {"e", TensorView::make(DType::u8, {0, 4}, std::as_bytes(std::span(empty)))}},
                                  {{"format", "pt"}});
  const safetensors::File f(path);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.tensors()[0].name, "b");  // data order = write order
  EXPECT_EQ(f.data_offset() % 8, 0u);
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const auto va = f.view("a");
  EXPECT_EQ(va.dtype, DType::f32);
  EXPECT_EQ(va.shape, (Shape{2, 3}));
  EXPECT_EQ(std::vector<float>(va.as<float>().begin(), va.as<float>().end()), a);
  EXPECT_EQ(f.view("e").shape, (Shape{0, 4}));
  EXPECT_EQ(f.data_offset() % 8, 0u);
  EXPECT_THROW(f.view("missing"), Error);
}

TEST(Safetensors, WriterStreamsAndLeavesNothingOnFailure) {
  test::TempDir dir;
  const auto path = dir / "s.safetensors";
  std::vector<float> x(4, 1.0f);
  const auto four = TensorView::make(DType::f32, {4}, std::as_bytes(std::span(x)));
  {
    safetensors::Writer w(path, {"first", "second"});
    EXPECT_THROW(w.write("third", four), Error);  // not announced
    w.write("second", four);                      // any order
    EXPECT_THROW(w.write("second", four), Error);  // twice
    EXPECT_THROW(w.write("first", TensorView{DType::f32, {5}, four.bytes}), Error);  // shape does not match bytes
    EXPECT_THROW(w.finish(), Error);               // "first" never written
  }
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);
  EXPECT_THROW(safetensors::Writer(path, {"dup", "dup"}), Error);

  // A long name and a wide shape still fit the reserved header.
  const std::string long_name(300, 'n');
  std::vector<uint8_t> none;
  safetensors::Writer w(path, {long_name, "first"}, {{"k", std::string(1000, 'v')}});
  w.write(long_name, TensorView::make(DType::u8, {0, 1234567890123, 1, 9}, std::as_bytes(std::span(none))));
  w.write("first", four);
  w.finish();
  const safetensors::File f(path);
  EXPECT_EQ(f.view("first").as<float>()[2], 1.0f);
  EXPECT_EQ(f.view(long_name).shape, (Shape{0, 1234567890123, 1, 9}));
  EXPECT_EQ(f.metadata().at("k").size(), 1000u);
}

// A MoE checkpoint holds tens of thousands of tensors: the writer must stay linear in their number
// (it was quadratic: 20,000 tensors took 28 s). What is checked is the file, tensor by tensor.
TEST(Safetensors, WriterHandlesTwentyThousandTensors) {
  test::TempDir dir;
  const auto path = dir / "many.safetensors";
  constexpr int kTensors = 20000;
  std::vector<std::string> names;
  for (int i = 0; i < kTensors; ++i) names.push_back("model.layers." + std::to_string(i / 500) + ".mlp.experts." + std::to_string(i) + ".w");
  std::vector<uint16_t> values(kTensors);
  std::iota(values.begin(), values.end(), uint16_t(0));
  {
    safetensors::Writer w(path, names);
    for (int i = kTensors - 1; i >= 0; --i)  // any order
      w.write(names[size_t(i)], TensorView::make(DType::bf16, {1}, std::as_bytes(std::span(&values[size_t(i)], 1))));
    w.finish();
  }
  const safetensors::File f(path);
  ASSERT_EQ(f.tensors().size(), size_t(kTensors));
  for (int i = 0; i < kTensors; ++i) {
    const auto view = f.view(names[size_t(i)]);
    ASSERT_EQ(view.shape, Shape{1}) << names[size_t(i)];
    ASSERT_EQ(view.as<uint16_t>()[0], values[size_t(i)]) << names[size_t(i)];
  }
  EXPECT_EQ(f.tensors().front().name, names.back());  // data order = write order
}

// Every file of the bitsandbytes golden set parses, with the tensors and metadata its manifest lists.
TEST(Safetensors, ParsesEveryBnbGoldenFile) {
  std::ifstream in(test::golden_bnb_dir() / "manifest.json");
  ASSERT_TRUE(in) << "missing " << test::golden_bnb_dir();
  const auto manifest = nlohmann::json::parse(in);
  int files = 0;
  for (const auto& c : manifest["cases"]) {
    const safetensors::File f(test::golden_bnb_dir() / c["file"].get<std::string>());
    ASSERT_EQ(f.tensors().size(), c["tensors"].size()) << c["file"];
    for (const auto& [name, spec] : c["tensors"].items()) {
      const auto* t = f.find(name);
      ASSERT_NE(t, nullptr) << c["file"] << " " << name;
      EXPECT_EQ(t->dtype, dtype_from_name(spec[0].get<std::string>())) << name;
      EXPECT_EQ(t->shape, spec[1].get<Shape>()) << name;
    }
    EXPECT_EQ(f.metadata().at("format"), c["format"]);
    if (c.contains("dtype")) {
      EXPECT_EQ(f.metadata().at("dtype"), c["dtype"]);
    }
    ++files;
  }
  EXPECT_EQ(files, 159);
  const safetensors::File tables(test::golden_bnb_dir() / "tables.safetensors");
  EXPECT_EQ(tables.view("nf4_thresholds").shape, Shape{15});
  const safetensors::File rcp(test::golden_bnb_dir() / "rcp_approx_delta.safetensors");
  EXPECT_EQ(rcp.view("rcp_delta_2bit").shape, Shape{2097152});
}

// A sharded checkpoint: the index maps each tensor to its shard, and mismatches are errors.
TEST(Checkpoint, ReadsShardedDirectory) {
  test::TempDir dir;
  std::vector<float> x(4, 2.0f);
  const auto view = TensorView::make(DType::f32, {4}, std::as_bytes(std::span(x)));
  safetensors::Writer::write_file(dir / "model-00001-of-00002.safetensors", {{"a", view}, {"b", view}});
  safetensors::Writer::write_file(dir / "model-00002-of-00002.safetensors", {{"c", view}});
  auto write_index = [&](const std::string& text) { std::ofstream(dir / "model.safetensors.index.json") << text; };
  write_index(R"({"metadata":{"total_size":48},"weight_map":{"a":"model-00001-of-00002.safetensors",)"
              R"("b":"model-00001-of-00002.safetensors","c":"model-00002-of-00002.safetensors"}})");
  std::ofstream(dir / "config.json") << R"({"architectures":["LlamaForCausalLM"],"hidden_size":4})";
  const Checkpoint ckpt(dir.path());
  ASSERT_EQ(ckpt.tensors().size(), 3u);
  EXPECT_EQ(ckpt.view("c").as<float>()[3], 2.0f);
  EXPECT_EQ(ckpt.config()["hidden_size"], 4);

  write_index(R"({"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors",)"
              R"("c":"model-00002-of-00002.safetensors"}})");
  EXPECT_THROW(Checkpoint{dir.path()}, Error);  // b is in the other shard
  write_index(R"({"weight_map":{"a":"../etc/passwd"}})");
  EXPECT_THROW(Checkpoint{dir.path()}, Error);
}

TEST(Checkpoint, UnshardedDirectoryAndMissingFiles) {
  test::TempDir dir;
  EXPECT_THROW(Checkpoint{dir.path()}, Error);
  std::vector<float> x(2, 1.0f);
  safetensors::Writer::write_file(dir / "model.safetensors", {{"w", TensorView::make(DType::f32, {2}, std::as_bytes(std::span(x)))}});
  EXPECT_EQ(Checkpoint(dir.path()).tensors().size(), 1u);
}

}  // namespace
}  // namespace lowbit
