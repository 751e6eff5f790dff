#include <gtest/gtest.h>

#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <numeric>
#include <vector>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/core/output_path.h"
#include "lowbit/core/temporaries.h"
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

// Before any work, an output that is (or resolves to) an input, lies inside an input directory or
// holds an input is refused, and an existing one is replaced only when asked.
TEST(OutputPath, RefusesInputsThroughLinksAndExistingOutputsWithoutForce) {
  test::TempDir dir;
  const auto input = dir / "m.gguf";
  std::ofstream(input) << "model";
  std::filesystem::create_directories(dir / "hf" / "sub");
  std::ofstream(dir / "hf" / "config.json") << "{}";
  std::filesystem::create_symlink(input, dir / "link.gguf");
  std::filesystem::create_hard_link(input, dir / "hard.gguf");
  auto refused = [&](const std::filesystem::path& out, const std::filesystem::path& in, const std::string& needle, bool force = true) {
    try {
      check_output_path(out, {in}, force);
      ADD_FAILURE() << out << " accepted for input " << in;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  refused(input, input, "is the input");
  refused(dir / "link.gguf", input, "is the input");                        // a symlink to the input
  refused(dir / "hard.gguf", input, "is the input");                        // a hard link
  refused(dir / "hf" / ".." / "m.gguf", input, "is the input");             // ".."
  refused(input, dir / "link.gguf", "is the input");                        // the input given through a link
  refused(dir / "hf" / "out.gguf", dir / "hf", "inside the input directory");
  refused(dir / "hf" / "sub" / "new" / "out", dir / "hf", "inside the input directory");
  refused(dir.path(), dir / "hf", "lies inside the output directory");     // replacing it would lose the input
  EXPECT_NO_THROW(check_output_path(dir / "new.gguf", {input, "", dir / "missing"}, false));
  std::ofstream(dir / "old.gguf") << "old";
  refused(dir / "old.gguf", input, "unless given --force", false);
  EXPECT_NO_THROW(check_output_path(dir / "old.gguf", {input}, true));
  std::filesystem::create_directory(dir / "empty");
  EXPECT_NO_THROW(check_output_path(dir / "empty", {input}, false));  // nothing there to lose
  EXPECT_EQ(MappedFile(input).size(), 5u);
}

TEST(AtomicDirectory, UmaskModeFsyncedRenameAndReplacement) {
  test::TempDir dir;
  const mode_t previous = ::umask(022);
  {
    AtomicDirectory out(dir / "ckpt");
    std::ofstream(out.path() / "a.txt") << "new";
    out.commit();
  }
  ::umask(previous);
  struct stat st{};
  ASSERT_EQ(::stat((dir / "ckpt").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0755u);
  EXPECT_THROW(AtomicDirectory(dir / "ckpt"), Error);  // an existing output, without --force
  {
    AtomicDirectory out(dir / "ckpt", /*replace_existing=*/true);  // --force
    std::ofstream(out.path() / "b.txt") << "newer";
    out.commit();
  }
  EXPECT_FALSE(std::filesystem::exists(dir / "ckpt" / "a.txt"));
  EXPECT_TRUE(std::filesystem::exists(dir / "ckpt" / "b.txt"));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);  // nothing beside it
  std::ofstream(dir / "file") << "x";
  EXPECT_THROW(AtomicDirectory(dir / "file"), Error);
}

// A job killed by SIGTERM or SIGINT removes its temporaries (files, directories with files inside,
// scratch directories) and still dies of the signal. The job runs in a child process.
TEST(Temporaries, SignalRemovesEveryLiveTemporaryAndReRaises) {
  for (const int sig : {SIGTERM, SIGINT}) {
    test::TempDir dir;
    int ready[2];
    ASSERT_EQ(::pipe(ready), 0);
    const pid_t child = ::fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      ::signal(sig, SIG_DFL);  // whatever this test inherited; the first registration installs the handler
      ::setenv("TMPDIR", dir.path().c_str(), 1);
      AtomicFile file(dir / "out.gguf");
      file.write("partial", 7);
      AtomicDirectory ckpt(dir / "ckpt");
      std::filesystem::create_directories(ckpt.path() / "nested");
      std::ofstream(ckpt.path() / "nested" / "shard.safetensors") << "partial";
      ScratchDirectory scratch("test");
      std::ofstream(scratch / "model.gguf") << "copy";
      AtomicFile committed(dir / "done.bin");
      committed.write("ok", 2);
      committed.commit();
      (void)!::write(ready[1], "r", 1);
      for (;;) ::pause();
    }
    char c;
    ASSERT_EQ(::read(ready[0], &c, 1), 1);
    ::close(ready[0]);
    ::close(ready[1]);
    ::kill(child, sig);
    int status = 0;
    ASSERT_EQ(::waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFSIGNALED(status)) << status;
    EXPECT_EQ(WTERMSIG(status), sig);
    std::vector<std::string> left;
    for (const auto& e : std::filesystem::directory_iterator(dir.path())) left.push_back(e.path().filename().string());
    EXPECT_EQ(left, std::vector<std::string>{"done.bin"}) << "signal " << sig;
  }
}

TEST(Temporaries, ScratchDirectoryGoesWithItsOwner) {
  std::filesystem::path path;
  {
    const ScratchDirectory scratch("test");
    path = scratch.path();
    std::filesystem::create_directories(scratch / "a" / "b");
    std::ofstream(scratch / "a" / "b" / "c") << "x";
    EXPECT_TRUE(path.filename().string().starts_with("lowbit-test-"));
  }
  EXPECT_FALSE(std::filesystem::exists(path));
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
