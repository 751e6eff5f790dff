#include "lowbit/io/model_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "io/gguf_source.h"
#include "io/hf_source.h"
#include "lowbit/core/error.h"

namespace lowbit {
namespace {

int layer_number(const std::string& name) {
  int layer = -1;
  if (name.starts_with("blk.")) std::from_chars(name.data() + 4, name.data() + name.size(), layer);
  return layer;
}

}  // namespace

bool gguf_tensor_order(const std::string& a, const std::string& b) {
  const int la = layer_number(a), lb = layer_number(b);
  return la != lb ? la < lb : a < b;
}

std::unique_ptr<ModelSource> ModelSource::open(const std::filesystem::path& path) {
  std::unique_ptr<ModelSource> source;
  if (std::filesystem::is_directory(path)) source = std::make_unique<HfSource>(path);
  else if (path.extension() == ".gguf") source = std::make_unique<GgufSource>(path);
  else throw Error("not a .gguf file or a Hugging Face model directory", {.file = path.string()});
  // Rows are ne[0] values: every consumer divides by it, so an empty dimension is refused here, once.
  for (const auto& t : source->tensors())
    if (t.ne.empty() || std::ranges::find(t.ne, 0) != t.ne.end())
      throw Error(fmt::format("shape {} has no elements", shape_to_string(t.ne)), {.file = source->label(), .tensor = t.name,
                  .expected = "every dimension at least 1"});
  return source;
}

const gguf::Value* ModelSource::find(std::string_view key) const {
  for (const auto& kv : metadata())
    if (kv.key == key) return &kv.value;
  return nullptr;
}

}  // namespace lowbit
