// The safetensors reader: strict, because a loader that guesses hides corrupt checkpoints.
#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_set>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/io/safetensors.h"

namespace lowbit::safetensors {
namespace {

using nlohmann::json;

// The reference implementation caps the header at 100 MB; real headers are well under 10 MB.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
// Valid headers nest three levels (root / tensor / shape); anything much deeper is hostile.
constexpr int kMaxJsonDepth = 8;

// nlohmann::json keeps the last of duplicate keys silently, so a first pass over the text catches
// duplicates and absurd nesting before the tree is built. (A parse callback could do it in one pass,
// but nlohmann's callback parser rescans the parent object each time a child closes: quadratic in
// the number of tensors.)
class HeaderCheck : public nlohmann::json_sax<json> {
 public:
  explicit HeaderCheck(const std::string& label) : label_(label) {}

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    enter();
    keys_per_object_.emplace_back();
    return true;
  }
  bool key(string_t& key) override {
    if (!keys_per_object_.back().insert(key).second) throw Error("duplicate key in header", {.file = label_, .tensor = key, .offset = 8});
    return true;
  }
  bool end_object() override {
    keys_per_object_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override {
    enter();
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    throw Error(fmt::format("header is not valid JSON: {}", e.what()), {.file = label_, .offset = 8});
  }

 private:
  void enter() {
    if (++depth_ > kMaxJsonDepth)
      throw Error(fmt::format("header JSON nests deeper than {} levels", kMaxJsonDepth), {.file = label_, .offset = 8});
  }
  const std::string& label_;
  int depth_ = 0;
  std::vector<std::unordered_set<std::string>> keys_per_object_;
};

json parse_header_json(std::string_view text, const std::string& label) {
  HeaderCheck check(label);
  json::sax_parse(text.begin(), text.end(), &check);
  try {
    return json::parse(text.begin(), text.end());
  } catch (const json::exception& e) {
    throw Error(fmt::format("header is not valid JSON: {}", e.what()), {.file = label, .offset = 8});
  }
}

uint64_t read_u64_le(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}

TensorInfo parse_tensor_entry(const std::string& name, const json& entry, const std::string& label) {
  const ErrorContext where{.file = label, .tensor = name};
  auto fail = [&](std::string problem, std::string expected = {}) {
    ErrorContext c = where;
    c.expected = std::move(expected);
    throw Error(std::move(problem), c);
  };
  if (!entry.is_object()) fail("entry is not an object", "{dtype, shape, data_offsets}");
  for (const auto& [key, value] : entry.items())
    if (key != "dtype" && key != "shape" && key != "data_offsets") fail(fmt::format("unknown field '{}'", key));
  if (!entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
    fail("missing field", "dtype, shape and data_offsets");

  TensorInfo info;
  info.name = name;
  const auto& dtype = entry["dtype"];
  if (!dtype.is_string()) fail("dtype is not a string");
  auto parsed = dtype_from_safetensors(dtype.get<std::string>());
  if (!parsed) fail(fmt::format("unknown dtype '{}'", dtype.get<std::string>()), "F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL");
  info.dtype = *parsed;

  const auto& shape = entry["shape"];
  if (!shape.is_array()) fail("shape is not an array");
  for (const auto& d : shape) {
    if (!d.is_number_unsigned()) fail("shape holds a value that is not a non-negative integer");
    const uint64_t v = d.get<uint64_t>();
    if (v > uint64_t(INT64_MAX)) fail("shape dimension too large");
    info.shape.push_back(int64_t(v));
  }

  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned())
    fail("data_offsets is not a pair of non-negative integers", "[begin, end]");
  info.begin = offsets[0].get<uint64_t>();
  info.end = offsets[1].get<uint64_t>();
  if (info.end < info.begin) fail(fmt::format("data_offsets [{}, {}] end before begin", info.begin, info.end));

  int64_t elements = 0;
  try {
    elements = shape_elements(info.shape);
  } catch (const Error& e) {
    fail(e.problem());
  }
  const uint64_t size = dtype_size(info.dtype);
  if (elements > 0 && uint64_t(elements) > UINT64_MAX / size) fail("shape × dtype size overflows");
  if (uint64_t(elements) * size != info.size())
    fail(fmt::format("shape {} of {} does not match its {} data bytes", shape_to_string(info.shape), dtype.get<std::string>(), info.size()),
         fmt::format("{} bytes", uint64_t(elements) * size));
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
  File f;
  f.bytes_ = bytes;
  f.label_ = std::move(label);
  f.parse_all();
  return f;
}

void File::parse_all() {
  if (bytes_.size() < 8)
    throw Error(fmt::format("file is {} bytes, too short for the 8-byte header length", bytes_.size()), {.file = label_, .offset = 0});
  const uint64_t header_len = read_u64_le(bytes_.data());
  if (header_len > kMaxHeaderBytes)
    throw Error(fmt::format("header length {} exceeds the 100 MB limit", header_len), {.file = label_, .offset = 0});
  if (header_len > bytes_.size() - 8)
    throw Error(fmt::format("header length {} runs past the end of the file", header_len),
                {.file = label_, .offset = 0, .expected = fmt::format("at most {}", bytes_.size() - 8)});
  const std::string_view text(reinterpret_cast<const char*>(bytes_.data()) + 8, header_len);
  if (text.empty() || text.front() != '{') throw Error("header does not start with '{'", {.file = label_, .offset = 8});

  const json header = parse_header_json(text, label_);
  if (!header.is_object()) throw Error("header is not a JSON object", {.file = label_, .offset = 8});
  data_offset_ = 8 + header_len;
  const uint64_t data_size = bytes_.size() - data_offset_;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) throw Error("__metadata__ is not an object", {.file = label_, .offset = 8});
      for (const auto& [key, value] : entry.items()) {
        if (!value.is_string()) throw Error("__metadata__ value is not a string", {.file = label_, .tensor = key, .offset = 8});
        metadata_[key] = value.get<std::string>();
      }
      continue;
    }
    tensors_.push_back(parse_tensor_entry(name, entry, label_));
  }

  // The tensors must tile the data section exactly: sorted by offset, no gap, no overlap.
  std::ranges::sort(tensors_, [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t expected_begin = 0;
  for (const auto& t : tensors_) {
    if (t.begin < expected_begin)
      throw Error(fmt::format("data [{}, {}) overlaps the previous tensor", t.begin, t.end),
                  {.file = label_, .tensor = t.name, .offset = data_offset_ + t.begin, .expected = fmt::format("begin >= {}", expected_begin)});
    if (t.begin > expected_begin)
      throw Error(fmt::format("gap of {} bytes before this tensor's data", t.begin - expected_begin),
                  {.file = label_, .tensor = t.name, .offset = data_offset_ + t.begin, .expected = fmt::format("begin = {}", expected_begin)});
    if (t.end > data_size)
      throw Error(fmt::format("data [{}, {}) runs past the end of the data section ({} bytes)", t.begin, t.end, data_size),
                  {.file = label_, .tensor = t.name, .offset = data_offset_ + t.begin});
    expected_begin = t.end;
  }
  for (size_t i = 0; i < tensors_.size(); ++i) index_.emplace(tensors_[i].name, i);
  if (expected_begin != data_size)
    throw Error(fmt::format("{} bytes after the last tensor belong to no tensor", data_size - expected_begin),
                {.file = label_, .offset = data_offset_ + expected_begin});
}

const TensorInfo* File::find(std::string_view name) const {
  const auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

TensorView File::view(const TensorInfo& t) const {
  return TensorView{t.dtype, t.shape, bytes_.subspan(data_offset_ + t.begin, t.size())};
}

TensorView File::view(std::string_view name) const {
  const TensorInfo* t = find(name);
  if (!t) throw Error("no such tensor", {.file = label_, .tensor = std::string(name)});
  return view(*t);
}

}  // namespace lowbit::safetensors
