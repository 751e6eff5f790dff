// lowbit bench's CPU half as a library call: every format it is asked for is timed beside memcpy (no
// timing is asserted: only that each was measured), and a weight it cannot time is refused up front.
#include <gtest/gtest.h>

#include "lowbit/core/error.h"
#include "lowbit/pipeline/codec_bench.h"

namespace lowbit {
namespace {

TEST(CodecBench, TimesEveryFormatItIsGivenBesideMemcpy) {
  const std::vector<std::string> formats{"nf4", "fp4", "int8", "q4_0", "q4_K", "iq4_xs"};
  const CodecBenchmark b = bench_cpu_codecs(formats, 8, 512, 1);
  EXPECT_EQ(b.rows, 8);
  EXPECT_EQ(b.cols, 512);
  EXPECT_GE(b.threads, 1u);
  EXPECT_GT(b.memcpy_gbs, 0);
  ASSERT_EQ(b.formats.size(), formats.size());
  for (size_t i = 0; i < formats.size(); ++i) {
    EXPECT_EQ(b.formats[i].format, formats[i]);
    EXPECT_GT(b.formats[i].quantize_gbs, 0) << formats[i];
    EXPECT_GT(b.formats[i].dequantize_gbs, 0) << formats[i];
  }
}

TEST(CodecBench, RefusesWhatItCannotTime) {
  EXPECT_THROW(bench_cpu_codecs({"q4_K"}, 8, 300, 1), Error);       // 300 columns: not whole 256-value blocks
  EXPECT_THROW(bench_cpu_codecs({"q9_9"}, 8, 256, 1), Error);       // no such format
  EXPECT_THROW(bench_cpu_codecs({"q8_0"}, 1 << 15, 1 << 14, 1), Error);  // 2^29 values
  EXPECT_THROW(bench_cpu_codecs({"q8_0"}, 0, 256, 1), Error);
  EXPECT_THROW(bench_cpu_codecs({"q8_0"}, 8, 256, 0), Error);
}

}  // namespace
}  // namespace lowbit
