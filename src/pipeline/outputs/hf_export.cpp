// A GGUF model as a Hugging Face directory (safetensors, config.json, tokenizer.json): the inverse of
// the conversion in hf_source.cpp, so a GGUF-only model can go through transformers' tools and
// lowbit's bitsandbytes formats.
#include <fmt/format.h>

#include "pipeline/outputs/checkpoint_output.h"
#include "lowbit/io/hf_config.h"
#include "lowbit/io/hf_names.h"
#include "lowbit/core/atomic_file.h"
#include "lowbit/core/convert.h"
#include "lowbit/core/error.h"
#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/pipeline/hf_tokenizer_export.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "lowbit/io/value_guard.h"

namespace lowbit {
namespace {

using nlohmann::ordered_json;

const gguf::Value* find(const ModelSource& s, const std::string& key) { return s.find(key); }

std::string string_value(const ModelSource& s, const std::string& key) {
  const auto* v = find(s, key);
  return v && v->get_if<std::string>() ? *v->get_if<std::string>() : "";
}

// The GGUF's RoPE scaling as config.json's rope_scaling: linear and YaRN from their keys; Llama 3's
// from rope_freqs.weight, recognised only where Llama 3.1's parameters with its largest divisor as the
// factor recompute the same tensor (anything else would load in transformers with other positions).
std::optional<ordered_json> rope_scaling_of(const ModelSource& s, const std::string& arch, int64_t head_dim, float base) {
  const auto freqs = std::ranges::find_if(s.tensors(), [](const auto& t) { return t.name == "rope_freqs.weight"; });
  if (freqs != s.tensors().end()) {
    const std::vector<float> stored = s.load_f32(*freqs);
    const float factor = *std::ranges::max_element(stored);
    if (llama3_rope_freqs(base, head_dim, factor, 1.0f, 4.0f, 8192.0f) != stored)
      throw Error("rope_freqs.weight is not Llama 3.1's frequency scaling; it has no config.json form lowbit can write",
                  {.file = s.label(), .tensor = "rope_freqs.weight"});
    return ordered_json{{"rope_type", "llama3"}, {"factor", factor}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0},
                        {"original_max_position_embeddings", 8192}};
  }
  const std::string type = string_value(s, arch + ".rope.scaling.type");
  const auto* factor = find(s, arch + ".rope.scaling.factor");
  if (type.empty() || type == "none" || !factor || !factor->get_if<float>()) return std::nullopt;
  if (type == "linear") return ordered_json{{"rope_type", "linear"}, {"factor", *factor->get_if<float>()}};
  const auto* original = find(s, arch + ".rope.scaling.original_context_length");
  if (type == "yarn" && original && original->as_int())
    return ordered_json{{"rope_type", "yarn"}, {"factor", *factor->get_if<float>()}, {"original_max_position_embeddings", *original->as_int()}};
  throw Error(fmt::format("RoPE scaling '{}' cannot be written to config.json", type), {.file = s.label(), .tensor = arch + ".rope.scaling.type"});
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
  // Dense models only: llama.cpp's "llama" is Llama's (or Mistral's) name, and experts have no way back.
  const auto* match = std::ranges::find_if(kArchitectures, [&](const Architecture& a) { return a.gguf_arch == arch && !a.moe; });
  if (match == std::end(kArchitectures)) throw Error(fmt::format("cannot export architecture '{}'", arch), {.file = source.label()});
  const ModelFacts facts = model_facts(source);
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
  std::vector<size_t> exported;  // positions in source.tensors(); rope_freqs.weight goes to config.json instead
  for (size_t i = 0; i < source.tensors().size(); ++i) {
    const auto& t = source.tensors()[i];
    if (t.name == "rope_freqs.weight") continue;
    exported.push_back(i);
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
    const auto& t = source.tensors()[exported[g]];
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
  // An id of -1 (stored as uint32 4294967295) is llama.cpp's "no such token": transformers refuses it.
  for (const auto& [key, name] : {std::pair{"tokenizer.ggml.bos_token_id", "bos_token_id"}, std::pair{"tokenizer.ggml.eos_token_id", "eos_token_id"},
                                  std::pair{"tokenizer.ggml.padding_token_id", "pad_token_id"}})
    if (const auto* v = find(source, key); v && v->as_int() && *v->as_int() >= 0 && *v->as_int() < 0xFFFFFFFFll) config[name] = *v->as_int();
  if (auto scaling = rope_scaling_of(source, arch, head_dim, hp_float("rope.freq_base", 10000.0f))) config["rope_scaling"] = *scaling;
  write_json_file(dir.path() / "config.json", config);
  write_hf_tokenizer(source.metadata(), dir.path());
  dir.commit();
  report.bytes = bytes_out;
  report.nonfinite = guard.count();
  return report;
}

}  // namespace lowbit
