// The streaming GGUF writer. It lays files out as ggml's gguf_write_to_buf does, so re-writing a file
// that ggml wrote gives the same bytes: header, KVs in insertion order, tensor infos, zero padding to
// the alignment, then each tensor's data followed by zeros up to the alignment (after the last one too).
#include <fmt/format.h>

#include <cstring>
#include <unordered_set>

#include "io/gguf_format.h"
#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"

namespace lowbit::gguf {
namespace {

using Bytes = std::vector<std::byte>;

void append_raw(Bytes& out, const void* data, size_t size) {
  if (size == 0) return;
  const size_t at = out.size();
  out.resize(at + size);
  std::memcpy(out.data() + at, data, size);
}

template <class T>
void append(Bytes& out, T value) {
  append_raw(out, &value, sizeof(T));  // little-endian host
}

void append_string(Bytes& out, std::string_view text) {
  append<uint64_t>(out, text.size());
  append_raw(out, text.data(), text.size());
}

// A value without its type tag. An array is its element type, count and elements; a nested array's
// elements repeat that form, which is how gguf-py writes arrays of arrays.
void append_payload(Bytes& out, const Value& value) {
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, std::string>) {
          append_string(out, v);
        } else if constexpr (std::is_same_v<T, Array>) {
          append<uint32_t>(out, uint32_t(v.element_type));
          append<uint64_t>(out, v.items.size());
          for (const Value& item : v.items) append_payload(out, item);
        } else if constexpr (std::is_same_v<T, bool>) {
          append<uint8_t>(out, v ? 1 : 0);
        } else {
          append<T>(out, v);
        }
      },
      value.data);
}

// Rejects what the reader would reject, so the writer never produces a file lowbit cannot read.
void check_value(const Value& value, int depth, const ErrorContext& where) {
  const Array* array = value.get_if<Array>();
  if (!array) return;
  if (depth + 1 > format::kMaxArrayDepth)
    throw Error(fmt::format("arrays nest deeper than {} levels", format::kMaxArrayDepth), where);
  if (!format::is_value_type(uint32_t(array->element_type)))
    throw Error(fmt::format("array element type {} is not a GGUF value type", uint32_t(array->element_type)), where);
  for (const Value& item : array->items) {
    if (item.type() != array->element_type)
      throw Error(fmt::format("array of {} holds a {}", value_type_name(array->element_type), value_type_name(item.type())),
                  where);
    check_value(item, depth + 1, where);
  }
}

}  // namespace

struct Writer::Impl {
  explicit Impl(std::filesystem::path dest) : out(std::move(dest)) {}

  ErrorContext at(std::string subject, std::string expected = {}) const {
    return {.file = out.destination().string(), .tensor = std::move(subject), .expected = std::move(expected)};
  }
  void check_open(std::string_view action, const std::string& subject) const {
    if (finished) throw Error(fmt::format("cannot {}: the writer has finished", action), at(subject));
    if (broken) throw Error(fmt::format("cannot {}: an earlier write failed", action), at(subject));
  }

  void write_header();

  AtomicFile out;
  std::vector<KeyValue> metadata;
  std::vector<TensorInfo> tensors;
  std::unordered_set<std::string> tensor_names;
  uint32_t alignment = kDefaultAlignment;
  bool header_written = false;
  size_t next_tensor = 0;  // index of the next tensor write_data expects
  bool finished = false;
  bool broken = false;  // a write threw part-way: the temporary file's contents are unknown
};

// "GGUF", u32 version, i64 n_tensors, i64 n_kv, KVs (key, i32 type, payload), tensor infos
// (name, u32 n_dims, i64 ne[], i32 type, u64 offset), zeros to the alignment.
void Writer::Impl::write_header() {
  // Each tensor starts where the previous one's padded data ends (what ggml's reader requires). Computed
  // now, as general.alignment may be set after the tensors are declared.
  uint64_t offset = 0;
  for (TensorInfo& t : tensors) {
    t.offset = offset;
    offset += format::align_up(t.size, alignment);
  }
  Bytes header;
  append_raw(header, format::kMagic.data(), format::kMagic.size());
  append<uint32_t>(header, format::kVersion);
  append<int64_t>(header, int64_t(tensors.size()));
  append<int64_t>(header, int64_t(metadata.size()));
  for (const KeyValue& kv : metadata) {
    append_string(header, kv.key);
    append<uint32_t>(header, uint32_t(kv.value.type()));
    append_payload(header, kv.value);
  }
  for (const TensorInfo& t : tensors) {
    append_string(header, t.name);
    append<uint32_t>(header, uint32_t(t.ne.size()));
    for (int64_t extent : t.ne) append<int64_t>(header, extent);
    append<uint32_t>(header, uint32_t(t.type));
    append<uint64_t>(header, t.offset);
  }
  broken = true;
  out.write(header);
  out.write_zeros(size_t(format::align_up(out.position(), alignment) - out.position()));
  broken = false;
  header_written = true;
}

Writer::Writer(std::filesystem::path dest) : impl_(std::make_unique<Impl>(std::move(dest))) {}

Writer::~Writer() = default;  // an unfinished AtomicFile removes its temporary file

void Writer::set(std::string key, Value value) {
  Impl& w = *impl_;
  w.check_open("set a key", key);
  if (w.header_written) throw Error("cannot set a key after tensor data was written", w.at(key));
  if (key.empty()) throw Error("metadata key is empty", w.at(key));
  check_value(value, 0, w.at(key));
  if (key == format::kAlignmentKey) {
    const auto* alignment = value.get_if<uint32_t>();
    if (!alignment) throw Error(fmt::format("alignment is of type {}", value_type_name(value.type())), w.at(key, "u32"));
    if (!format::is_power_of_two(*alignment))
      throw Error(fmt::format("alignment {} is not a power of two", *alignment), w.at(key, "a power of two"));
    w.alignment = *alignment;
  }
  // As gguf_set_val_*: a replaced key leaves its place and goes to the end.
  std::erase_if(w.metadata, [&](const KeyValue& kv) { return kv.key == key; });
  w.metadata.push_back({std::move(key), std::move(value)});
}

void Writer::add_tensor(std::string name, GgmlType type, Shape ne) {
  Impl& w = *impl_;
  w.check_open("add a tensor", name);
  if (w.header_written) throw Error("cannot declare a tensor after tensor data was written", w.at(name));
  if (name.empty() || name.size() > format::kMaxTensorNameBytes)
    throw Error(fmt::format("tensor name is {} bytes long", name.size()),
                w.at(name, fmt::format("1 to {} bytes", format::kMaxTensorNameBytes)));
  if (w.tensor_names.contains(name)) throw Error("duplicate tensor name", w.at(name));

  TensorInfo info{.name = std::move(name), .type = type, .ne = std::move(ne)};
  try {
    info.size = tensor_bytes(type, info.ne);
  } catch (const Error& e) {
    throw Error(e.problem(), w.at(info.name, e.context().expected));
  }
  w.tensor_names.insert(info.name);
  w.tensors.push_back(std::move(info));
}

void Writer::write_data(std::string_view name, std::span<const std::byte> bytes) {
  Impl& w = *impl_;
  w.check_open("write tensor data", std::string(name));
  if (w.next_tensor >= w.tensors.size())
    throw Error("every declared tensor was already written", w.at(std::string(name)));
  const TensorInfo& t = w.tensors[w.next_tensor];
  if (name != t.name)
    throw Error("tensor written out of declaration order",
                w.at(std::string(name), fmt::format("tensor '{}' next", t.name)));
  if (bytes.size() != t.size)
    throw Error(fmt::format("{} data bytes given for {} {}", bytes.size(), ggml_type_name(t.type), shape_to_string(t.ne)),
                w.at(t.name, fmt::format("{} bytes", t.size)));
  if (!w.header_written) w.write_header();
  w.broken = true;
  w.out.write(bytes);
  w.out.write_zeros(size_t(format::align_up(t.size, w.alignment) - t.size));
  w.broken = false;
  ++w.next_tensor;
}

void Writer::finish() {
  Impl& w = *impl_;
  w.check_open("finish", {});
  if (w.next_tensor < w.tensors.size())
    throw Error(fmt::format("{} of {} declared tensors were never written", w.tensors.size() - w.next_tensor, w.tensors.size()),
                w.at(w.tensors[w.next_tensor].name));
  if (!w.header_written) w.write_header();
  w.broken = true;
  w.out.commit();
  w.broken = false;
  w.finished = true;
}

}  // namespace lowbit::gguf
