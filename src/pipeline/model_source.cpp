#include "lowbit/pipeline/model_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "gguf_source.h"
#include "hf_source.h"
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
  if (std::filesystem::is_directory(path)) return std::make_unique<HfSource>(path);
  if (path.extension() == ".gguf") return std::make_unique<GgufSource>(path);
  throw Error("not a .gguf file or a Hugging Face model directory", {.file = path.string()});
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
  auto get = [&](const std::string& key, int fallback) {
    const auto* v = find(arch + "." + key);
    return v && v->as_int() ? int(*v->as_int()) : fallback;
  };
  f.n_layer = get("block_count", 0);
  f.n_head = get("attention.head_count", 1);
  f.n_head_kv = get("attention.head_count_kv", f.n_head);
  f.n_expert = get("expert_count", 0);
  f.has_output = std::ranges::any_of(tensors(), [](const Tensor& t) { return t.name == "output.weight"; });
  return f;
}

}  // namespace lowbit
