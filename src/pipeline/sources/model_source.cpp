#include "lowbit/pipeline/model_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "pipeline/sources/gguf_source.h"
#include "pipeline/sources/hf_source.h"
#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"

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

ModelFacts ModelSource::facts() const {
  ModelFacts f;
  const auto* arch_value = find("general.architecture");
  const std::string arch = arch_value && arch_value->get_if<std::string>() ? *arch_value->get_if<std::string>() : "llama";
  // Type choices count layers and split rows by heads: values out of range are refused, not used.
  auto get = [&](const std::string& key, int fallback, int64_t min, int64_t max) {
    const auto* v = find(arch + "." + key);
    if (!v) return fallback;
    const auto n = v->as_int();
    if (!n || *n < min || *n > max)
      throw key_error(label(), arch + "." + key, fmt::format("{} is not an integer in range", v->as_int() ? std::to_string(*n) : std::string(gguf::value_type_name(v->type()))), fmt::format("{} to {}", min, max));
    return int(*n);
  };
  f.n_layer = get("block_count", 0, 0, 10'000);
  f.n_head = get("attention.head_count", 1, 1, 1 << 20);
  f.n_head_kv = get("attention.head_count_kv", f.n_head, 1, f.n_head);
  f.n_expert = get("expert_count", 0, 0, 1 << 16);
  if (f.n_head % f.n_head_kv != 0)
    throw key_error(label(), arch + ".attention.head_count_kv", fmt::format("{} does not divide the head count {}", f.n_head_kv, f.n_head));
  f.has_output = std::ranges::any_of(tensors(), [](const Tensor& t) { return t.name == "output.weight"; });
  return f;
}

}  // namespace lowbit
