#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <numeric>
#include <vector>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/core/tensor.h"
#include "lowbit/core/thread_pool.h"
#include "support/paths.h"

namespace lowbit {
namespace {

TEST(DType, NamesRoundTrip) {
  for (const auto& info : kDTypes) {
    EXPECT_EQ(dtype_from_safetensors(info.safetensors_name), info.dtype);
    EXPECT_EQ(dtype_from_name(info.name), info.dtype);
  }
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::bf16);
  EXPECT_EQ(dtype_from_safetensors("F8_E4M3"), std::nullopt);
  EXPECT_EQ(dtype_size(DType::bf16), 2u);
  EXPECT_EQ(dtype_size(DType::boolean), 1u);
}

TEST(Error, MessageCarriesContext) {
  const Error e("offset out of range", {.file = "m.gguf", .tensor = "blk.0.attn_q.weight", .offset = 1234, .expected = "<= 99"});
  EXPECT_STREQ(e.what(), "m.gguf: tensor 'blk.0.attn_q.weight': at byte 1234: offset out of range (expected <= 99)");
}

TEST(TensorView, MakeChecksByteCount) {
  std::vector<std::byte> bytes(24);
  EXPECT_EQ(TensorView::make(DType::f32, {2, 3}, bytes).elements(), 6);
  EXPECT_THROW(TensorView::make(DType::f32, {2, 4}, bytes), Error);
  EXPECT_THROW(TensorView::make(DType::f32, {-1, 4}, bytes), Error);
  EXPECT_THROW(shape_elements({int64_t(1) << 40, int64_t(1) << 40}), Error);
  EXPECT_EQ(shape_elements({}), 1);  // a scalar
}

TEST(ThreadPool, CoversRangeExactlyOnce) {
  ThreadPool pool(4);
  std::vector<std::atomic<int>> hits(10007);
  pool.parallel_for(int64_t(hits.size()), 13, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) hits[size_t(i)]++;
  });
  for (auto& h : hits) ASSERT_EQ(h.load(), 1);
}

TEST(ThreadPool, PropagatesExceptionsAndStaysUsable) {
  ThreadPool pool(3);
  EXPECT_THROW(pool.parallel_for(100, 1, [](int64_t b, int64_t) {
    if (b == 57) throw Error("boom");
  }), Error);
  std::atomic<int64_t> sum = 0;
  pool.parallel_for(1000, 0, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) sum += i;
  });
  EXPECT_EQ(sum.load(), 999 * 1000 / 2);
}

TEST(ThreadPool, NestedCallsRunSerially) {
  ThreadPool pool(2);
  std::atomic<int> count = 0;
  pool.parallel_for(8, 1, [&](int64_t, int64_t) {
    pool.parallel_for(8, 1, [&](int64_t, int64_t) { count++; });
  });
  EXPECT_EQ(count.load(), 64);
}

TEST(AtomicFile, CommitRenamesAndAbandonLeavesNothing) {
  test::TempDir dir;
  const auto dest = dir / "out.bin";
  {
    AtomicFile f(dest);
    f.write("abc", 3);
    EXPECT_FALSE(std::filesystem::exists(dest));
  }
  EXPECT_FALSE(std::filesystem::exists(dest));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 0);  // temp removed
  {
    AtomicFile f(dest);
    f.write("abcdef", 6);
    f.write_at(1, std::as_bytes(std::span("X", 1)));
    f.commit();
  }
  const MappedFile m(dest);
  ASSERT_EQ(m.size(), 6u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(m.bytes().data()), 6), "aXcdef");
}

TEST(AtomicFile, FailsClearlyInMissingDirectory) {
  try {
    AtomicFile f("/nonexistent-dir/out.bin");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent-dir/out.bin"), std::string::npos);
  }
}

TEST(MappedFile, MissingFileNamesPath) {
  try {
    MappedFile m("/nonexistent/file.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.context().file, "/nonexistent/file.safetensors");
  }
}

TEST(Convert, FloatDTypesRoundTripThroughF32) {
  const std::vector<float> values{0.0f, -0.0f, 1.0f, -2.5f, 65504.0f, 1e-7f, 3.14159f};
  for (DType t : {DType::f32, DType::f16, DType::bf16, DType::f64}) {
    std::vector<std::byte> packed(values.size() * dtype_size(t));
    std::vector<float> back(values.size());
    convert_from_f32(values.data(), t, packed.data(), values.size());
    convert_to_f32(t, packed.data(), back.data(), values.size());
    std::vector<std::byte> again(packed.size());
    convert_from_f32(back.data(), t, again.data(), values.size());
    EXPECT_EQ(packed, again) << dtype_name(t);
  }
  float f = 0;
  EXPECT_THROW(convert_to_f32(DType::i8, "x", &f, 1), Error);
}

}  // namespace
}  // namespace lowbit
