#include "hf_source.h"

#include "hf_names.h"

#include <fmt/format.h>

#include <algorithm>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"

namespace lowbit {
namespace {

using nlohmann::json;

template <class T>
gguf::KeyValue kv(std::string key, T value) {
  return {std::move(key), gguf::Value{value}};
}

GgmlType ggml_type_of(DType dtype, const std::string& file, const std::string& tensor) {
  switch (dtype) {
    case DType::f32: return GgmlType::F32;
    case DType::f16: return GgmlType::F16;
    case DType::bf16: return GgmlType::BF16;
    default: throw Error(fmt::format("cannot convert a {} tensor to GGUF", dtype_name(dtype)), {.file = file, .tensor = tensor});
  }
}

int64_t require_int(const json& config, const char* key, const std::string& file) {
  if (!config.contains(key) || !config[key].is_number_integer())
    throw Error(fmt::format("config.json has no integer '{}'", key), {.file = file});
  return config[key].get<int64_t>();
}

}  // namespace

HfSource::HfSource(const std::filesystem::path& dir) : checkpoint_(dir) {
  const std::string file = (dir / "config.json").string();
  const json& config = checkpoint_.config();
  if (config.empty()) throw Error("no config.json: not a Hugging Face model directory", {.file = file});
  const std::string hf_class = config.contains("architectures") && config["architectures"].is_array() && !config["architectures"].empty()
                                   ? config["architectures"][0].get<std::string>() : "";
  const auto* arch = std::ranges::find_if(kArchitectures, [&](const Architecture& a) { return a.hf_class == hf_class; });
  if (arch == std::end(kArchitectures))
    throw Error(fmt::format("architecture '{}' is not supported for GGUF output or evaluation", hf_class),
                {.file = file, .expected = "Llama, Mistral, Qwen2 or Qwen3 (dense); any checkpoint can be planned with --target bnb"});
  const std::string a(arch->gguf_arch);

  const int64_t n_embd = require_int(config, "hidden_size", file);
  const int64_t n_head = require_int(config, "num_attention_heads", file);
  const int64_t n_head_kv = config.contains("num_key_value_heads") ? require_int(config, "num_key_value_heads", file) : n_head;
  const int64_t head_dim = config.contains("head_dim") && config["head_dim"].is_number_integer() ? config["head_dim"].get<int64_t>() : n_embd / n_head;
  const int64_t vocab = require_int(config, "vocab_size", file);

  metadata_.push_back(kv("general.architecture", a));
  metadata_.push_back(kv("general.type", std::string("model")));
  metadata_.push_back(kv("general.name", dir.filename().string()));
  metadata_.push_back(kv(a + ".block_count", uint32_t(require_int(config, "num_hidden_layers", file))));
  metadata_.push_back(kv(a + ".context_length", uint32_t(require_int(config, "max_position_embeddings", file))));
  metadata_.push_back(kv(a + ".embedding_length", uint32_t(n_embd)));
  metadata_.push_back(kv(a + ".feed_forward_length", uint32_t(require_int(config, "intermediate_size", file))));
  metadata_.push_back(kv(a + ".attention.head_count", uint32_t(n_head)));
  metadata_.push_back(kv(a + ".attention.head_count_kv", uint32_t(n_head_kv)));
  if (config.contains("rope_theta")) metadata_.push_back(kv(a + ".rope.freq_base", config["rope_theta"].get<float>()));
  metadata_.push_back(kv(a + ".attention.layer_norm_rms_epsilon", config.value("rms_norm_eps", 1e-6f)));
  if (a == "qwen3") {
    metadata_.push_back(kv(a + ".attention.key_length", uint32_t(head_dim)));
    metadata_.push_back(kv(a + ".attention.value_length", uint32_t(head_dim)));
  }
  metadata_.push_back(kv(a + ".vocab_size", uint32_t(vocab)));
  metadata_.push_back(kv(a + ".rope.dimension_count", uint32_t(head_dim)));
  add_hf_tokenizer_metadata(dir, vocab, metadata_);

  for (const auto& e : checkpoint_.tensors()) {
    const auto& hf = e.info->name;
    if (hf.ends_with("rotary_emb.inv_freq")) continue;  // recomputed by llama.cpp
    const auto name = gguf_name_of(hf);
    if (!name) throw Error("tensor has no llama.cpp name", {.file = e.shard->label(), .tensor = hf});
    Origin origin{hf};
    if (arch->permute_qk && hf.ends_with("q_proj.weight")) origin.permute_heads = int(n_head);
    if (arch->permute_qk && hf.ends_with("k_proj.weight")) origin.permute_heads = int(n_head_kv);
    origins_[*name] = origin;
    tensors_.push_back({*name, Shape(e.info->shape.rbegin(), e.info->shape.rend()), ggml_type_of(e.info->dtype, e.shard->label(), hf)});
  }
  std::ranges::sort(tensors_, [](const Tensor& x, const Tensor& y) { return gguf_tensor_order(x.name, y.name); });
}

std::span<const std::byte> HfSource::raw(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  if (origin.permute_heads) return {};
  return checkpoint_.view(origin.hf_name).bytes;
}

std::vector<float> HfSource::load_f32(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  const TensorView view = checkpoint_.view(origin.hf_name);
  std::vector<float> values(size_t(view.elements()));
  convert_to_f32(view.dtype, view.bytes.data(), values.data(), values.size());
  if (!origin.permute_heads) return values;
  const int64_t cols = tensor.ne[0], rows = int64_t(values.size()) / cols;
  if (rows % (2 * origin.permute_heads) != 0)
    throw Error(fmt::format("{} rows do not split into {} heads of pairs", rows, origin.permute_heads), {.file = label(), .tensor = origin.hf_name});
  std::vector<float> permuted(values.size());
  const int64_t rows_per_head = rows / origin.permute_heads;
  for (int64_t r = 0; r < rows; ++r)
    std::copy_n(values.begin() + hf_row_of(r, rows_per_head) * cols, cols, permuted.begin() + r * cols);
  return permuted;
}

}  // namespace lowbit
