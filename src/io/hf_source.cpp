#include "io/hf_source.h"

#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/hf_config.h"
#include "lowbit/io/hf_names.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <map>
#include <optional>
#include <set>

#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"
#include "lowbit/io/value_guard.h"

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

// llama.cpp's order of a Q/K weight's rows (hf_row_of); empty when the rows split into no heads of pairs.
std::vector<int32_t> llama_row_order(int64_t rows, int heads) {
  if (rows % (2 * heads) != 0) return {};
  std::vector<int32_t> order(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) order[size_t(r)] = int32_t(hf_row_of(r, rows / heads));
  return order;
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
                {.file = file, .expected = "Llama, Mistral, Qwen2, Qwen3, Mixtral, Qwen2-MoE or Qwen3-MoE; any checkpoint can be planned with --target bnb"});
  const std::string a(arch->gguf_arch);

  const HfModelConfig model = read_hf_model_config(config, dir, *arch);
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
  // A layer's experts, stacked once all are found (safetensors lists "experts.10" before "experts.2").
  struct Stack {
    std::vector<std::string> experts;  // the Hugging Face name of expert E; empty until found
    Shape shape;                       // one expert's, in PyTorch's order
    DType dtype = DType::f32;
    std::string shard;
  };
  std::map<std::string, Stack> stacks;
  for (const auto& e : checkpoint_.tensors()) {
    const auto& hf = e.info->name;
    if (hf.ends_with("rotary_emb.inv_freq")) continue;  // recomputed by llama.cpp
    if (companions.contains(hf)) continue;
    if (hf == "lm_head.weight" && model.tie_word_embeddings) continue;  // tied: the embedding is the output layer
    const std::string shard = e.shard->label();
    const bool quantized = bnb_->quantized(hf);
    const Shape shape = quantized ? bnb_->logical_shape(hf) : e.info->shape;
    const DType dtype = quantized ? bnb_->recorded_dtype(hf) : e.info->dtype;
    std::vector<GgufPlace> places;
    if (arch->moe) places = gguf_places_of(hf);
    else if (auto name = gguf_name_of(hf)) places.push_back({*name});
    if (places.empty()) throw Error("tensor has no llama.cpp name", {.file = shard, .tensor = hf});
    for (auto& place : places) {
      if (place.expert >= 0) {  // one expert's projection
        if (place.expert >= model.n_expert)
          throw Error(fmt::format("expert {}, but config.json counts {} experts", place.expert, model.n_expert), {.file = shard, .tensor = hf});
        Stack& stack = stacks[place.name];
        if (stack.experts.empty()) stack = {std::vector<std::string>(size_t(model.n_expert)), shape, dtype, shard};
        if (shape != stack.shape || dtype != stack.dtype)
          throw Error(fmt::format("{} {}, unlike its layer's other experts", dtype_name(dtype), shape_to_string(shape)),
                      {.file = shard, .tensor = hf, .expected = fmt::format("{} {}", dtype_name(stack.dtype), shape_to_string(stack.shape))});
        stack.experts[size_t(place.expert)] = hf;
      } else if (shape.size() == 3) {  // fused experts [expert, rows, cols]: run `part` of each expert's rows
        if (shape[0] != model.n_expert || shape[1] % place.parts != 0)
          throw Error(fmt::format("shape {} is not [{} experts, rows in {} equal parts, cols]", shape_to_string(shape), model.n_expert, place.parts),
                      {.file = shard, .tensor = hf});
        const int64_t rows = shape[1] / place.parts, cols = shape[2];
        Origin origin;
        for (int64_t x = 0; x < shape[0]; ++x) origin.pieces.push_back({hf, (x * shape[1] + place.part * rows) * cols, rows * cols});
        if (place.parts == 1) origin.pieces = {Piece{hf}};  // the whole tensor, as it is stored
        add_tensor(place.name, {cols, rows, shape[0]}, dtype, std::move(origin), shard);
      } else {
        Origin origin{.pieces = {Piece{hf}}};
        if (arch->permute_qk && hf.ends_with("q_proj.weight")) origin.permute_heads = int(n_head);
        if (arch->permute_qk && hf.ends_with("k_proj.weight")) origin.permute_heads = int(n_head_kv);
        if (origin.permute_heads) origin.row_order = llama_row_order(shape[0], origin.permute_heads);
        add_tensor(place.name, Shape(shape.rbegin(), shape.rend()), dtype, std::move(origin), shard);
      }
    }
  }
  // llama.cpp's layout: ne {cols, rows, experts}, expert E at index E of the outermost dimension.
  for (auto& [name, stack] : stacks) {
    Origin origin;
    for (size_t x = 0; x < stack.experts.size(); ++x) {
      if (stack.experts[x].empty())
        throw Error(fmt::format("expert {} of {} is missing", x, stack.experts.size()), {.file = stack.shard, .tensor = name});
      origin.pieces.push_back(Piece{stack.experts[x]});
    }
    Shape ne(stack.shape.rbegin(), stack.shape.rend());
    ne.push_back(int64_t(stack.experts.size()));
    add_tensor(name, std::move(ne), stack.dtype, std::move(origin), stack.shard);
  }
  if (!model.tie_word_embeddings && !origins_.contains("output.weight"))
    throw Error("no lm_head.weight, and 'tie_word_embeddings' is not true", {.file = file});
  if (!model.rope_freqs.empty()) {  // Llama 3's frequency factors, computed as llama.cpp's converter does
    rope_freqs_ = model.rope_freqs;
    origins_["rope_freqs.weight"] = Origin{};  // computed
    tensors_.push_back({"rope_freqs.weight", Shape{int64_t(rope_freqs_.size())}, GgmlType::F32});
  }
  std::ranges::sort(tensors_, [](const Tensor& x, const Tensor& y) { return gguf_tensor_order(x.name, y.name); });
}

HfSource::~HfSource() = default;

void HfSource::add_tensor(std::string name, Shape ne, DType dtype, Origin origin, const std::string& shard) {
  const std::string& hf = origin.pieces.front().hf_name;
  if (origins_.contains(name)) throw Error(fmt::format("a second tensor for {}", name), {.file = shard, .tensor = hf});
  tensors_.push_back({name, std::move(ne), ggml_type_of(dtype, shard, hf)});
  origins_.emplace(std::move(name), std::move(origin));
}

std::span<const std::byte> HfSource::raw(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  if (origin.pieces.empty()) return std::as_bytes(std::span(rope_freqs_));
  // In place when the tensor is one run of one stored tensor; stacked experts are assembled by load_f32.
  if (origin.pieces.size() != 1 || origin.permute_heads) return {};
  const Piece& piece = origin.pieces.front();
  if (bnb_->quantized(piece.hf_name)) return {};
  const TensorView view = checkpoint_.view(piece.hf_name);
  if (piece.count < 0) return view.bytes;
  return view.bytes.subspan(size_t(piece.offset) * dtype_size(view.dtype), size_t(piece.count) * dtype_size(view.dtype));
}

std::optional<bnb::Packed4bitView> HfSource::packed_4bit(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  // Stacked experts are new tensors, their bytes nowhere as such; permuted Q/K rows are stored rows in another order.
  if (origin.pieces.size() != 1 || origin.pieces.front().count >= 0 || (origin.permute_heads && origin.row_order.empty()))
    return std::nullopt;
  auto view = bnb_->packed_4bit(origin.pieces.front().hf_name);
  if (view) view->row_order = origin.row_order;
  return view;
}

std::vector<float> HfSource::load_f32(const Tensor& tensor) const {
  const Origin& origin = origins_.at(tensor.name);
  if (origin.pieces.empty()) return rope_freqs_;
  std::vector<float> values(size_t(tensor.elements()));
  size_t filled = 0;
  for (const Piece& piece : origin.pieces) {
    std::optional<lowbit::Tensor> dequantized;  // a bitsandbytes weight, in its recorded dtype
    if (bnb_->quantized(piece.hf_name)) {
      ValueGuard guard(NonfinitePolicy{});
      dequantized = bnb_->dequantize(piece.hf_name, std::nullopt, guard);
    }
    const TensorView view = dequantized ? dequantized->view() : checkpoint_.view(piece.hf_name);
    const size_t count = size_t(piece.count < 0 ? view.elements() : piece.count);
    convert_to_f32(view.dtype, view.bytes.data() + size_t(piece.offset) * dtype_size(view.dtype), values.data() + filled, count);
    filled += count;
  }
  if (!origin.permute_heads) return values;
  const int64_t cols = tensor.ne[0], rows = int64_t(values.size()) / cols;
  if (origin.row_order.empty())
    throw Error(fmt::format("{} rows do not split into {} heads of pairs", rows, origin.permute_heads),
                {.file = label(), .tensor = origin.pieces.front().hf_name});
  std::vector<float> permuted(values.size());
  for (int64_t r = 0; r < rows; ++r) std::copy_n(values.begin() + origin.row_order[size_t(r)] * cols, cols, permuted.begin() + r * cols);
  return permuted;
}

}  // namespace lowbit
