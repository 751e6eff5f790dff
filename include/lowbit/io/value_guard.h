// The NaN/Inf policy (lowbit/core/nonfinite.h) applied to one job, on the values read from its files
// and bound for its output: every check names the file, the tensor, the element and the reason; under
// --allow-nonfinite it reports and counts instead.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "lowbit/core/nonfinite.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/format.h"
#include "lowbit/formats/value_check.h"
#include "lowbit/io/model_source.h"

namespace lowbit {

// Which tensor a check is about: file and tensor for the message, cols to turn an index into row, column.
struct ValueSite {
  std::string file, tensor;
  int64_t cols = 0;
};

class ValueGuard {
 public:
  explicit ValueGuard(const NonfinitePolicy& policy) : policy_(policy) {}

  // Values bound for `format` (whose values hold `range`). A format that stores no NaN/Inf at all
  // (`storable` false: the bitsandbytes codecs) refuses them even under --allow-nonfinite.
  void values(const ValueSite& site, const float* x, int64_t n, ValueRange range, std::string_view format, bool storable = true);
  // Stored f32/f16/bf16 values copied as they are (norms, biases, tensors already in their type).
  void stored(const ValueSite& site, GgmlType type, std::span<const std::byte> bytes);
  // The block scales of an already-quantized source, read before it is dequantized or copied. Under
  // --allow-nonfinite they pass uncounted: the NaN/Inf values they give are counted where they land.
  void source_scales(const ValueSite& site, GgmlType type, std::span<const std::byte> blocks);
  // Statistics of a bitsandbytes checkpoint (absmax, nested absmax, SCB...) named `what`.
  void statistics(const ValueSite& site, std::string_view what, std::span<const float> values, ValueRange range);

  // The block scales of a freshly quantized tensor: a non-finite one is never written, whatever the
  // policy. `input` (the tensor's float values, or null) locates the largest value of the block;
  // `input_beyond_f16` says it holds a value beyond f16 (NaN, Inf included), whose rows are then
  // decoded: some quantizers overflow to a finite scale that loses the block.
  static void written_scales(const ValueSite& site, GgmlType type, std::span<const std::byte> blocks, const float* input,
                             bool input_beyond_f16 = true);

  const NonfiniteCount& count() const { return count_; }

 private:
  void keep(const ValueSite& site, int64_t count, const std::string& first);

  NonfinitePolicy policy_;
  NonfiniteCount count_;
};

// A source tensor as float values bound for `to`: its block scales checked (a quantized GGUF), then
// its values for what `to` holds.
std::vector<float> load_checked(const ModelSource& source, const ModelSource::Tensor& tensor, GgmlType to, ValueGuard& guard);

// A float tensor converted to `to`, its values checked by `guard` for what `to` holds.
Tensor convert_checked(const TensorView& v, DType to, const ValueSite& site, ValueGuard& guard);

}  // namespace lowbit
