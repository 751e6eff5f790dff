#include "gguf_source.h"

#include <fmt/format.h>

#include <algorithm>

#include "lowbit/core/convert.h"
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
  std::vector<float> out(size_t(rows * cols));
  switch (tensor.stored_type) {
    case GgmlType::F32: convert_to_f32(DType::f32, bytes.data(), out.data(), out.size()); break;
    case GgmlType::F16: convert_to_f32(DType::f16, bytes.data(), out.data(), out.size()); break;
    case GgmlType::BF16: convert_to_f32(DType::bf16, bytes.data(), out.data(), out.size()); break;
    default:
      if (!ggml_codec(tensor.stored_type) || !ggml_codec(tensor.stored_type)->dequantize_row)
        throw Error(fmt::format("lowbit cannot dequantize {} yet", ggml_type_name(tensor.stored_type)),
                    {.file = label(), .tensor = tensor.name});
      dequantize_rows(tensor.stored_type, bytes.data(), rows, cols, out.data());
  }
  return out;
}

}  // namespace lowbit
