// The GGUF reader: strict, zero-copy over the mapped bytes. Every length and count is checked against
// the bytes left before anything is allocated, so a hostile header costs no more memory than its size.
// Beyond ggml's own checks (src/gguf.cpp, gguf_init_from_file_impl) it accepts nested arrays (as
// gguf-py writes them), tensor names up to 256 bytes, and rejects bool bytes other than 0 and 1.
#include <fmt/format.h>

#include <cstring>
#include <unordered_set>

#include "io/gguf_format.h"
#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit::gguf {
namespace {

// A read position over the file with the context that errors need: file label and current key or tensor.
class Cursor {
 public:
  Cursor(std::span<const std::byte> bytes, const std::string& label) : bytes_(bytes), label_(label) {}

  uint64_t position() const { return pos_; }
  uint64_t remaining() const { return bytes_.size() - pos_; }
  void set_subject(std::string subject) { subject_ = std::move(subject); }

  [[noreturn]] void fail(std::string problem, std::string expected = {}, std::optional<uint64_t> at = {}) const {
    throw Error(std::move(problem), {.file = label_, .tensor = subject_, .offset = at ? at : pos_, .expected = std::move(expected)});
  }

  // Throws unless `count` more bytes exist; `what` names the field being read.
  void need(uint64_t count, std::string_view what) const {
    if (count > remaining())
      fail(fmt::format("{} runs past the end of the file ({} bytes needed, {} left)", what, count, remaining()),
           fmt::format("a file of at least {} bytes", pos_ + count));
  }

  template <class T>
  T read(std::string_view what) {
    need(sizeof(T), what);
    T value;
    std::memcpy(&value, bytes_.data() + pos_, sizeof(T));  // little-endian on every supported host
    pos_ += sizeof(T);
    return value;
  }

  // A GGUF string: u64 length, then that many bytes (no NUL terminator; NULs inside are kept).
  std::string_view read_string(std::string_view what) {
    const uint64_t start = pos_;
    const uint64_t length = read<uint64_t>(what);
    if (length > remaining())
      fail(fmt::format("{} of {} bytes runs past the end of the file ({} left)", what, length, remaining()),
           fmt::format("a length of at most {}", remaining()), start);
    std::string_view text(reinterpret_cast<const char*>(bytes_.data()) + pos_, size_t(length));
    pos_ += length;
    return text;
  }

  // A count of items each at least `min_item_bytes` long: one that cannot fit in the rest of the file is
  // rejected here, before the caller reserves memory for it.
  uint64_t read_count(std::string_view what, uint64_t min_item_bytes) {
    const uint64_t start = pos_;
    const uint64_t count = read<uint64_t>(what);
    if (min_item_bytes > 0 && count > remaining() / min_item_bytes)
      fail(fmt::format("{} {} cannot fit in the {} bytes left", what, count, remaining()),
           fmt::format("at most {}", remaining() / min_item_bytes), start);
    return count;
  }

 private:
  std::span<const std::byte> bytes_;
  const std::string& label_;
  std::string subject_;
  uint64_t pos_ = 0;
};

ValueType read_value_type(Cursor& in, std::string_view what) {
  const uint64_t at = in.position();
  const uint32_t id = in.read<uint32_t>(what);
  if (!format::is_value_type(id)) in.fail(fmt::format("{} {} is not a GGUF value type", what, id), "0 to 12", at);
  return ValueType(id);
}

Value read_value(Cursor& in, ValueType type, int array_depth);

// Array body after its tag: i32 element type, u64 count, then the elements. A nested array's elements
// each carry their own element type and count.
Array read_array(Cursor& in, int depth) {
  if (depth > format::kMaxArrayDepth)
    in.fail(fmt::format("arrays nest deeper than {} levels", format::kMaxArrayDepth));
  Array array;
  array.element_type = read_value_type(in, "array element type");
  const uint64_t count = in.read_count("array length", format::min_value_bytes(array.element_type));
  array.items.reserve(size_t(count));
  for (uint64_t i = 0; i < count; ++i) array.items.push_back(read_value(in, array.element_type, depth));
  return array;
}

template <class T>
Value read_scalar(Cursor& in, std::string_view what) {
  return Value{in.read<T>(what)};
}

Value read_value(Cursor& in, ValueType type, int array_depth) {
  switch (type) {
    case ValueType::u8: return read_scalar<uint8_t>(in, "u8 value");
    case ValueType::i8: return read_scalar<int8_t>(in, "i8 value");
    case ValueType::u16: return read_scalar<uint16_t>(in, "u16 value");
    case ValueType::i16: return read_scalar<int16_t>(in, "i16 value");
    case ValueType::u32: return read_scalar<uint32_t>(in, "u32 value");
    case ValueType::i32: return read_scalar<int32_t>(in, "i32 value");
    case ValueType::f32: return read_scalar<float>(in, "f32 value");
    case ValueType::u64: return read_scalar<uint64_t>(in, "u64 value");
    case ValueType::i64: return read_scalar<int64_t>(in, "i64 value");
    case ValueType::f64: return read_scalar<double>(in, "f64 value");
    case ValueType::boolean: {
      // One byte; anything but 0 or 1 is corruption (and would be undefined behaviour as a C++ bool).
      const uint64_t at = in.position();
      const uint8_t byte = in.read<uint8_t>("bool value");
      if (byte > 1) in.fail(fmt::format("bool value is {}", byte), "0 or 1", at);
      return Value{byte == 1};
    }
    case ValueType::string: return Value{std::string(in.read_string("string value"))};
    case ValueType::array: return Value{read_array(in, array_depth + 1)};
  }
  in.fail("unreachable value type");
}

// A tensor info: name, u32 n_dims, i64 ne[n_dims], i32 ggml type, u64 offset into the data section.
TensorInfo read_tensor_info(Cursor& in, uint64_t index) {
  TensorInfo info;
  in.set_subject(fmt::format("#{}", index));
  const uint64_t name_at = in.position();
  info.name = std::string(in.read_string("tensor name"));
  if (info.name.empty()) in.fail("tensor name is empty", "a non-empty name", name_at);
  if (info.name.size() > format::kMaxTensorNameBytes)
    in.fail(fmt::format("tensor name is {} bytes long", info.name.size()),
            fmt::format("at most {} bytes", format::kMaxTensorNameBytes), name_at);
  in.set_subject(info.name);

  const uint64_t dims_at = in.position();
  const uint32_t n_dims = in.read<uint32_t>("n_dims");
  if (n_dims == 0 || n_dims > format::kMaxDims) in.fail(fmt::format("n_dims is {}", n_dims), "1 to 4", dims_at);
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t at = in.position();
    const int64_t extent = in.read<int64_t>("dimension");
    if (extent < 0) in.fail(fmt::format("ne[{}] = {} is negative", d, extent), "a non-negative extent", at);
    info.ne.push_back(extent);
  }

  const uint64_t type_at = in.position();
  const uint32_t type_id = in.read<uint32_t>("ggml type");
  if (!ggml_type_info(type_id)) in.fail(fmt::format("ggml type id {} is not defined", type_id), "a ggml_type id", type_at);
  info.type = GgmlType(type_id);
  try {
    info.size = tensor_bytes(info.type, info.ne);  // checks element overflow and ne[0] % block size
  } catch (const Error& e) {
    in.fail(fmt::format("{} {}: {}", ggml_type_name(info.type), shape_to_string(info.ne), e.problem()),
            e.context().expected, dims_at);
  }
  info.offset = in.read<uint64_t>("tensor offset");
  return info;
}

}  // namespace

File::File(const std::filesystem::path& path) {
  mapping_ = std::make_shared<MappedFile>(path);
  bytes_ = mapping_->bytes();
  label_ = path.string();
  parse_all();
}

File File::parse(std::span<const std::byte> bytes, std::string label) {
  File file;
  file.bytes_ = bytes;
  file.label_ = std::move(label);
  file.parse_all();
  return file;
}

void File::parse_all() {
  Cursor in(bytes_, label_);
  // Header: "GGUF", u32 version, i64 n_tensors, i64 n_kv (24 bytes).
  in.need(4, "magic");
  if (std::memcmp(bytes_.data(), format::kMagic.data(), 4) != 0) in.fail("not a GGUF file", "magic \"GGUF\"");
  in.read<uint32_t>("magic");
  version_ = in.read<uint32_t>("version");
  // There is no endianness flag: a big-endian file's small version shows up in the high half (ggml's test).
  if ((version_ & 0xffff) == 0)
    in.fail(fmt::format("version {:#x} looks byte-swapped: big-endian GGUF files are not supported", version_),
            "a little-endian file", 4);
  if (version_ != 2 && version_ != 3) in.fail(fmt::format("GGUF version {} is not supported", version_), "version 2 or 3", 4);
  const uint64_t counts_at = in.position();
  const int64_t n_tensors = in.read<int64_t>("tensor count");
  const int64_t n_kv = in.read<int64_t>("metadata count");
  // Smallest encodings: a KV is key length 8 + key 1 + type 4 + value 1; a tensor info is
  // name length 8 + name 1 + n_dims 4 + ne 8 + type 4 + offset 8.
  constexpr uint64_t kMinKvBytes = 14, kMinTensorInfoBytes = 33;
  if (n_tensors < 0) in.fail(fmt::format("tensor count {} is negative", n_tensors), "a count >= 0", counts_at);
  if (n_kv < 0) in.fail(fmt::format("metadata count {} is negative", n_kv), "a count >= 0", counts_at + 8);
  if (uint64_t(n_kv) > in.remaining() / kMinKvBytes)
    in.fail(fmt::format("metadata count {} cannot fit in the {} bytes left", n_kv, in.remaining()),
            fmt::format("at most {}", in.remaining() / kMinKvBytes), counts_at + 8);
  if (uint64_t(n_tensors) > in.remaining() / kMinTensorInfoBytes)
    in.fail(fmt::format("tensor count {} cannot fit in the {} bytes left", n_tensors, in.remaining()),
            fmt::format("at most {}", in.remaining() / kMinTensorInfoBytes), counts_at);

  // Key/values: string key, i32 value type, value. Keys are views into the bytes, which outlive parsing.
  std::unordered_set<std::string_view> keys;
  metadata_.reserve(size_t(n_kv));
  for (int64_t i = 0; i < n_kv; ++i) {
    in.set_subject(fmt::format("metadata #{}", i));
    const uint64_t key_at = in.position();
    const std::string_view key = in.read_string("key");
    if (key.empty()) in.fail("metadata key is empty", "a non-empty key", key_at);
    in.set_subject(std::string(key));
    if (!keys.insert(key).second) in.fail("duplicate metadata key", "each key once", key_at);
    const ValueType type = read_value_type(in, "value type");
    metadata_.push_back({std::string(key), read_value(in, type, 0)});
  }
  in.set_subject({});

  if (const Value* alignment = find(format::kAlignmentKey)) {
    in.set_subject(std::string(format::kAlignmentKey));
    const auto* value = alignment->get_if<uint32_t>();
    if (!value) in.fail(fmt::format("alignment is of type {}", value_type_name(alignment->type())), "u32");
    if (!format::is_power_of_two(*value)) in.fail(fmt::format("alignment {} is not a power of two", *value), "a power of two");
    alignment_ = *value;
    in.set_subject({});
  }

  std::unordered_set<std::string> names;
  tensors_.reserve(size_t(n_tensors));
  for (int64_t i = 0; i < n_tensors; ++i) {
    const uint64_t info_at = in.position();
    tensors_.push_back(read_tensor_info(in, uint64_t(i)));
    if (!names.insert(tensors_.back().name).second)
      throw Error("duplicate tensor name", {.file = label_, .tensor = tensors_.back().name, .offset = info_at, .expected = "each name once"});
  }

  // The data section starts at the end of the tensor infos rounded up to the alignment (ggml pads only
  // when there are tensors, so a tensor-less file may end right after its metadata).
  data_offset_ = format::align_up(in.position(), alignment_);
  if (n_tensors > 0 && data_offset_ > bytes_.size())
    throw Error("data section starts past the end of the file",
                {.file = label_, .offset = in.position(), .expected = fmt::format("a file of at least {} bytes", data_offset_)});

  // ggml requires each offset to be the padded running sum in tensor-info order: no gaps, no overlaps.
  const uint64_t data_bytes = n_tensors > 0 ? bytes_.size() - data_offset_ : 0;
  uint64_t expected_offset = 0;
  for (const TensorInfo& t : tensors_) {
    const ErrorContext where{.file = label_, .tensor = t.name, .offset = data_offset_ + expected_offset};
    auto fail = [&](std::string problem, std::string expected) {
      ErrorContext c = where;
      c.expected = std::move(expected);
      throw Error(std::move(problem), c);
    };
    if (t.offset % alignment_ != 0)
      fail(fmt::format("data offset {} is not aligned to {}", t.offset, alignment_), fmt::format("offset {}", expected_offset));
    if (t.offset != expected_offset)
      fail(fmt::format("data offset {} leaves a gap or overlaps the previous tensor", t.offset),
           fmt::format("offset {}, right after the previous tensor's padded data", expected_offset));
    if (t.offset > data_bytes || t.size > data_bytes - t.offset)
      fail(fmt::format("{} data bytes run past the end of the file", t.size),
           fmt::format("a file of at least {} bytes", data_offset_ + t.offset + t.size));
    // t.size <= data_bytes here, so the padded sum stays far below 2^64.
    expected_offset += format::align_up(t.size, alignment_);
  }

  // Nothing follows the last tensor but its padding to the alignment (ggml and gguf-py pad every tensor;
  // a writer may leave the last unpadded). More means the counts are wrong and every offset is off,
  // as a tensor count one short reads the last tensor info as data: refuse it, as safetensors does.
  const uint64_t end = n_tensors > 0 ? data_offset_ + expected_offset : data_offset_;
  if (bytes_.size() > end)
    throw Error(fmt::format("{} bytes follow the last tensor's data", bytes_.size() - end),
                {.file = label_, .offset = end, .expected = fmt::format("a file of at most {} bytes", end)});
}

const Value* File::find(std::string_view key) const {
  for (const auto& kv : metadata_)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

const TensorInfo* File::find_tensor(std::string_view name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

std::span<const std::byte> File::data(const TensorInfo& tensor) const {
  // Infos from this file were checked while parsing; this guards against one from another file.
  const uint64_t data_bytes = data_offset_ <= bytes_.size() ? bytes_.size() - data_offset_ : 0;
  if (tensor.offset > data_bytes || tensor.size > data_bytes - tensor.offset)
    throw Error("tensor data lies outside this file", {.file = label_, .tensor = tensor.name, .offset = data_offset_ + tensor.offset});
  return bytes_.subspan(size_t(data_offset_ + tensor.offset), size_t(tensor.size));
}

}  // namespace lowbit::gguf
