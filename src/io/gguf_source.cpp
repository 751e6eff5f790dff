#include "io/gguf_source.h"

#include <fmt/format.h>

#include <algorithm>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"

namespace lowbit {

GgufSource::GgufSource(const std::filesystem::path& path) : file_(path) {
  for (const auto& t : file_.tensors()) tensors_.push_back({t.name, t.ne, t.type});
  std::ranges::sort(tensors_, [](const Tensor& a, const Tensor& b) { return gguf_tensor_order(a.name, b.name); });
}

std::span<const std::byte> GgufSource::raw(const Tensor& tensor) const { return file_.data(*file_.find_tensor(tensor.name)); }

std::vector<float> GgufSource::load_f32(const Tensor& tensor) const {
  const auto bytes = raw(tensor);
  const int64_t cols = tensor.ne[0];
  const int64_t rows = shape_elements(tensor.ne) / std::max<int64_t>(cols, 1);
  // The registry converts plain types (f32, f16, bf16) as well as dequantizing block types.
  const auto* codec = ggml_codec(tensor.stored_type);
  if (!codec || !codec->dequantize_row)
    throw Error(fmt::format("lowbit cannot dequantize {} yet", ggml_type_name(tensor.stored_type)), {.file = label(), .tensor = tensor.name});
  std::vector<float> out(size_t(rows * cols));
  dequantize_rows(tensor.stored_type, bytes.data(), rows, cols, out.data());
  return out;
}

}  // namespace lowbit
