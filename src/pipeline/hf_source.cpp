#include "hf_source.h"

#include "bnb_reader.h"
#include "hf_config.h"
#include "hf_names.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <optional>
#include <set>

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

// config.json's (or generation_config.json's) token ids where tokenizer_config.json named none, as
// llama.cpp's SpecialVocab falls back to config.json.
void add_special_token_fallbacks(const HfModelConfig& model, std::vector<gguf::KeyValue>& metadata) {
  for (auto [key, id] : {std::pair{"tokenizer.ggml.bos_token_id", model.bos_id}, {"tokenizer.ggml.eos_token_id", model.eos_id},
                         {"tokenizer.ggml.padding_token_id", model.pad_id}}) {
    if (!id || *id < 0 || *id >= model.vocab) continue;
    if (std::ranges::find(metadata, std::string(key), &gguf::KeyValue::key) == metadata.end()) metadata.push_back(kv(key, uint32_t(*id)));
  }
}

}  // namespace

HfSource::HfSource(const std::filesystem::path& dir) : checkpoint_(dir), bnb_(std::make_unique<BnbReader>(checkpoint_)) {
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

  const HfModelConfig model = read_hf_model_config(config, dir, a);
  // The token list is padded to vocab_size: it must be the embedding's row count, which the file's size bounds.
  const auto* embd = checkpoint_.find("model.embed_tokens.weight");
  if (!embd) throw Error("no model.embed_tokens.weight", {.file = label()});
  if (embd->info->shape.empty() || embd->info->shape[0] != model.vocab)
    throw config["vocab_size"].error(fmt::format("{}, but model.embed_tokens.weight has shape {}", model.vocab, shape_to_string(embd->info->shape)),
                                     "the embedding's row count");
  metadata_.push_back(kv("general.architecture", a));
  metadata_.push_back(kv("general.type", std::string("model")));
  metadata_.push_back(kv("general.name", dir.filename().string()));
  metadata_.insert(metadata_.end(), model.metadata.begin(), model.metadata.end());
  add_hf_tokenizer_metadata(dir, model.vocab, metadata_);
  add_special_token_fallbacks(model, metadata_);
  const int64_t n_head = model.n_head, n_head_kv = model.n_head_kv;

  std::set<std::string> companions;
  for (const auto& e : checkpoint_.tensors())
    for (auto& c : bnb_->companions(e.info->name)) companions.insert(std::move(c));
  for (const auto& e : checkpoint_.tensors()) {
    const auto& hf = e.info->name;
    if (hf.ends_with("rotary_emb.inv_freq")) continue;  // recomputed by llama.cpp
    if (companions.contains(hf)) continue;
    if (hf == "lm_head.weight" && model.tie_word_embeddings) continue;  // tied: the embedding is the output layer
    const auto name = gguf_name_of(hf);
    if (!name) throw Error("tensor has no llama.cpp name", {.file = e.shard->label(), .tensor = hf});
    Origin origin{hf};
    if (arch->permute_qk && hf.ends_with("q_proj.weight")) origin.permute_heads = int(n_head);
    if (arch->permute_qk && hf.ends_with("k_proj.weight")) origin.permute_heads = int(n_head_kv);
    origins_[*name] = origin;
    const bool quantized = bnb_->quantized(hf);
    const Shape shape = quantized ? bnb_->logical_shape(hf) : e.info->shape;
    const DType dtype = quantized ? bnb_->recorded_dtype(hf) : e.info->dtype;
    tensors_.push_back({*name, Shape(shape.rbegin(), shape.rend()), ggml_type_of(dtype, e.shard->label(), hf)});
  }
  if (!model.tie_word_embeddings && !origins_.contains("output.weight"))
    throw Error("no lm_head.weight, and 'tie_word_embeddings' is not true", {.file = file});
  if (!model.rope_freqs.empty()) {  // Llama 3's frequency factors, computed as llama.cpp's converter does
    rope_freqs_ = model.rope_freqs;
    origins_["rope_freqs.weight"] = Origin{};
    tensors_.push_back({"rope_freqs.weight", Shape{int64_t(rope_freqs_.size())}, GgmlType::F32});
  }
  std::ranges::sort(tensors_, [](const Tensor& x, const Tensor& y) { return gguf_tensor_order(x.name, y.name); });
}

HfSource::~HfSource() = default;

std::span<const std::byte> HfSource::raw(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  if (origin.hf_name.empty()) return std::as_bytes(std::span(rope_freqs_));
  if (origin.permute_heads || bnb_->quantized(origin.hf_name)) return {};
  return checkpoint_.view(origin.hf_name).bytes;
}

std::vector<float> HfSource::load_f32(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  if (origin.hf_name.empty()) return rope_freqs_;
  std::optional<lowbit::Tensor> dequantized;  // a bitsandbytes weight, in its recorded dtype
  if (bnb_->quantized(origin.hf_name)) {
    ValueGuard guard(NonfinitePolicy{});
    dequantized = bnb_->dequantize(origin.hf_name, std::nullopt, guard);
  }
  const TensorView view = dequantized ? dequantized->view() : checkpoint_.view(origin.hf_name);
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
