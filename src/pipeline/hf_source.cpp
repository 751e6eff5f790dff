#include "hf_source.h"

#include "hf_names.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"

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

// Bounds on config.json's sizes: far above any real model, low enough that nothing derived from them
// overflows, and each count lowbit loops over or allocates by is checked before it is used.
constexpr int64_t kMaxWidth = int64_t(1) << 20, kMaxLayers = 10'000, kMaxVocab = int64_t(1) << 24;

// rope_theta, rms_norm_eps: GGUF stores them as f32, and 0 or less gives NaN logits.
float positive_float(const JsonField& config, std::string_view key, double fallback) {
  const float v = float(config.number_or(key, fallback));
  if (!(v > 0) || !std::isfinite(v)) throw config[key].error(fmt::format("{} is not a positive f32", v), "a number > 0 that f32 holds");
  return v;
}

}  // namespace

HfSource::HfSource(const std::filesystem::path& dir) : checkpoint_(dir) {
  const std::string file = (dir / "config.json").string();
  if (checkpoint_.config().empty()) throw Error("no config.json: not a Hugging Face model directory", {.file = file});
  const JsonField config(checkpoint_.config(), file);
  const auto architectures = config.find("architectures");
  const std::string hf_class = architectures && !architectures->elements().empty() ? architectures->elements()[0].string() : "";
  const auto* arch = std::ranges::find_if(kArchitectures, [&](const Architecture& a) { return a.hf_class == hf_class; });
  if (arch == std::end(kArchitectures))
    throw Error(fmt::format("architecture '{}' is not supported for GGUF output or evaluation", hf_class),
                {.file = file, .expected = "Llama, Mistral, Qwen2 or Qwen3 (dense); any checkpoint can be planned with --target bnb"});
  const std::string a(arch->gguf_arch);

  // Head counts must split the width (and the KV heads the heads) or the attention reshapes are wrong.
  const int64_t n_embd = config["hidden_size"].integer(1, kMaxWidth);
  const int64_t n_head = config["num_attention_heads"].integer(1, n_embd);
  const int64_t n_head_kv = config.integer_or("num_key_value_heads", n_head, 1, n_head);
  if (n_head % n_head_kv != 0)
    throw config["num_key_value_heads"].error(fmt::format("{} does not divide num_attention_heads {}", n_head_kv, n_head), "a divisor of the head count");
  if (!config.has("head_dim") && n_embd % n_head != 0)
    throw config["num_attention_heads"].error(fmt::format("{} does not divide hidden_size {}", n_head, n_embd), "a divisor of the width");
  const int64_t head_dim = config.integer_or("head_dim", n_embd / n_head, 2, kMaxWidth);
  const int64_t vocab = config["vocab_size"].integer(1, kMaxVocab);
  // The token list is padded to vocab_size: it must be the embedding's row count, which the file's size bounds.
  const auto* embd = checkpoint_.find("model.embed_tokens.weight");
  if (!embd) throw Error("no model.embed_tokens.weight", {.file = label()});
  if (embd->info->shape.empty() || embd->info->shape[0] != vocab)
    throw config["vocab_size"].error(fmt::format("{}, but model.embed_tokens.weight has shape {}", vocab, shape_to_string(embd->info->shape)),
                                     "the embedding's row count");

  metadata_.push_back(kv("general.architecture", a));
  metadata_.push_back(kv("general.type", std::string("model")));
  metadata_.push_back(kv("general.name", dir.filename().string()));
  metadata_.push_back(kv(a + ".block_count", uint32_t(config["num_hidden_layers"].integer(1, kMaxLayers))));
  metadata_.push_back(kv(a + ".context_length", uint32_t(config["max_position_embeddings"].integer(1, INT32_MAX))));
  metadata_.push_back(kv(a + ".embedding_length", uint32_t(n_embd)));
  metadata_.push_back(kv(a + ".feed_forward_length", uint32_t(config["intermediate_size"].integer(1, kMaxWidth))));
  metadata_.push_back(kv(a + ".attention.head_count", uint32_t(n_head)));
  metadata_.push_back(kv(a + ".attention.head_count_kv", uint32_t(n_head_kv)));
  if (config.has("rope_theta")) metadata_.push_back(kv(a + ".rope.freq_base", positive_float(config, "rope_theta", 10000.0)));
  metadata_.push_back(kv(a + ".attention.layer_norm_rms_epsilon", positive_float(config, "rms_norm_eps", 1e-6)));
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
