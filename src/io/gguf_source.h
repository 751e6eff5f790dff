// ModelSource over a GGUF file: metadata and tensors as they are, dequantized on demand.
#pragma once

#include "lowbit/io/model_source.h"

namespace lowbit {

class GgufSource : public ModelSource {
 public:
  explicit GgufSource(const std::filesystem::path& path);
  const std::vector<gguf::KeyValue>& metadata() const override { return file_.metadata(); }
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  std::span<const std::byte> raw(const Tensor& tensor) const override;
  std::vector<float> load_f32(const Tensor& tensor) const override;
  GgmlType unquantized_type(const Tensor& tensor) const override { return tensor.stored_type; }
  std::string label() const override { return file_.label(); }

 private:
  gguf::File file_;
  std::vector<Tensor> tensors_;
};

}  // namespace lowbit
