// Scans for values a format cannot hold. The float scan is Highway vectors chosen at run time: one
// compare per lane, |x| < limit, false for NaN, ±Inf and anything the destination rounds to Inf.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "formats/value_check.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstring>
#include <vector>

#include <fmt/format.h>

#include "lowbit/core/half.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/value_check.h"

HWY_BEFORE_NAMESPACE();
namespace lowbit::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// How many of x[0, n) fail |x| < limit.
int64_t CountMisfits(const float* HWY_RESTRICT x, int64_t n, float limit) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = int64_t(hn::Lanes(d));
  const auto bound = hn::Set(d, limit);
  int64_t count = 0, i = 0;
  for (; i + lanes <= n; i += lanes) count += int64_t(hn::CountTrue(d, hn::Not(hn::Lt(hn::Abs(hn::LoadU(d, x + i)), bound))));
  for (; i < n; ++i) count += !(std::fabs(x[i]) < limit);
  return count;
}

}  // namespace lowbit::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace lowbit {

HWY_EXPORT(CountMisfits);

namespace {

// The smallest |x| each range rounds to Inf: f16's 65504 + half an ulp (ties go to even, i.e. up to
// Inf); bf16's largest finite 0x7f7f + half an ulp, likewise.
float misfit_limit(ValueRange range) {
  switch (range) {
    case ValueRange::f16: return 65520.0f;
    case ValueRange::bf16: return std::bit_cast<float>(0x7f7f8000u);
    case ValueRange::finite: break;
  }
  return INFINITY;
}

ValueProblem problem_of(float x, ValueRange range) {
  if (std::isnan(x)) return ValueProblem::nan;
  if (std::isinf(x)) return ValueProblem::inf;
  return range == ValueRange::f16 ? ValueProblem::beyond_f16 : ValueProblem::beyond_bf16;
}

// Where each block type keeps its f16 scales (ggml-common.h; the fields ggml_validate_row_data checks).
struct ScaleFields {
  GgmlType type;
  uint8_t offsets[2];
  uint8_t count;
  std::string_view names[2];
};
constexpr ScaleFields kScaleFields[] = {
    {GgmlType::Q4_0, {0, 0}, 1, {"d", ""}},    {GgmlType::Q4_1, {0, 2}, 2, {"d", "m"}},
    {GgmlType::Q5_0, {0, 0}, 1, {"d", ""}},    {GgmlType::Q5_1, {0, 2}, 2, {"d", "m"}},
    {GgmlType::Q8_0, {0, 0}, 1, {"d", ""}},    {GgmlType::Q8_1, {0, 2}, 2, {"d", "s"}},
    {GgmlType::Q2_K, {80, 82}, 2, {"d", "dmin"}},  // scales[16], qs[64], d, dmin
    {GgmlType::Q3_K, {108, 0}, 1, {"d", ""}},      // hmask[32], qs[64], scales[12], d
    {GgmlType::Q4_K, {0, 2}, 2, {"d", "dmin"}},    {GgmlType::Q5_K, {0, 2}, 2, {"d", "dmin"}},
    {GgmlType::Q6_K, {208, 0}, 1, {"d", ""}},      // ql[128], qh[64], scales[16], d
    {GgmlType::IQ2_XXS, {0, 0}, 1, {"d", ""}}, {GgmlType::IQ2_XS, {0, 0}, 1, {"d", ""}},
    {GgmlType::IQ2_S, {0, 0}, 1, {"d", ""}},   {GgmlType::IQ3_XXS, {0, 0}, 1, {"d", ""}},
    {GgmlType::IQ3_S, {0, 0}, 1, {"d", ""}},   {GgmlType::IQ1_S, {0, 0}, 1, {"d", ""}},
    {GgmlType::IQ4_NL, {0, 0}, 1, {"d", ""}},  {GgmlType::IQ4_XS, {0, 0}, 1, {"d", ""}},
};

const ScaleFields* scale_fields(GgmlType type) {
  for (const auto& f : kScaleFields)
    if (f.type == type) return &f;
  return nullptr;
}

uint16_t load_u16(const std::byte* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// A model's weights are gigabytes read once at load: long spans are scanned in pieces on the thread
// pool, each piece's result in its own slot, then joined in order (the first misfit stays the first).
template <class Scan, class ScanPiece>
Scan scan_in_pieces(int64_t n, int64_t piece, ScanPiece scan_piece) {
  const int64_t pieces = (n + piece - 1) / piece;
  std::vector<Scan> parts(size_t(std::max<int64_t>(pieces, 0)));
  parallel_for(pieces, 1, [&](int64_t first, int64_t last) {
    for (int64_t p = first; p < last; ++p) parts[size_t(p)] = scan_piece(p * piece, std::min(n, (p + 1) * piece));
  });
  Scan total;
  for (const Scan& part : parts) {
    if (!part) continue;
    if (!total) total = part;
    else total.count += part.count;
  }
  return total;
}

constexpr int64_t kValuesPerPiece = int64_t(1) << 22;  // 8 MB of 16-bit values

// NaN or Inf in 16-bit storage whose exponent field is `exponent_mask`, elements [begin, end): a branch-free
// count first (the compiler vectorises it), the first misfit looked for only where there is one.
ValueScan scan_16bit(std::span<const std::byte> bytes, int64_t begin, int64_t end, uint16_t exponent_mask,
                     float (*to_f32)(uint16_t)) {
  int64_t count = 0;
  for (int64_t i = begin; i < end; ++i) count += (load_u16(bytes.data() + 2 * i) & exponent_mask) == exponent_mask;
  if (count == 0) return {};
  ValueScan scan{.count = count};
  for (int64_t i = begin;; ++i) {
    const uint16_t h = load_u16(bytes.data() + 2 * i);
    if ((h & exponent_mask) != exponent_mask) continue;
    scan.first = i;
    scan.first_value = to_f32(h);
    scan.problem = std::isnan(scan.first_value) ? ValueProblem::nan : ValueProblem::inf;
    return scan;
  }
}

ValueScan scan_16bit(std::span<const std::byte> bytes, uint16_t exponent_mask, float (*to_f32)(uint16_t)) {
  return scan_in_pieces<ValueScan>(int64_t(bytes.size() / 2), kValuesPerPiece, [&](int64_t begin, int64_t end) {
    return scan_16bit(bytes, begin, end, exponent_mask, to_f32);
  });
}

// NaN and ±Inf among f32 values [begin, end), copied out in pieces so an unaligned mapping is read safely.
ValueScan scan_f32(std::span<const std::byte> bytes, int64_t begin, int64_t end) {
  ValueScan scan;
  constexpr int64_t kCopy = 4096;
  float copy[kCopy];
  for (int64_t at = begin; at < end; at += kCopy) {
    const int64_t count = std::min(kCopy, end - at);
    std::memcpy(copy, bytes.data() + 4 * at, size_t(4 * count));
    const ValueScan part = scan_values(copy, count, ValueRange::finite);
    if (!part) continue;
    if (scan.count == 0) {
      scan.first = at + part.first;
      scan.first_value = part.first_value;
      scan.problem = part.problem;
    }
    scan.count += part.count;
  }
  return scan;
}

}  // namespace

ValueRange value_range_of(GgmlType type) {
  return type == GgmlType::F16 ? ValueRange::f16 : type == GgmlType::BF16 ? ValueRange::bf16 : ValueRange::finite;
}

ValueRange value_range_of(DType dtype) {
  return dtype == DType::f16 ? ValueRange::f16 : dtype == DType::bf16 ? ValueRange::bf16 : ValueRange::finite;
}

std::string describe(ValueProblem problem, float value) {
  switch (problem) {
    case ValueProblem::nan: return "NaN";
    case ValueProblem::inf: return value < 0 ? "-Inf" : "Inf";
    case ValueProblem::beyond_f16: return fmt::format("{:g} is beyond the f16 range (largest finite 65504)", value);
    case ValueProblem::beyond_bf16: return fmt::format("{:g} is beyond the bf16 range (largest finite 3.3895e+38)", value);
    case ValueProblem::none: break;
  }
  return "a value the format holds";
}

int64_t count_misfits(const float* x, int64_t n, ValueRange range) {
  return n > 0 ? HWY_DYNAMIC_DISPATCH(CountMisfits)(x, n, misfit_limit(range)) : 0;
}

ValueScan scan_values(const float* x, int64_t n, ValueRange range) {
  const float limit = misfit_limit(range);
  std::atomic<int64_t> count{0};
  // Chunks of 1 Mi values: scheduling is nothing beside them, and big tensors use every core.
  parallel_for(n, int64_t(1) << 20, [&](int64_t begin, int64_t end) {
    if (const int64_t c = HWY_DYNAMIC_DISPATCH(CountMisfits)(x + begin, end - begin, limit)) count += c;
  });
  ValueScan scan;
  scan.count = count.load();
  if (scan.count == 0) return scan;
  for (int64_t i = 0; i < n; ++i)
    if (!(std::fabs(x[i]) < limit)) {
      scan.first = i;
      scan.first_value = x[i];
      scan.problem = problem_of(x[i], range);
      break;
    }
  return scan;
}

ValueScan scan_stored_values(GgmlType type, std::span<const std::byte> bytes) {
  switch (type) {
    case GgmlType::F32:
      return scan_in_pieces<ValueScan>(int64_t(bytes.size() / 4), kValuesPerPiece / 2,
                                       [&](int64_t begin, int64_t end) { return scan_f32(bytes, begin, end); });
    case GgmlType::F16: return scan_16bit(bytes, 0x7c00, [](uint16_t h) { return f16_to_f32(h); });
    case GgmlType::BF16: return scan_16bit(bytes, 0x7f80, [](uint16_t h) { return bf16_to_f32(h); });
    default: return {};
  }
}

bool has_block_scales(GgmlType type) { return scale_fields(type) != nullptr; }

float block_scale_d(GgmlType type, std::span<const std::byte> blocks, int64_t block) {
  const ScaleFields* fields = scale_fields(type);
  if (!fields) return 0.0f;
  return f16_to_f32(load_u16(blocks.data() + size_t(block) * ggml_type_info(type).block_bytes + fields->offsets[0]));
}

ScaleScan scan_block_scales(GgmlType type, std::span<const std::byte> blocks) {
  const ScaleFields* fields = scale_fields(type);
  if (!fields) return {};
  const size_t block_bytes = ggml_type_info(type).block_bytes;
  const auto scale = [&](int64_t b, uint8_t f) { return load_u16(blocks.data() + size_t(b) * block_bytes + fields->offsets[f]); };
  return scan_in_pieces<ScaleScan>(int64_t(blocks.size() / block_bytes), int64_t(1) << 16, [&](int64_t begin, int64_t end) {
    int64_t count = 0;  // branch-free first, as scan_16bit
    for (int64_t b = begin; b < end; ++b)
      for (uint8_t f = 0; f < fields->count; ++f) count += (scale(b, f) & 0x7c00) == 0x7c00;
    if (count == 0) return ScaleScan{};
    for (int64_t b = begin;; ++b)
      for (uint8_t f = 0; f < fields->count; ++f)
        if ((scale(b, f) & 0x7c00) == 0x7c00) return ScaleScan{.count = count, .first = b, .first_value = f16_to_f32(scale(b, f)), .field = fields->names[f]};
  });
}

std::string element_location(int64_t index, int64_t cols) {
  if (cols <= 0) return fmt::format("element {}", index);
  return fmt::format("row {}, column {}", index / cols, index % cols);
}

}  // namespace lowbit
#endif  // HWY_ONCE
