// Values a format cannot hold: NaN, ±Inf, finite values that round beyond an f16/bf16 output's range,
// and block scales that came out non-finite. Bytes and arithmetic only: the scans say which element
// and why; the file and the tensor are added by lowbit/io/value_guard.h.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "lowbit/core/dtype.h"
#include "lowbit/formats/format.h"

namespace lowbit {

// The values a destination can hold.
enum class ValueRange : uint8_t {
  finite,  // f32, and every block format: NaN and ±Inf are the only misfits at the input
  f16,     // |x| < 65520, which rounds to at most 65504 (f16's largest finite value)
  bf16,    // |x| below the midpoint above bf16's largest finite value 3.3895e38
};
ValueRange value_range_of(GgmlType type);
ValueRange value_range_of(DType dtype);  // f16, bf16; finite for the rest

enum class ValueProblem : uint8_t { none, nan, inf, beyond_f16, beyond_bf16 };

// The first misfit and how many there are.
struct ValueScan {
  int64_t count = 0;
  int64_t first = -1;  // flat index of the first misfit
  float first_value = 0;
  ValueProblem problem = ValueProblem::none;
  explicit operator bool() const { return count > 0; }
};

// "NaN", "Inf", "65536 is beyond the f16 range (largest finite 65504)".
std::string describe(ValueProblem problem, float value);

// Values of x[0, n) that `range` cannot hold. Vectorised (Highway): a few GB/s per core, so it runs
// before every conversion or quantization at a cost lost in the noise of the codecs.
ValueScan scan_values(const float* x, int64_t n, ValueRange range);
// Just the count, on the calling thread: for a loop that checks each chunk while it sits in cache.
int64_t count_misfits(const float* x, int64_t n, ValueRange range);

// NaN and ±Inf among stored f32, f16 or bf16 values (`bytes` as a file holds them); other types
// (integers) hold no misfit and give an empty scan.
ValueScan scan_stored_values(GgmlType type, std::span<const std::byte> bytes);

// The block scales ggml_validate_row_data checks (the f16 d, and dmin/m where the block has one) that
// are NaN or Inf, over whole blocks of `type`. first is a block index.
struct ScaleScan {
  int64_t count = 0;     // scale fields that are non-finite
  int64_t first = -1;    // block holding the first
  float first_value = 0;
  std::string_view field;  // "d", "dmin" or "m"
  explicit operator bool() const { return count > 0; }
};
ScaleScan scan_block_scales(GgmlType type, std::span<const std::byte> blocks);
// Whether scan_block_scales knows where `type`'s scales are (every type lowbit writes or reads does).
bool has_block_scales(GgmlType type);
// The first scale field (d) of block `block`, as a float (0 for a type without one).
float block_scale_d(GgmlType type, std::span<const std::byte> blocks, int64_t block);

// "row 3, column 17" for flat element `index` of rows of `cols` values ("element 17" when cols <= 0).
std::string element_location(int64_t index, int64_t cols);

}  // namespace lowbit
