// The streaming safetensors writer. Data goes out as it comes; the header, which must come first in
// the file, is written last into space reserved for it.
#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_set>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"

namespace lowbit::safetensors {
namespace {

// Room for one header entry besides its name: {"dtype":"BF16","shape":[..4 dims..],"data_offsets":[b,e]},
// with every number at its widest (20 digits).
constexpr size_t kEntryReserve = 200;

}  // namespace

struct Writer::Impl {
  AtomicFile file;
  std::map<std::string, std::string> metadata;
  std::unordered_set<std::string> announced, written_names;  // hashed: a MoE checkpoint has tens of thousands
  std::vector<TensorInfo> written;
  size_t header_capacity = 0;

  explicit Impl(std::filesystem::path dest) : file(std::move(dest)) {}
  std::string label() const { return file.destination().string(); }

  // Composed entry by entry: an ordered_json object looks each key up linearly, which made a
  // header of n tensors cost n^2 string comparisons.
  std::string header_text() const {
    std::string text = "{";
    if (!metadata.empty()) text += "\"__metadata__\":" + nlohmann::json(metadata).dump();
    for (const auto& t : written) {
      if (text.size() > 1) text += ',';
      text += nlohmann::json(t.name).dump();
      text += ':';
      text += nlohmann::ordered_json{{"dtype", std::string(dtype_info(t.dtype).safetensors_name)},
                                     {"shape", t.shape},
                                     {"data_offsets", {t.begin, t.end}}}
                  .dump();
    }
    return text + "}";
  }
};

Writer::Writer(std::filesystem::path dest, const std::vector<std::string>& names, std::map<std::string, std::string> metadata)
    : impl_(std::make_unique<Impl>(std::move(dest))) {
  auto& s = *impl_;
  s.metadata = std::move(metadata);
  s.header_capacity = 2 + nlohmann::json(s.metadata).dump().size() + 20;
  for (const auto& name : names) {
    if (name.empty() || name == "__metadata__") throw Error("invalid tensor name", {.file = s.label(), .tensor = name});
    if (!s.announced.insert(name).second) throw Error("duplicate tensor name", {.file = s.label(), .tensor = name});
    s.header_capacity += nlohmann::json(name).dump().size() + kEntryReserve;
  }
  s.header_capacity = (s.header_capacity + 7) / 8 * 8;  // keeps the data section 8-byte aligned
  s.file.write_zeros(8 + s.header_capacity);
}

Writer::~Writer() = default;

void Writer::write(std::string_view name, const TensorView& tensor) {
  auto& s = *impl_;
  const std::string key(name);
  if (!s.announced.count(key)) throw Error("tensor was not announced to the writer", {.file = s.label(), .tensor = key});
  if (s.written_names.contains(key)) throw Error("tensor written twice", {.file = s.label(), .tensor = key});
  const uint64_t size = uint64_t(shape_elements(tensor.shape)) * dtype_size(tensor.dtype);
  if (tensor.bytes.size() != size)
    throw Error(fmt::format("{} bytes for shape {}", tensor.bytes.size(), shape_to_string(tensor.shape)),
                {.file = s.label(), .tensor = key, .expected = fmt::format("{} bytes", size)});
  const uint64_t begin = s.file.position() - 8 - s.header_capacity;
  s.file.write(tensor.bytes);
  s.written.push_back({key, tensor.dtype, tensor.shape, begin, begin + size});
  s.written_names.insert(key);
}

void Writer::finish() {
  auto& s = *impl_;
  if (s.written.size() != s.announced.size()) {
    for (const auto& name : s.announced)
      if (!s.written_names.contains(name))
        throw Error(fmt::format("only {} of {} tensors were written", s.written.size(), s.announced.size()),
                    {.file = s.label(), .tensor = name});
  }
  std::string text = s.header_text();
  if (text.size() > s.header_capacity)
    throw Error(fmt::format("header of {} bytes exceeds the {} reserved", text.size(), s.header_capacity), {.file = s.label()});
  text.append(s.header_capacity - text.size(), ' ');  // trailing spaces are allowed by the format
  const uint64_t length = text.size();
  s.file.write_at(0, std::as_bytes(std::span(&length, 1)));
  s.file.write_at(8, std::as_bytes(std::span(text)));
  s.file.commit();
}

void Writer::write_file(const std::filesystem::path& dest, const std::vector<std::pair<std::string, TensorView>>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  std::vector<std::string> names;
  for (const auto& [name, view] : tensors) names.push_back(name);
  Writer w(dest, names, metadata);
  for (const auto& [name, view] : tensors) w.write(name, view);
  w.finish();
}

}  // namespace lowbit::safetensors
