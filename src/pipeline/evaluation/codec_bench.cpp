#include "lowbit/pipeline/codec_bench.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <random>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/ggml_codecs.h"

namespace lowbit {
namespace {

constexpr int64_t kMaxSide = int64_t(1) << 20;
constexpr int64_t kMaxElements = int64_t(1) << 28;  // 1 GiB as f32, with its copies about 3 GiB

template <class F>
double median_seconds(int repeats, F&& run) {
  run();
  std::vector<double> times;
  for (int i = 0; i < repeats; ++i) {
    const auto start = std::chrono::steady_clock::now();
    run();
    times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  std::ranges::sort(times);
  return times[times.size() / 2];
}

}  // namespace

CodecBenchmark bench_cpu_codecs(const std::vector<std::string>& formats, int64_t rows, int64_t cols, int repeats) {
  if (rows < 1 || cols < 1 || rows > kMaxSide || cols > kMaxSide)
    throw Error(fmt::format("a benchmark weight's sides lie in [1, {}], not {} × {}", kMaxSide, rows, cols));
  const int64_t n = rows * cols;
  if (n > kMaxElements) throw Error(fmt::format("{} × {} is {} values, more than the {} a benchmark weight may have", rows, cols, n, kMaxElements));
  if (repeats < 1) throw Error("a benchmark needs at least one timed run");
  for (const auto& format : formats)
    if (const auto type = ggml_type_from_name(format); type && cols % ggml_type_info(*type).block_elements != 0)
      throw Error(fmt::format("{} columns are not a multiple of {}'s block of {} values", cols, format, ggml_type_info(*type).block_elements));

  std::mt19937 rng(1234);
  std::student_t_distribution<float> heavy(4.0f);
  auto f32 = std::vector<float>(size_t(n));
  for (auto& v : f32) v = 0.02f * heavy(rng);
  Tensor bf16(DType::bf16, {rows, cols});
  convert_from_f32(f32.data(), DType::bf16, bf16.buffer.data(), f32.size());

  CodecBenchmark result{.rows = rows, .cols = cols, .threads = unsigned(ThreadPool::global().size())};
  std::vector<std::byte> copy(bf16.buffer.size());
  const double copy_s = median_seconds(repeats, [&] {
    parallel_for(int64_t(copy.size() >> 20) + 1, 1, [&](int64_t b, int64_t e) {
      const size_t begin = size_t(b) << 20, end = std::min(copy.size(), size_t(e) << 20);
      if (begin < end) std::memcpy(copy.data() + begin, bf16.buffer.data() + begin, end - begin);
    });
  });
  result.memcpy_gbs = 2.0 * double(copy.size()) / copy_s / 1e9;

  for (const auto& format : formats) {
    // Seconds to quantize and to dequantize, and the bytes each moves.
    double qs = 0, ds = 0, moved = 0;
    const auto id = parse_format_id(format);
    if (const auto quant_type = id ? bnb::quant_type_of(*id) : std::nullopt) {
      const bnb::Bnb4bitOptions opt{.quant_type = *quant_type, .blocksize = 64};
      bnb::Bnb4bitQuantized q;
      qs = median_seconds(repeats, [&] { q = bnb::quantize_4bit(bf16.view(), opt); });
      Tensor out(DType::bf16, {rows, cols});
      ds = median_seconds(repeats, [&] { bnb::dequantize_4bit_into(q.packed, q.state, DType::bf16, out.buffer.span()); });
      moved = double(bf16.buffer.size() + q.packed.size() + q.state.absmax.size() * 4);
    } else if (id == FormatId::int8) {
      bnb::Int8RowwiseQuantized q;
      qs = median_seconds(repeats, [&] { q = bnb::quantize_int8_rowwise(bf16.view()); });
      Tensor out(DType::bf16, {rows, cols});
      ds = median_seconds(repeats, [&] { bnb::dequantize_int8_rowwise_into(q, DType::bf16, out.buffer.span()); });
      moved = double(bf16.buffer.size() + q.cb.size() + q.scb.size() * 4);
    } else {
      const auto type = id ? format_info(*id).ggml : std::nullopt;
      if (!type || !ggml_codec(*type) || !ggml_codec(*type)->quantize_row) throw Error(fmt::format("cannot time '{}'", format));
      std::vector<std::byte> blocks(ggml_row_bytes(*type, cols) * size_t(rows));
      std::vector<float> back(f32.size());
      qs = median_seconds(repeats, [&] { quantize_rows(*type, f32.data(), rows, cols, nullptr, blocks.data()); });
      ds = median_seconds(repeats, [&] { dequantize_rows(*type, blocks.data(), rows, cols, back.data()); });
      moved = double(f32.size() * 4 + blocks.size());
    }
    result.formats.push_back({.format = format, .quantize_gbs = moved / qs / 1e9, .dequantize_gbs = moved / ds / 1e9});
  }
  return result;
}

}  // namespace lowbit
