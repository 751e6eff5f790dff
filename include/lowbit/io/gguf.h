// GGUF v3: reader (zero-copy over a memory map) and streaming writer.
// Layout (all little-endian): "GGUF", u32 version, i64 tensor count, i64 metadata count, the metadata
// key/values, the tensor infos (name, n_dims, ne[] innermost first, ggml type, offset), zero padding to
// `general.alignment` (default 32), then the tensor data, each tensor starting at an aligned offset.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "lowbit/core/mapped_file.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/format.h"

namespace lowbit::gguf {

inline constexpr uint32_t kDefaultAlignment = 32;

// Metadata value types, numbered as in the file.
enum class ValueType : uint32_t {
  u8 = 0, i8 = 1, u16 = 2, i16 = 3, u32 = 4, i32 = 5, f32 = 6, boolean = 7, string = 8, array = 9,
  u64 = 10, i64 = 11, f64 = 12,
};
std::string_view value_type_name(ValueType type);

struct Value;

// An array holds values of one element type; arrays may nest.
struct Array {
  ValueType element_type = ValueType::u8;
  std::vector<Value> items;
};

struct Value {
  // Alternatives in ValueType order, so type() is the variant's index.
  std::variant<uint8_t, int8_t, uint16_t, int16_t, uint32_t, int32_t, float, bool, std::string, Array, uint64_t,
               int64_t, double>
      data;

  ValueType type() const { return ValueType(data.index()); }
  template <class T>
  const T* get_if() const { return std::get_if<T>(&data); }
  // Any integer alternative as int64 (nullopt for non-integers or u64 above INT64_MAX).
  std::optional<int64_t> as_int() const;
};

Value make_string_array(std::vector<std::string> strings);

struct KeyValue {
  std::string key;
  Value value;
};

struct TensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  Shape ne;                // dimensions, innermost (contiguous) first, as GGUF stores them
  uint64_t offset = 0;     // from the start of the data section
  uint64_t size = 0;       // bytes

  int64_t elements() const { return shape_elements(ne); }
};

// Bytes a tensor of `type` with dimensions `ne` occupies; throws if ne[0] is not a whole number of blocks.
uint64_t tensor_bytes(GgmlType type, const Shape& ne);

class File {
 public:
  // Maps and validates a GGUF file. Throws lowbit::Error naming the file, key or tensor, and offset.
  explicit File(const std::filesystem::path& path);
  // Parses bytes owned by the caller (which must outlive the File); `label` names them in errors.
  static File parse(std::span<const std::byte> bytes, std::string label);

  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // absolute offset of the data section
  const std::vector<KeyValue>& metadata() const { return metadata_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const Value* find(std::string_view key) const;
  const TensorInfo* find_tensor(std::string_view name) const;
  std::span<const std::byte> data(const TensorInfo& tensor) const;
  const std::string& label() const { return label_; }

 private:
  File() = default;
  void parse_all();

  std::shared_ptr<MappedFile> mapping_;  // null when parsing caller-owned bytes
  std::span<const std::byte> bytes_;
  std::string label_;
  uint32_t version_ = 0;
  uint32_t alignment_ = kDefaultAlignment;
  uint64_t data_offset_ = 0;
  std::vector<KeyValue> metadata_;
  std::vector<TensorInfo> tensors_;
};

// Streams a GGUF file: declare all metadata and tensors first, then write each tensor's bytes in the
// order declared. Written to a temporary name and renamed by finish(); destroying an unfinished
// writer leaves nothing at the destination.
class Writer {
 public:
  explicit Writer(std::filesystem::path dest);
  ~Writer();
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  // Sets a key; setting an existing key replaces it and moves it to the end, as ggml does.
  void set(std::string key, Value value);
  // Declares a tensor (ne innermost first). Must come before the first write_data().
  void add_tensor(std::string name, GgmlType type, Shape ne);
  // Writes the next declared tensor's bytes (the header goes out before the first one).
  void write_data(std::string_view name, std::span<const std::byte> bytes);
  // Writes the header if no tensor was declared, checks every tensor was written, and commits.
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace lowbit::gguf
