#include "lowbit/io/imatrix.h"

#include <fmt/format.h>

#include <cstring>
#include <algorithm>
#include <cmath>
#include <map>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/io/gguf.h"

namespace lowbit {
namespace {

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// Reads little-endian fields of the legacy format, failing clearly at the end of the file.
class LegacyReader {
 public:
  LegacyReader(std::span<const std::byte> bytes, std::string label) : bytes_(bytes), label_(std::move(label)) {}
  int32_t i32(const std::string& what) {
    int32_t v;
    std::memcpy(&v, take(4, what).data(), 4);
    return v;
  }
  std::span<const std::byte> take(uint64_t n, const std::string& what) {
    if (n > bytes_.size() - pos_)
      throw Error(fmt::format("{} runs past the end of the file", what), {.file = label_, .offset = pos_});
    auto out = bytes_.subspan(pos_, n);
    pos_ += n;
    return out;
  }
  bool at_end() const { return pos_ == bytes_.size(); }
  uint64_t position() const { return pos_; }

 private:
  std::span<const std::byte> bytes_;
  std::string label_;
  uint64_t pos_ = 0;
};

// The quantizers weigh each column's error by its importance: a NaN or Inf makes every scale of the
// tensor NaN, a negative one inverts the search, and a vector of zeros (an expert or weight that saw
// only zero activations) makes every candidate scale score 0, giving an all-zero tensor. llama.cpp
// replaces only an expert with no tokens (count 0) by ones, as load_gguf does; the rest is refused.
void check_importance(const ImatrixEntry& e, const std::string& label) {
  for (int64_t x = 0; x < e.experts; ++x) {
    const float* w = e.weights.data() + x * e.columns;
    const std::string where = e.experts > 1 ? fmt::format("expert {}, ", x) : "";
    for (int64_t c = 0; c < e.columns; ++c)
      if (!std::isfinite(w[c]) || w[c] < 0)
        throw Error(fmt::format("importance {} at {}column {}", w[c], where, c),
                    {.file = label, .tensor = e.name, .expected = "finite, non-negative importances"});
    if (std::all_of(w, w + e.columns, [](float v) { return v == 0.0f; }))
      throw Error(fmt::format("{}every importance is 0: quantizing with them would give an all-zero tensor",
                              e.experts > 1 ? fmt::format("expert {}: ", x) : ""),
                  {.file = label, .tensor = e.name, .expected = "an importance matrix collected with activations reaching this weight"});
  }
}

}  // namespace

ImportanceMatrix ImportanceMatrix::load(const std::filesystem::path& path) {
  const MappedFile file(path);
  const bool is_gguf = file.size() >= 4 && std::memcmp(file.bytes().data(), "GGUF", 4) == 0;
  ImportanceMatrix m = is_gguf ? load_gguf(path) : load_legacy(path);
  m.build_index(path.string());
  return m;
}

ImportanceMatrix ImportanceMatrix::load_gguf(const std::filesystem::path& path) {
  const gguf::File file(path);
  ImportanceMatrix m;
  if (const auto* v = file.find("imatrix.datasets"))
    if (const auto* a = v->get_if<gguf::Array>())
      for (const auto& item : a->items)
        if (const auto* s = item.get_if<std::string>()) m.datasets_.push_back(*s);
  if (const auto* v = file.find("imatrix.chunk_count")) m.chunk_count_ = v->as_int().value_or(0);

  const std::string label = path.string();
  std::map<std::string, std::pair<const gguf::TensorInfo*, const gguf::TensorInfo*>> pairs;  // sums, counts
  for (const auto& t : file.tensors()) {
    if (ends_with(t.name, ".in_sum2")) pairs[t.name.substr(0, t.name.size() - 8)].first = &t;
    else if (ends_with(t.name, ".counts")) pairs[t.name.substr(0, t.name.size() - 7)].second = &t;
  }
  for (const auto& [name, pair] : pairs) {
    const auto [sums, counts] = pair;
    if (!sums || !counts) throw Error("in_sum2 and counts must come in pairs", {.file = label, .tensor = name});
    if (sums->type != GgmlType::F32 || counts->type != GgmlType::F32)
      throw Error("imatrix tensors must be F32", {.file = label, .tensor = name});
    const int64_t columns = sums->ne[0];
    const int64_t experts = sums->ne.size() > 1 ? sums->ne[1] : 1;
    // The quantizers read `columns` weights per expert: an empty or 3-D in_sum2 would leave them short.
    if (columns < 1 || experts < 1 || sums->elements() != columns * experts)
      throw Error(fmt::format("in_sum2 has shape {}", shape_to_string(sums->ne)),
                  {.file = label, .tensor = name + ".in_sum2", .expected = "[columns, experts], both at least 1"});
    if (counts->elements() != experts)
      throw Error(fmt::format("{} counts for {} experts", counts->elements(), experts), {.file = label, .tensor = name + ".counts"});
    const auto* sum = reinterpret_cast<const float*>(file.data(*sums).data());
    const auto* count = reinterpret_cast<const float*>(file.data(*counts).data());
    ImatrixEntry e{name, columns, experts, std::vector<float>(size_t(columns * experts))};
    // As llama-quantize: the mean, or 1 for an expert that saw no tokens.
    for (int64_t x = 0; x < experts; ++x)
      for (int64_t c = 0; c < columns; ++c) {
        float s, n;
        std::memcpy(&s, sum + x * columns + c, 4);
        std::memcpy(&n, count + x, 4);
        e.weights[size_t(x * columns + c)] = n == 0 ? 1.0f : s / n;
      }
    check_importance(e, label);
    m.entries_.push_back(std::move(e));
  }
  return m;
}

ImportanceMatrix ImportanceMatrix::load_legacy(const std::filesystem::path& path) {
  const MappedFile file(path);
  const std::string label = path.string();
  LegacyReader in(file.bytes(), label);
  ImportanceMatrix m;
  const int32_t n_entries = in.i32("entry count");
  if (n_entries < 0 || uint64_t(n_entries) > file.size() / 12)
    throw Error(fmt::format("implausible entry count {}", n_entries), {.file = label, .offset = 0});
  for (int32_t i = 0; i < n_entries; ++i) {
    const int32_t len = in.i32("name length");
    if (len <= 0 || len > 4096) throw Error(fmt::format("implausible name length {}", len), {.file = label, .offset = in.position() - 4});
    const auto name_bytes = in.take(uint64_t(len), "name");
    std::string name(reinterpret_cast<const char*>(name_bytes.data()), name_bytes.size());
    const int32_t ncall = in.i32("ncall");
    const int32_t nval = in.i32("value count");
    if (nval <= 0) throw Error(fmt::format("value count {}", nval), {.file = label, .tensor = name, .offset = in.position() - 4});
    const auto values = in.take(uint64_t(nval) * 4, "values");
    ImatrixEntry e{name, nval, 1, std::vector<float>(size_t(nval))};
    std::memcpy(e.weights.data(), values.data(), values.size());
    // Stored as mean × ncall; llama-quantize divides by ncall again.
    if (ncall > 0)
      for (auto& w : e.weights) w /= float(ncall);
    check_importance(e, label);
    m.entries_.push_back(std::move(e));
  }
  if (!in.at_end()) {
    m.chunk_count_ = in.i32("last chunk");
    if (!in.at_end()) {
      const int32_t len = in.i32("dataset name length");
      if (len < 0) throw Error("negative dataset name length", {.file = label, .offset = in.position() - 4});
      const auto ds = in.take(uint64_t(len), "dataset name");
      m.datasets_.emplace_back(reinterpret_cast<const char*>(ds.data()), ds.size());
    }
  }
  return m;
}

void write_imatrix_gguf(const std::filesystem::path& path, std::vector<ImatrixSums> entries, const std::vector<std::string>& datasets,
                        uint32_t chunk_count, uint32_t chunk_size) {
  std::ranges::sort(entries, [](const ImatrixSums& a, const ImatrixSums& b) { return a.name < b.name; });
  gguf::Writer w(path);
  w.set("general.type", {std::string("imatrix")});
  w.set("imatrix.datasets", gguf::make_string_array(datasets));
  w.set("imatrix.chunk_count", {chunk_count});
  w.set("imatrix.chunk_size", {chunk_size});
  for (const auto& e : entries) {
    if (e.experts() < 1 || e.columns() < 1 || e.sums.size() != size_t(e.columns() * e.experts()))
      throw Error(fmt::format("{} sums for {} experts", e.sums.size(), e.experts()), {.file = path.string(), .tensor = e.name});
    // ggml writes a tensor's dimensions up to its last one above 1: [columns] and [1] for one expert.
    const bool one = e.experts() == 1;
    w.add_tensor(e.name + ".in_sum2", GgmlType::F32, one ? Shape{e.columns()} : Shape{e.columns(), e.experts()});
    w.add_tensor(e.name + ".counts", GgmlType::F32, one ? Shape{1} : Shape{1, e.experts()});
  }
  for (const auto& e : entries) {
    w.write_data(e.name + ".in_sum2", std::as_bytes(std::span(e.sums)));
    w.write_data(e.name + ".counts", std::as_bytes(std::span(e.counts)));
  }
  w.finish();
}

void write_imatrix_dat(const std::filesystem::path& path, std::vector<ImatrixSums> entries, const std::vector<std::string>& datasets,
                       uint32_t chunk_count) {
  std::ranges::sort(entries, [](const ImatrixSums& a, const ImatrixSums& b) { return a.name < b.name; });
  AtomicFile out(path);
  auto i32 = [&](int64_t v) {
    const auto narrow = int32_t(v);
    out.write(&narrow, 4);
  };
  // llama-quantize divides the stored values by ncall: any positive ncall gives back the mean.
  const int32_t ncall = int32_t(std::max<uint32_t>(chunk_count, 1));
  i32(int64_t(entries.size()));
  for (const auto& e : entries) {
    if (e.experts() < 1 || e.sums.size() != size_t(e.columns() * e.experts()))
      throw Error(fmt::format("{} sums for {} experts", e.sums.size(), e.experts()), {.file = path.string(), .tensor = e.name});
    if (std::ranges::all_of(e.counts, [](float c) { return c <= 0; }))
      throw Error("no rows were seen for this weight", {.file = path.string(), .tensor = e.name});
    i32(int64_t(e.name.size()));
    out.write(e.name.data(), e.name.size());
    i32(ncall);
    i32(int64_t(e.sums.size()));
    std::vector<float> stored(e.sums.size());
    for (size_t i = 0; i < stored.size(); ++i) {
      const float count = e.counts[i / size_t(e.columns())];
      stored[i] = count > 0 ? e.sums[i] / count * float(ncall) : float(ncall);
    }
    out.write(stored.data(), stored.size() * 4);
  }
  i32(int32_t(chunk_count));
  const std::string dataset = datasets.empty() ? std::string() : datasets.front();
  i32(int64_t(dataset.size()));
  out.write(dataset.data(), dataset.size());
  out.commit();
}

void ImportanceMatrix::build_index(const std::string& label) {
  for (size_t i = 0; i < entries_.size(); ++i)
    if (!index_.emplace(entries_[i].name, i).second) throw Error("duplicate entry in importance matrix", {.file = label, .tensor = entries_[i].name});
}

const ImatrixEntry* ImportanceMatrix::find(std::string_view weight_name) const {
  const auto it = index_.find(weight_name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

}  // namespace lowbit
