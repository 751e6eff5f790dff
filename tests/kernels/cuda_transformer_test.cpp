// The GPU's greedy choice (argmax_rows) picks what std::max_element picks on the CPU: the first of equal
// largest values, rows of -inf included, on vocabulary-sized rows. Skips without a GPU (CI); run on the
// device machine by scripts/device-check.sh.
#include <gtest/gtest.h>

#ifdef LOWBIT_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <cstring>

#include "cuda_test_support.h"
#include "lowbit/kernels/cuda/transformer.h"

namespace lowbit {
namespace {

TEST(CudaTransformer, ArgmaxRowsPicksTheFirstLargestValue) {
  if (cuda::devices().empty()) GTEST_SKIP() << "no CUDA device";
  for (const int64_t n : {int64_t(1), int64_t(259), int64_t(49152), int64_t(128256)}) {
    const int64_t rows = 6;
    std::vector<float> x(size_t(rows * n));
    std::normal_distribution<float> normal;
    for (float& v : x) v = normal(rng());
    // Row 1: a tie between two late positions; row 2: all -inf; row 3: the largest value at the very end;
    // row 4: every value equal.
    x[size_t(n + n - 1)] = 50, x[size_t(n + n / 2)] = 50;
    std::fill(x.begin() + 2 * n, x.begin() + 3 * n, -INFINITY);
    x[size_t(4 * n - 1)] = 60;
    std::fill(x.begin() + 4 * n, x.begin() + 5 * n, 0.5f);
    DeviceBytes d_x(x.size() * 4), d_out(size_t(rows) * 4);
    d_x.upload(x.data(), x.size() * 4);
    cuda::argmax_rows(d_x.as<float>(), rows, n, d_out.as<int32_t>(), nullptr);
    const auto out = d_out.download(size_t(rows) * 4);
    for (int64_t r = 0; r < rows; ++r) {
      const float* row = x.data() + r * n;
      const auto expected = int32_t(std::max_element(row, row + n) - row);
      int32_t got = 0;
      std::memcpy(&got, out.data() + r * 4, 4);
      EXPECT_EQ(got, expected) << "row " << r << " of " << n;
    }
  }
}

}  // namespace
}  // namespace lowbit
#endif
