#include "hf_source.h"

#include <fmt/format.h>

#include <algorithm>
#include <regex>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"

namespace lowbit {
namespace {

using nlohmann::json;

template <class T>
gguf::KeyValue kv(std::string key, T value) {
  return {std::move(key), gguf::Value{value}};
}

// The llama.cpp architecture of a Hugging Face model class, and whether its converter permutes the
// Q/K rows (llama.cpp's "normal" RoPE rotates adjacent pairs; HF Llama rotates halves).
struct Architecture {
  std::string_view hf_class;
  std::string_view gguf_arch;
  bool permute_qk;
};
constexpr Architecture kArchitectures[] = {
    {"LlamaForCausalLM", "llama", true},
    {"MistralForCausalLM", "llama", true},
    {"Qwen2ForCausalLM", "qwen2", false},
    {"Qwen3ForCausalLM", "qwen3", false},
};

// HF tensor name pattern -> GGUF name; {} is the layer.
struct NameRule {
  std::string_view hf;
  std::string_view gguf;
};
constexpr NameRule kLayerNames[] = {
    {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "ffn_norm.weight"},
    {"self_attn.q_proj.weight", "attn_q.weight"},
    {"self_attn.k_proj.weight", "attn_k.weight"},
    {"self_attn.v_proj.weight", "attn_v.weight"},
    {"self_attn.q_proj.bias", "attn_q.bias"},
    {"self_attn.k_proj.bias", "attn_k.bias"},
    {"self_attn.v_proj.bias", "attn_v.bias"},
    {"self_attn.o_proj.weight", "attn_output.weight"},
    {"self_attn.q_norm.weight", "attn_q_norm.weight"},
    {"self_attn.k_norm.weight", "attn_k_norm.weight"},
    {"mlp.gate_proj.weight", "ffn_gate.weight"},
    {"mlp.up_proj.weight", "ffn_up.weight"},
    {"mlp.down_proj.weight", "ffn_down.weight"},
};
constexpr NameRule kGlobalNames[] = {
    {"model.embed_tokens.weight", "token_embd.weight"},
    {"model.norm.weight", "output_norm.weight"},
    {"lm_head.weight", "output.weight"},
};

std::optional<std::string> gguf_name_of(const std::string& hf) {
  for (const auto& rule : kGlobalNames)
    if (hf == rule.hf) return std::string(rule.gguf);
  static const std::regex layer(R"(model\.layers\.(\d+)\.(.+))");
  std::smatch m;
  if (!std::regex_match(hf, m, layer)) return std::nullopt;
  for (const auto& rule : kLayerNames)
    if (m[2].str() == rule.hf) return fmt::format("blk.{}.{}", m[1].str(), rule.gguf);
  return std::nullopt;
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

// Row r of the permuted matrix is row `source_row(r)` of HF's: within each head, the rotate-half
// layout [x0..x(d/2-1), y0..y(d/2-1)] becomes interleaved pairs [x0, y0, x1, y1, ...].
int64_t source_row(int64_t r, int64_t rows_per_head) {
  const int64_t head = r / rows_per_head, within = r % rows_per_head, half = rows_per_head / 2;
  return head * rows_per_head + (within % 2) * half + within / 2;
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
    throw Error(fmt::format("architecture '{}' is not supported", hf_class), {.file = file, .expected = "Llama, Mistral, Qwen2 or Qwen3 (dense)"});
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
    std::copy_n(values.begin() + source_row(r, rows_per_head) * cols, cols, permuted.begin() + r * cols);
  return permuted;
}

}  // namespace lowbit
