// llama.cpp importance matrices in both forms read back as the per-column weights llama-quantize uses.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/imatrix.h"
#include "support/paths.h"

namespace lowbit {
namespace {

TEST(Imatrix, GgufFormIsSumOverCount) {
  test::TempDir dir;
  const auto path = dir / "imatrix.gguf";
  std::vector<float> sums{2, 4, 6, 8, 10, 12}, counts{2}, expert_sums{1, 2, 3, 4}, expert_counts{4, 0};
  {
    gguf::Writer w(path);
    w.set("general.type", {std::string("imatrix")});
    w.set("imatrix.datasets", gguf::make_string_array({"wiki.train.raw"}));
    w.set("imatrix.chunk_count", {uint32_t(7)});
    w.set("imatrix.chunk_size", {uint32_t(512)});
    w.add_tensor("blk.0.attn_q.weight.counts", GgmlType::F32, {1, 1});
    w.add_tensor("blk.0.attn_q.weight.in_sum2", GgmlType::F32, {6, 1});
    w.add_tensor("blk.0.ffn_up_exps.weight.counts", GgmlType::F32, {1, 2});
    w.add_tensor("blk.0.ffn_up_exps.weight.in_sum2", GgmlType::F32, {2, 2});
    w.write_data("blk.0.attn_q.weight.counts", std::as_bytes(std::span(counts)));
    w.write_data("blk.0.attn_q.weight.in_sum2", std::as_bytes(std::span(sums)));
    w.write_data("blk.0.ffn_up_exps.weight.counts", std::as_bytes(std::span(expert_counts)));
    w.write_data("blk.0.ffn_up_exps.weight.in_sum2", std::as_bytes(std::span(expert_sums)));
    w.finish();
  }
  const auto m = ImportanceMatrix::load(path);
  EXPECT_EQ(m.datasets(), std::vector<std::string>{"wiki.train.raw"});
  EXPECT_EQ(m.chunk_count(), 7);
  const auto* q = m.find("blk.0.attn_q.weight");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->columns, 6);
  EXPECT_EQ(q->weights, (std::vector<float>{1, 2, 3, 4, 5, 6}));
  const auto* e = m.find("blk.0.ffn_up_exps.weight");
  ASSERT_NE(e, nullptr);
  EXPECT_EQ(e->experts, 2);
  EXPECT_EQ(e->weights, (std::vector<float>{0.25f, 0.5f, 1, 1}));  // an expert that saw no tokens weighs 1
}

void write_legacy(const std::filesystem::path& path, bool truncated) {
  std::ofstream out(path, std::ios::binary);
  auto i32 = [&](int32_t v) { out.write(reinterpret_cast<const char*>(&v), 4); };
  i32(1);
  const std::string name = "blk.3.ffn_down.weight";
  i32(int32_t(name.size()));
  out.write(name.data(), std::streamsize(name.size()));
  i32(4);  // ncall
  i32(3);  // values
  const float values[3] = {4, 8, 12};  // mean × ncall
  out.write(reinterpret_cast<const char*>(values), truncated ? 8 : 12);
  if (truncated) return;
  i32(10);
  const std::string dataset = "calibration.txt";
  i32(int32_t(dataset.size()));
  out.write(dataset.data(), std::streamsize(dataset.size()));
}

TEST(Imatrix, LegacyDatFormDividesByCalls) {
  test::TempDir dir;
  write_legacy(dir / "imatrix.dat", false);
  const auto m = ImportanceMatrix::load(dir / "imatrix.dat");
  ASSERT_EQ(m.entries().size(), 1u);
  EXPECT_EQ(m.entries()[0].weights, (std::vector<float>{1, 2, 3}));
  EXPECT_EQ(m.datasets(), std::vector<std::string>{"calibration.txt"});
  EXPECT_EQ(m.chunk_count(), 10);

  write_legacy(dir / "short.dat", true);
  try {
    ImportanceMatrix::load(dir / "short.dat");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("runs past the end"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("short.dat"), std::string::npos);
  }
}

// lowbit's legacy writer read back by lowbit's legacy reader (the reader llama-quantize's load_imatrix
// mirrors): the same means per column, the chunk count, the dataset; the bytes laid out as llama.cpp's.
TEST(Imatrix, LegacyDatFormRoundTrips) {
  test::TempDir dir;
  std::vector<ImatrixSums> sums = {{"blk.1.ffn_up.weight", {2, 4, 6, 8}, {4}}, {"blk.0.attn_q.weight", {3, 0.75f}, {3}}};
  write_imatrix_dat(dir / "m.dat", sums, {"calibration.txt"}, 5);
  const auto m = ImportanceMatrix::load(dir / "m.dat");
  ASSERT_EQ(m.entries().size(), 2u);
  EXPECT_EQ(m.entries()[0].name, "blk.0.attn_q.weight");  // sorted by name
  EXPECT_EQ(m.find("blk.0.attn_q.weight")->weights, (std::vector<float>{1, 0.25f}));
  EXPECT_EQ(m.find("blk.1.ffn_up.weight")->weights, (std::vector<float>{0.5f, 1, 1.5f, 2}));
  EXPECT_EQ(m.chunk_count(), 5);
  EXPECT_EQ(m.datasets(), std::vector<std::string>{"calibration.txt"});

  // First entry, byte by byte: i32 name length, name, i32 ncall (= chunks), i32 values, f32 mean × ncall.
  std::ifstream in(dir / "m.dat", std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto i32_at = [&](size_t at) {
    int32_t v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  auto f32_at = [&](size_t at) {
    float v;
    std::memcpy(&v, bytes.data() + at, 4);
    return v;
  };
  EXPECT_EQ(i32_at(0), 2);
  EXPECT_EQ(i32_at(4), 19);
  EXPECT_EQ(bytes.substr(8, 19), "blk.0.attn_q.weight");
  EXPECT_EQ(i32_at(27), 5);
  EXPECT_EQ(i32_at(31), 2);
  EXPECT_EQ(f32_at(35), 5.0f);
  EXPECT_EQ(f32_at(39), 1.25f);
  EXPECT_EQ(bytes.size(), 4u + (4 + 19 + 8 + 8) + (4 + 19 + 8 + 16) + 4 + 4 + 15);
}

TEST(Imatrix, LegacyWriterRefusesAnEntryWithNoRows) {
  test::TempDir dir;
  EXPECT_THROW(write_imatrix_dat(dir / "m.dat", {{"blk.0.attn_q.weight", {1, 2}, {0}}}, {}, 1), Error);
  EXPECT_FALSE(std::filesystem::exists(dir / "m.dat"));
}

TEST(Imatrix, GgufTensorWithAnEmptyDimensionIsRefused) {
  // in_sum2 [4, 0] with 0 counts gave an entry of 4 columns and no weights: the quantizer read past it.
  test::TempDir dir;
  const auto path = dir / "empty.gguf";
  {
    gguf::Writer w(path);
    w.set("general.type", {std::string("imatrix")});
    w.add_tensor("blk.0.attn_q.weight.counts", GgmlType::F32, {1, 0});
    w.add_tensor("blk.0.attn_q.weight.in_sum2", GgmlType::F32, {4, 0});
    w.write_data("blk.0.attn_q.weight.counts", {});
    w.write_data("blk.0.attn_q.weight.in_sum2", {});
    w.finish();
  }
  try {
    ImportanceMatrix::load(path);
    FAIL() << "accepted an empty in_sum2";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("empty.gguf: tensor 'blk.0.attn_q.weight.in_sum2': in_sum2 has shape [4, 0]"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace lowbit
