// safetensors: an 8-byte little-endian header length N, N bytes of JSON
// {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ..., "__metadata__": {str: str}},
// then the data section, which the tensors cover exactly, without gaps or overlaps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/core/mapped_file.h"
#include "lowbit/core/tensor.h"

namespace lowbit::safetensors {

struct TensorInfo {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // byte offsets within the data section
  uint64_t end = 0;
  uint64_t size() const { return end - begin; }
};

class File {
 public:
  // Maps and validates a safetensors file. Throws lowbit::Error naming the file, tensor and problem.
  explicit File(const std::filesystem::path& path);
  // Parses bytes owned by the caller (which must outlive the File); `label` names them in errors.
  static File parse(std::span<const std::byte> bytes, std::string label);

  // Tensors in data order (ascending offsets).
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  // Zero-copy view of a tensor's bytes. The lookup form throws if the name is absent.
  TensorView view(const TensorInfo& tensor) const;
  TensorView view(std::string_view name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& label() const { return label_; }
  uint64_t data_offset() const { return data_offset_; }

 private:
  File() = default;
  void parse_all();

  std::shared_ptr<MappedFile> mapping_;
  std::span<const std::byte> bytes_;
  std::string label_;
  uint64_t data_offset_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// Streams a safetensors file: each tensor's bytes go to disk as soon as they are written, in any
// order, so a model larger than memory can be written and a tensor's size (say, a quantization
// state whose JSON length depends on its values) need not be known in advance. The header goes last,
// into space reserved at the front for the names announced up front, padded with spaces as the
// format allows.
class Writer {
 public:
  // `names`: every tensor that will be written.
  Writer(std::filesystem::path dest, const std::vector<std::string>& names, std::map<std::string, std::string> metadata = {});
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void write(std::string_view name, const TensorView& tensor);
  // Writes the header, checks every announced tensor was written, and renames into place.
  void finish();

  // A whole file from views already in memory.
  static void write_file(const std::filesystem::path& dest, const std::vector<std::pair<std::string, TensorView>>& tensors,
                         const std::map<std::string, std::string>& metadata = {});

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lowbit::safetensors
