// A GGUF model as a Hugging Face directory (safetensors, config.json, tokenizer.json): the inverse of
// the conversion in hf_source.cpp, so a GGUF-only model can go through transformers' tools and
// lowbit's bitsandbytes formats.
#include <fmt/format.h>

#include "checkpoint_output.h"
#include "hf_names.h"
#include "lowbit/core/atomic_file.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "value_guard.h"

namespace lowbit {
namespace {

using nlohmann::ordered_json;

const gguf::Value* find(const ModelSource& s, const std::string& key) { return s.find(key); }

std::string string_value(const ModelSource& s, const std::string& key) {
  const auto* v = find(s, key);
  return v && v->get_if<std::string>() ? *v->get_if<std::string>() : "";
}

// tokenizers' pre-tokenizer for a llama.cpp pre-tokenizer name (the ones hf_tokenizer.cpp recognises).
ordered_json pre_tokenizer_for(const std::string& pre) {
  const ordered_json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}};
  auto split = [&](const char* regex) {
    return ordered_json{{"type", "Sequence"},
                        {"pretokenizers", {{{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}}, byte_level}}};
  };
  if (pre == "llama-bpe")
    return split(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  if (pre == "qwen2")
    return split(R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)");
  if (pre == "smollm") return {{"type", "Sequence"}, {"pretokenizers", {{{"type", "Digits"}, {"individual_digits", true}}, {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}}}};
  return {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}};
}

void write_tokenizer(const ModelSource& s, const std::filesystem::path& dir) {
  if (string_value(s, "tokenizer.ggml.model") != "gpt2")
    throw Error("only byte-level BPE (tokenizer.ggml.model = gpt2) vocabularies can be exported", {.file = s.label()});
  const auto& tokens = find(s, "tokenizer.ggml.tokens")->get_if<gguf::Array>()->items;
  const auto* types_value = find(s, "tokenizer.ggml.token_type");
  ordered_json vocab = ordered_json::object(), added = ordered_json::array();
  for (size_t id = 0; id < tokens.size(); ++id) {
    const std::string& text = *tokens[id].get_if<std::string>();
    const int32_t type = types_value ? *types_value->get_if<gguf::Array>()->items[id].get_if<int32_t>() : 1;
    vocab[text] = id;
    if (type == 3 || type == 4)  // control and user-defined tokens are tokenizers' "added tokens"
      added.push_back({{"id", id}, {"content", text}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                       {"normalized", false}, {"special", type == 3}});
  }
  ordered_json merges = ordered_json::array();
  if (const auto* m = find(s, "tokenizer.ggml.merges"))
    for (const auto& item : m->get_if<gguf::Array>()->items) merges.push_back(*item.get_if<std::string>());
  const ordered_json tokenizer = {{"version", "1.0"}, {"added_tokens", added}, {"normalizer", nullptr},
                                  {"pre_tokenizer", pre_tokenizer_for(string_value(s, "tokenizer.ggml.pre"))},
                                  {"post_processor", nullptr}, {"decoder", {{"type", "ByteLevel"}}},
                                  {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"byte_fallback", false},
                                             {"vocab", vocab}, {"merges", merges}}}};
  write_json_file(dir / "tokenizer.json", tokenizer);
  ordered_json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}};
  for (const auto& [role, key] : {std::pair{"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
                                  {"unk", "tokenizer.ggml.unknown_token_id"}, {"pad", "tokenizer.ggml.padding_token_id"}})
    if (const auto* v = find(s, key); v && v->as_int() && *v->as_int() < int64_t(tokens.size()))
      config[std::string(role) + "_token"] = *tokens[size_t(*v->as_int())].get_if<std::string>();
  if (const auto* v = find(s, "tokenizer.ggml.add_bos_token"); v && v->get_if<bool>()) config["add_bos_token"] = *v->get_if<bool>();
  if (const auto t = string_value(s, "tokenizer.chat_template"); !t.empty()) config["chat_template"] = t;
  write_json_file(dir / "tokenizer_config.json", config);
}

int64_t vocab_size(const ModelSource& s) {
  for (const auto& t : s.tensors())
    if (t.name == "token_embd.weight") return t.ne[1];
  throw Error("no token_embd.weight", {.file = s.label()});
}

}  // namespace

GgufQuantizeReport export_gguf_to_hf(const ModelSource& source, const std::filesystem::path& out, DType dtype, Progress& progress,
                                     const NonfinitePolicy& nonfinite, bool overwrite) {
  const std::string arch = string_value(source, "general.architecture");
  const auto* match = std::ranges::find_if(kArchitectures, [&](const Architecture& a) { return a.gguf_arch == arch; });
  if (match == std::end(kArchitectures)) throw Error(fmt::format("cannot export architecture '{}'", arch), {.file = source.label()});
  const ModelFacts facts = source.facts();
  auto hp = [&](const std::string& key) -> std::optional<int64_t> {
    const auto* v = find(source, arch + "." + key);
    return v ? v->as_int() : std::nullopt;
  };
  auto hp_float = [&](const std::string& key, float fallback) {
    const auto* v = find(source, arch + "." + key);
    return v && v->get_if<float>() ? *v->get_if<float>() : fallback;
  };
  const int64_t n_embd = hp("embedding_length").value_or(0), head_dim = hp("attention.key_length").value_or(n_embd / facts.n_head);

  AtomicDirectory dir(out, overwrite);
  GgufQuantizeReport report;
  std::vector<TensorGroup> groups;
  std::vector<std::string> hf_names;
  for (const auto& t : source.tensors()) {
    const auto hf = hf_name_of(t.name);
    if (!hf) throw Error("tensor has no Hugging Face name", {.file = source.label(), .tensor = t.name});
    hf_names.push_back(*hf);
    groups.push_back({{*hf}, uint64_t(t.elements()) * dtype_size(dtype)});
  }
  ValueGuard guard(nonfinite);
  const GgmlType target = dtype == DType::f16 ? GgmlType::F16 : dtype == DType::bf16 ? GgmlType::BF16 : GgmlType::F32;
  progress.begin("export", int64_t(groups.size()), 0);
  uint64_t bytes_out = 0;
  write_sharded(dir.path(), groups, 5'000'000'000, [&](size_t g, const auto& emit) {
    const auto& t = source.tensors()[g];
    std::vector<float> values = load_checked(source, t, target, guard);
    const bool q = t.name.ends_with("attn_q.weight"), k = t.name.ends_with("attn_k.weight");
    if (match->permute_qk && (q || k)) {  // back to HF's rotate-half row order
      const int64_t cols = t.ne[0], rows = t.elements() / cols, per_head = rows / (q ? facts.n_head : facts.n_head_kv);
      std::vector<float> hf(values.size());
      for (int64_t r = 0; r < rows; ++r) std::copy_n(values.begin() + r * cols, cols, hf.begin() + hf_row_of(r, per_head) * cols);
      values.swap(hf);
    }
    Tensor converted(dtype, Shape(t.ne.rbegin(), t.ne.rend()));
    convert_from_f32(values.data(), dtype, converted.buffer.data(), values.size());
    emit(hf_names[g], converted.view());
    report.tensors.push_back({t.name, t.stored_type, t.stored_type, t.elements(), converted.buffer.size(), false});
    progress.advance(t.name, converted.buffer.size());
  }, bytes_out);
  progress.end();

  ordered_json config = {{"architectures", {std::string(match->hf_class)}}, {"model_type", match->gguf_arch == "llama" ? "llama" : arch},
                         {"hidden_size", n_embd}, {"intermediate_size", hp("feed_forward_length").value_or(0)},
                         {"num_attention_heads", facts.n_head}, {"num_key_value_heads", facts.n_head_kv},
                         {"num_hidden_layers", facts.n_layer}, {"head_dim", head_dim},
                         {"max_position_embeddings", hp("context_length").value_or(2048)},
                         {"rms_norm_eps", hp_float("attention.layer_norm_rms_epsilon", 1e-5f)},
                         {"rope_theta", hp_float("rope.freq_base", 10000.0f)}, {"hidden_act", "silu"},
                         {"attention_bias", std::ranges::any_of(source.tensors(), [](const auto& t) { return t.name.ends_with("attn_q.bias"); })},
                         {"vocab_size", vocab_size(source)},
                         {"tie_word_embeddings", !facts.has_output}, {"torch_dtype", std::string(bnb::torch_dtype_name(dtype))}};
  if (const auto* v = find(source, "tokenizer.ggml.bos_token_id"); v && v->as_int()) config["bos_token_id"] = *v->as_int();
  if (const auto* v = find(source, "tokenizer.ggml.eos_token_id"); v && v->as_int()) config["eos_token_id"] = *v->as_int();
  write_json_file(dir.path() / "config.json", config);
  write_tokenizer(source, dir.path());
  dir.commit();
  report.bytes = bytes_out;
  report.nonfinite = guard.count();
  return report;
}

}  // namespace lowbit
