#include "lowbit/io/value_guard.h"

#include <fmt/format.h>

#include <cmath>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"

namespace lowbit {
namespace {

constexpr std::string_view kExpected = "finite values the format holds; --allow-nonfinite keeps them where the format can";

ErrorContext context_of(const ValueSite& site, std::string_view expected = kExpected) {
  return {.file = site.file, .tensor = site.tensor, .expected = std::string(expected)};
}

std::string describe_scale(float scale) { return describe(std::isnan(scale) ? ValueProblem::nan : ValueProblem::inf, scale); }

std::string more(int64_t count) { return count > 1 ? fmt::format(" (and {} more)", count - 1) : ""; }

}  // namespace

void ValueGuard::keep(const ValueSite& site, int64_t count, const std::string& first) {
  count_.values += count;
  count_.tensors += 1;
  if (policy_.report)
    policy_.report(fmt::format("{}: tensor '{}': kept {} non-finite or out-of-range value(s), the first {} (--allow-nonfinite)", site.file,
                               site.tensor, count, first));
}

void ValueGuard::values(const ValueSite& site, const float* x, int64_t n, ValueRange range, std::string_view format, bool storable) {
  const ValueScan scan = scan_values(x, n, range);
  if (!scan) return;
  const std::string first = fmt::format("{} at {}", describe(scan.problem, scan.first_value), element_location(scan.first, site.cols));
  if (!storable)
    throw Error(fmt::format("{}{}: {} cannot hold it, even with --allow-nonfinite", first, more(scan.count), format),
                context_of(site, "finite values"));
  if (!policy_.allow) throw Error(fmt::format("{}{}, bound for {}", first, more(scan.count), format), context_of(site));
  keep(site, scan.count, first);
}

void ValueGuard::stored(const ValueSite& site, GgmlType type, std::span<const std::byte> bytes) {
  const ValueScan scan = scan_stored_values(type, bytes);
  if (!scan) return;
  const std::string first = fmt::format("{} at {}", describe(scan.problem, scan.first_value), element_location(scan.first, site.cols));
  if (!policy_.allow) throw Error(fmt::format("{}{}", first, more(scan.count)), context_of(site));
  keep(site, scan.count, first);
}

void ValueGuard::source_scales(const ValueSite& site, GgmlType type, std::span<const std::byte> blocks) {
  const ScaleScan scan = scan_block_scales(type, blocks);
  if (!scan) return;
  const int64_t block_values = ggml_type_info(type).block_elements;
  const std::string first = fmt::format("block scale {} = {} (the {} block at {})", scan.field, describe_scale(scan.first_value),
                                        ggml_type_name(type), element_location(scan.first * block_values, site.cols));
  if (!policy_.allow) throw Error(fmt::format("{}{}", first, more(scan.count)), context_of(site, "finite block scales; --allow-nonfinite dequantizes them to NaN/Inf"));
}

void ValueGuard::statistics(const ValueSite& site, std::string_view what, std::span<const float> values, ValueRange range) {
  const ValueScan scan = scan_values(values.data(), int64_t(values.size()), range);
  if (!scan) return;
  const std::string first = fmt::format("{} {} at element {}", what, describe(scan.problem, scan.first_value), scan.first);
  if (!policy_.allow) throw Error(fmt::format("{}{}", first, more(scan.count)), context_of(site, "finite quantization statistics"));
  keep(site, scan.count, first);
}

namespace {

// "from 3.4e+38 at row 0, column 7": the largest |x| of block `block` (a NaN first: it is the cause).
std::string cause_in_block(const float* input, int64_t block, int64_t block_values, int64_t cols) {
  const int64_t begin = block * block_values;
  int64_t largest = begin;
  for (int64_t i = begin; i < begin + block_values; ++i)
    if (!(std::fabs(input[i]) <= std::fabs(input[largest]))) largest = i;
  return fmt::format(" from {} at {}", input[largest], element_location(largest, cols));
}

}  // namespace

void ValueGuard::written_scales(const ValueSite& site, GgmlType type, std::span<const std::byte> blocks, const float* input,
                                bool input_beyond_f16) {
  const int64_t block_values = ggml_type_info(type).block_elements;
  const std::string name(ggml_type_name(type));
  const ScaleScan scan = scan_block_scales(type, blocks);
  if (scan)
    throw Error(fmt::format("{} block scale {} would be {}{}{}: {} cannot hold the values of that block, even with --allow-nonfinite", name,
                            scan.field, describe_scale(scan.first_value),
                            input ? cause_in_block(input, scan.first, block_values, site.cols) : "", more(scan.count), name),
                context_of(site, "values whose block scale fits an f16"));
  if (!input || !input_beyond_f16) return;
  // Other quantizers (q3_K, q6_K, iq4_xs) overflow inside their search and write a finite scale that
  // loses the block. Only a value beyond f16 can do that: the rows holding one (rare) are decoded.
  const int64_t cols = site.cols > 0 ? site.cols : block_values;
  const int64_t n = int64_t(blocks.size() / ggml_type_info(type).block_bytes) * block_values;
  if (!scan_values(input, n, ValueRange::f16)) return;
  const size_t row_bytes = ggml_row_bytes(type, cols);
  std::vector<float> row(static_cast<size_t>(cols));
  int64_t decoded = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (std::fabs(input[i]) < 65520.0f) continue;
    if (i / cols != decoded) {
      decoded = i / cols;
      dequantize_rows(type, blocks.data() + size_t(decoded) * row_bytes, 1, cols, row.data());
    }
    const float back = row[size_t(i % cols)];
    if (std::fabs(back - input[i]) <= 0.5f * std::fabs(input[i])) continue;
    throw Error(fmt::format("{} at {} comes back as {}: {}'s block scales cannot carry it, even with --allow-nonfinite", input[i],
                            element_location(i, cols), back, name),
                context_of(site, "values whose block scale fits an f16"));
  }
}

std::vector<float> load_checked(const ModelSource& source, const ModelSource::Tensor& tensor, GgmlType to, ValueGuard& guard) {
  const ValueSite site{source.label(), tensor.name, tensor.ne.empty() ? 0 : tensor.ne[0]};
  if (ggml_type_info(tensor.stored_type).quantized) guard.source_scales(site, tensor.stored_type, source.raw(tensor));
  std::vector<float> values = source.load_f32(tensor);
  guard.values(site, values.data(), int64_t(values.size()), value_range_of(to), ggml_type_name(to));
  return values;
}

Tensor convert_checked(const TensorView& v, DType to, const ValueSite& site, ValueGuard& guard) {
  Tensor out(to, v.shape);
  std::vector<float> f32(size_t(v.elements()));
  convert_to_f32(v.dtype, v.bytes.data(), f32.data(), f32.size());
  guard.values(site, f32.data(), int64_t(f32.size()), value_range_of(to), dtype_name(to));
  convert_from_f32(f32.data(), to, out.buffer.data(), f32.size());
  return out;
}

}  // namespace lowbit
