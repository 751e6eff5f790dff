// The matrix product of the evaluation runtime: a quantized weight times a batch of float rows.
// Each task dequantizes a block of weight rows into a small float buffer (it stays in cache) and
// multiplies it with every token; the dot products are Highway vectors chosen at run time.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "model/matmul.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <vector>

#include "lowbit/core/convert.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/model/llama.h"

HWY_BEFORE_NAMESPACE();
namespace lowbit::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <class D, class V>
float sum_lanes(D d, V v) {
  return hn::GetLane(hn::SumOfLanes(d, v));  // Highway 1.0 spells ReduceSum this way
}

// y[t * y_stride + r] = dot(x[t], w[r]) for r < rows (a block of weight rows), t < tokens.
void DotBlock(const float* HWY_RESTRICT w, int64_t rows, int64_t cols, const float* HWY_RESTRICT x, int64_t tokens,
              float* HWY_RESTRICT y, int64_t y_stride) {
  const hn::ScalableTag<float> d;
  const int64_t n = int64_t(hn::Lanes(d));
  const int64_t vector_end = cols / n * n;
  int64_t t = 0;
  // Four weight rows by four tokens per pass: each load feeds four multiply-adds (a pass over one token
  // feeds 4 per 5 loads and waits on the loads). Every sum still runs over the columns in the same
  // order, so the results are those of the one-token pass, bit for bit.
  for (; t + 4 <= tokens && rows % 4 == 0; t += 4) {
    const float *x0 = x + t * cols, *x1 = x0 + cols, *x2 = x1 + cols, *x3 = x2 + cols;
    for (int64_t r = 0; r < rows; r += 4) {
      const float *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
      decltype(hn::Zero(d)) a[4][4];
      for (auto& row : a)
        for (auto& v : row) v = hn::Zero(d);
      for (int64_t c = 0; c < vector_end; c += n) {
        const auto v0 = hn::LoadU(d, w0 + c), v1 = hn::LoadU(d, w1 + c), v2 = hn::LoadU(d, w2 + c), v3 = hn::LoadU(d, w3 + c);
        const float* xs[4] = {x0 + c, x1 + c, x2 + c, x3 + c};
        for (int j = 0; j < 4; ++j) {
          const auto xv = hn::LoadU(d, xs[j]);
          a[j][0] = hn::MulAdd(v0, xv, a[j][0]);
          a[j][1] = hn::MulAdd(v1, xv, a[j][1]);
          a[j][2] = hn::MulAdd(v2, xv, a[j][2]);
          a[j][3] = hn::MulAdd(v3, xv, a[j][3]);
        }
      }
      const float* ws[4] = {w0, w1, w2, w3};
      const float* xs[4] = {x0, x1, x2, x3};
      for (int j = 0; j < 4; ++j)
        for (int i = 0; i < 4; ++i) {
          float s = sum_lanes(d, a[j][i]);
          for (int64_t c = vector_end; c < cols; ++c) s += ws[i][c] * xs[j][c];
          y[(t + j) * y_stride + r + i] = s;
        }
    }
  }
  for (; t < tokens; ++t) {
    const float* xt = x + t * cols;
    float* yt = y + t * y_stride;
    int64_t r = 0;
    // Four weight rows per pass: each x vector is loaded once for four multiply-adds.
    for (; r + 4 <= rows; r += 4) {
      const float *w0 = w + r * cols, *w1 = w0 + cols, *w2 = w1 + cols, *w3 = w2 + cols;
      auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
      for (int64_t c = 0; c < vector_end; c += n) {
        const auto xv = hn::LoadU(d, xt + c);
        a0 = hn::MulAdd(hn::LoadU(d, w0 + c), xv, a0);
        a1 = hn::MulAdd(hn::LoadU(d, w1 + c), xv, a1);
        a2 = hn::MulAdd(hn::LoadU(d, w2 + c), xv, a2);
        a3 = hn::MulAdd(hn::LoadU(d, w3 + c), xv, a3);
      }
      float s0 = sum_lanes(d, a0), s1 = sum_lanes(d, a1), s2 = sum_lanes(d, a2), s3 = sum_lanes(d, a3);
      for (int64_t c = vector_end; c < cols; ++c) {
        s0 += w0[c] * xt[c];
        s1 += w1[c] * xt[c];
        s2 += w2[c] * xt[c];
        s3 += w3[c] * xt[c];
      }
      yt[r] = s0;
      yt[r + 1] = s1;
      yt[r + 2] = s2;
      yt[r + 3] = s3;
    }
    for (; r < rows; ++r) {
      const float* wr = w + r * cols;
      auto a = hn::Zero(d);
      for (int64_t c = 0; c < vector_end; c += n) a = hn::MulAdd(hn::LoadU(d, wr + c), hn::LoadU(d, xt + c), a);
      float s = sum_lanes(d, a);
      for (int64_t c = vector_end; c < cols; ++c) s += wr[c] * xt[c];
      yt[r] = s;
    }
  }
}

}  // namespace lowbit::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit {

HWY_EXPORT(DotBlock);

void matmul_quantized(const QuantizedMatrix& w, const float* x, int64_t tokens, float* y) {
  constexpr int64_t kBlockRows = 16;
  const size_t row_bytes = ggml_row_bytes(w.type, w.cols);
  const int64_t blocks = (w.rows + kBlockRows - 1) / kBlockRows;
  parallel_for(blocks, 0, [&](int64_t begin, int64_t end) {
    thread_local std::vector<float> buffer;
    buffer.resize(size_t(kBlockRows * w.cols));
    for (int64_t b = begin; b < end; ++b) {
      const int64_t r0 = b * kBlockRows, rows = std::min(kBlockRows, w.rows - r0);
      const std::byte* src = w.data.data() + size_t(r0) * row_bytes;
      const float* rows_f32 = buffer.data();
      if (w.type == GgmlType::F32) {
        rows_f32 = reinterpret_cast<const float*>(src);  // already float: no copy
      } else {
        dequantize_rows(w.type, src, rows, w.cols, buffer.data());
      }
      HWY_DYNAMIC_DISPATCH(DotBlock)(rows_f32, rows, w.cols, x, tokens, y + r0, w.rows);
    }
  });
}

void dot_rows(const float* rows, int64_t n_rows, int64_t cols, const float* x, float* y) {
  HWY_DYNAMIC_DISPATCH(DotBlock)(rows, n_rows, cols, x, 1, y, n_rows);
}

}  // namespace lowbit
#endif
