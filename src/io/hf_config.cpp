#include "lowbit/io/hf_config.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <limits>
#include <numbers>

#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"

namespace lowbit {
namespace {

using nlohmann::json;

template <class T>
gguf::KeyValue kv(std::string key, T value) {
  return {std::move(key), gguf::Value{value}};
}

// Bounds on config.json's sizes: far above any real model, low enough that nothing derived from them
// overflows, and each count lowbit loops over or allocates by is checked before it is used.
constexpr int64_t kMaxWidth = int64_t(1) << 20, kMaxLayers = 10'000, kMaxVocab = int64_t(1) << 24;

// rope_theta, rms_norm_eps, scaling factors: GGUF stores them as f32, and 0 or less gives NaN logits.
std::optional<float> positive_float(const JsonField& object, std::string_view key) {
  if (!object.has(key)) return std::nullopt;
  const double v = object[key].number();
  if (!(v > 0) || v > double(std::numeric_limits<float>::max()))
    throw object[key].error(fmt::format("{} is not a positive f32", v), "a number > 0 that f32 holds");
  return float(v);
}

// transformers 5 keeps RoPE in rope_parameters (flat, or one dict per attention type); older
// checkpoints in rope_theta + rope_scaling ("type" or "rope_type"). Either way, the parameters of
// full attention, as the converter's TextModel.__init__ reads them (rope_theta may sit beside rope_scaling instead).
json rope_parameters_of(const JsonField& config) {
  const char* key = config.has("rope_parameters") ? "rope_parameters" : "rope_scaling";
  if (!config.has(key)) return json::object();
  const JsonField field = config[key];
  (void)field.members();  // throws unless an object
  json rope = field.json();
  if (field.has("full_attention") || field.has("sliding_attention")) {
    if (field.has("sliding_attention"))
      throw field["sliding_attention"].error("sliding-window layers are not supported for this architecture");
    (void)field["full_attention"].members();
    return field["full_attention"].json();
  }
  if (!rope.contains("rope_type") && rope.contains("type")) rope["rope_type"] = rope["type"];
  return rope;
}

void add_rope_metadata(const JsonField& config, const std::string& a, int64_t head_dim, HfModelConfig& out) {
  const json rope_json = rope_parameters_of(config);
  const bool nested = config.has("rope_parameters") && config["rope_parameters"].has("full_attention");
  const JsonField rope(rope_json, config.file(),
                       std::string(config.has("rope_parameters") ? "rope_parameters" : "rope_scaling") + (nested ? ".full_attention" : ""));
  const std::string type = rope.string_or("rope_type", "default");
  const auto factor = positive_float(rope, "factor");
  if (type == "linear" && factor) {
    out.metadata.push_back(kv(a + ".rope.scaling.type", std::string("linear")));
    out.metadata.push_back(kv(a + ".rope.scaling.factor", *factor));
  } else if (type == "yarn" && factor) {
    out.metadata.push_back(kv(a + ".rope.scaling.type", std::string("yarn")));
    out.metadata.push_back(kv(a + ".rope.scaling.factor", *factor));
    out.metadata.push_back(kv(a + ".rope.scaling.original_context_length", uint32_t(rope["original_max_position_embeddings"].integer(1, INT32_MAX))));
    for (auto [field, key] : {std::pair{"extrapolation_factor", "yarn_ext_factor"}, {"attention_factor", "yarn_attn_factor"},
                              {"beta_fast", "yarn_beta_fast"}, {"beta_slow", "yarn_beta_slow"}})
      if (const auto v = positive_float(rope, field)) out.metadata.push_back(kv(a + ".rope.scaling." + key, *v));
  } else if (type != "default" && type != "llama3" && type != "linear" && type != "yarn") {
    throw rope["rope_type"].error(fmt::format("is '{}', which lowbit does not convert", type), "default, linear, llama3 or yarn");
  }
  // rope_theta beside rope_scaling in older configs, inside rope_parameters in transformers 5's.
  const auto theta = rope.has("rope_theta") ? positive_float(rope, "rope_theta") : positive_float(config, "rope_theta");
  if (theta) out.metadata.push_back(kv(a + ".rope.freq_base", *theta));
  if (type == "llama3") {
    const float low = positive_float(rope, "low_freq_factor").value_or(1.0f), high = positive_float(rope, "high_freq_factor").value_or(4.0f);
    if (!(high > low)) throw rope["high_freq_factor"].error(fmt::format("{} is not above low_freq_factor {}", high, low), "high_freq_factor > low_freq_factor");
    out.rope_freqs = llama3_rope_freqs(theta.value_or(10000.0f), head_dim, factor.value_or(8.0f), low, high,
                                       float(rope.integer_or("original_max_position_embeddings", 8192, 1, INT32_MAX)));
  }
}

// Fields the converter (and lowbit's runtime) have no place for in these architectures: refused
// rather than converted into a model that computes something else.
void refuse_unsupported(const JsonField& c, const std::string& a) {
  if (c.has("partial_rotary_factor") && c["partial_rotary_factor"].number() != 1.0)
    throw c["partial_rotary_factor"].error(fmt::format("is {}: llama.cpp rotates whole heads in this architecture", c["partial_rotary_factor"].number()),
                                           "1.0 or absent");
  if (c.boolean_or("mlp_bias", false)) throw c["mlp_bias"].error("is true: MLP biases are not supported", "false");
  if (a == "llama" && c.boolean_or("attention_bias", false))
    throw c["attention_bias"].error("is true: the output projection's bias has no place in llama.cpp's Llama", "false");
  if (c.boolean_or("use_sliding_window", false)) throw c["use_sliding_window"].error("is true: sliding-window attention is not supported", "false");
}

void check_layer_types(const JsonField& config) {
  if (!config.has("layer_types")) return;
  for (const JsonField& type : config["layer_types"].elements())
    if (type.string() != "full_attention") throw type.error(fmt::format("is '{}': only full attention is supported", type.string()), "\"full_attention\"");
}

// What transformers' config class fills in where config.json has nothing (the converter reads
// config.json through AutoConfig, so it writes these): head_dim (none, hidden_size / heads, or a
// constant), rms_norm_eps, and the mixture-of-experts sizes (0: no such field in the class).
enum class HeadDim { none, width_over_heads, qwen3 };
struct ClassDefaults {
  std::string_view hf_class;
  HeadDim head_dim;
  float rms_norm_eps = 1e-6f;
  int64_t experts = 0, experts_used = 0, expert_ff = 0, shared_expert_ff = 0;
};
constexpr ClassDefaults kClassDefaults[] = {
    {"LlamaForCausalLM", HeadDim::width_over_heads},
    {"MistralForCausalLM", HeadDim::width_over_heads},
    {"Qwen2ForCausalLM", HeadDim::none},
    {"Qwen3ForCausalLM", HeadDim::qwen3},
    {"MixtralForCausalLM", HeadDim::none, 1e-5f, 8, 2},
    {"Qwen2MoeForCausalLM", HeadDim::none, 1e-6f, 60, 4, 1408, 5632},
    {"Qwen3MoeForCausalLM", HeadDim::none, 1e-6f, 128, 8, 768},
};
constexpr int64_t kMaxExperts = int64_t(1) << 16;

constexpr bool every_class_has_defaults() {
  for (const Architecture& a : kArchitectures) {
    bool found = false;
    for (const ClassDefaults& d : kClassDefaults) found = found || d.hf_class == a.hf_class;
    if (!found) return false;
  }
  return true;
}
static_assert(every_class_has_defaults(), "kClassDefaults needs a row for every class of kArchitectures");

// The expert keys in the converter's order: TextModel.set_gguf_parameters writes the counts (from
// num_local_experts or num_experts, the first the config has), Qwen2MoeModel's the widths where the
// config has them. Mixtral's experts are intermediate_size wide: feed_forward_length says so.
void add_expert_metadata(const JsonField& c, const std::string& a, const ClassDefaults& d, HfModelConfig& out) {
  const char* count_key = c.has("num_local_experts") ? "num_local_experts" : "num_experts";
  out.n_expert = c.integer_or(count_key, d.experts, 1, kMaxExperts);
  out.metadata.push_back(kv(a + ".expert_count", uint32_t(out.n_expert)));
  out.metadata.push_back(kv(a + ".expert_used_count", uint32_t(c.integer_or("num_experts_per_tok", d.experts_used, 1, out.n_expert))));
}

// llama.cpp's qwen2moe and qwen3moe have experts in every layer: a dense one (in mlp_only_layers, or
// between sparse ones when decoder_sparse_step is above 1) has no place there, and its converter refuses it.
void refuse_dense_layers(const JsonField& c, const std::string& a) {
  if (c.has("mlp_only_layers") && !c["mlp_only_layers"].elements().empty())
    throw c["mlp_only_layers"].error(fmt::format("lists dense layers, which llama.cpp's {} does not have", a), "[]");
  if (const int64_t step = c.integer_or("decoder_sparse_step", 1, 1, kMaxLayers); step != 1)
    throw c["decoder_sparse_step"].error(fmt::format("is {}: layers between sparse ones are dense, which llama.cpp's {} does not have", step, a), "1");
}

void add_qwen_expert_widths(const JsonField& c, const std::string& a, const ClassDefaults& d, HfModelConfig& out) {
  if (const int64_t ff = c.integer_or("moe_intermediate_size", d.expert_ff, 1, kMaxWidth); ff > 0)
    out.metadata.push_back(kv(a + ".expert_feed_forward_length", uint32_t(ff)));
  if (const int64_t ff = c.integer_or("shared_expert_intermediate_size", d.shared_expert_ff, 1, kMaxWidth); ff > 0)
    out.metadata.push_back(kv(a + ".expert_shared_feed_forward_length", uint32_t(ff)));
}

// An id, or none where the field holds a list (generation_config's several EOS ids) or nothing.
std::optional<int64_t> token_id(const JsonField& object, const char* key) {
  if (!object.has(key) || !object[key].json().is_number_integer()) return std::nullopt;
  return object[key].integer(-1, kMaxVocab);
}

}  // namespace

std::vector<float> llama3_rope_freqs(float base, int64_t head_dim, float factor, float low, float high, float original_context) {
  // The converter computes in float32 (torch tensors), so lowbit does too.
  const float low_wavelen = original_context / low, high_wavelen = original_context / high;
  std::vector<float> divisors;
  for (int64_t i = 0; i < head_dim; i += 2) {
    const float freq = 1.0f / std::pow(base, float(i) / float(head_dim));
    const float wavelen = 2.0f * std::numbers::pi_v<float> / freq;
    if (wavelen < high_wavelen) divisors.push_back(1.0f);
    else if (wavelen > low_wavelen) divisors.push_back(factor);
    else {
      const float smooth = (original_context / wavelen - low) / (high - low);
      divisors.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return divisors;
}

HfModelConfig read_hf_model_config(const JsonField& c, const std::filesystem::path& dir, const Architecture& arch) {
  const std::string a(arch.gguf_arch);
  const ClassDefaults& defaults = *std::ranges::find(kClassDefaults, arch.hf_class, &ClassDefaults::hf_class);
  HfModelConfig out;
  // Head counts must split the width (and the KV heads the heads) or the attention reshapes are wrong.
  const int64_t n_embd = c["hidden_size"].integer(1, kMaxWidth);
  out.n_head = c["num_attention_heads"].integer(1, n_embd);
  out.n_head_kv = c.integer_or("num_key_value_heads", out.n_head, 1, out.n_head);
  if (out.n_head % out.n_head_kv != 0)
    throw c["num_key_value_heads"].error(fmt::format("{} does not divide num_attention_heads {}", out.n_head_kv, out.n_head), "a divisor of the head count");
  // head_dim as transformers 5's config classes fill it in: Llama and Mistral default to
  // hidden_size / heads, Qwen3 to 128; Qwen2, Mixtral and the Qwen MoEs have none (then it is hidden_size / heads).
  std::optional<int64_t> head_dim;
  if (c.has("head_dim")) head_dim = c["head_dim"].integer(2, kMaxWidth);
  if (!head_dim && n_embd % out.n_head != 0 && defaults.head_dim != HeadDim::qwen3)
    throw c["num_attention_heads"].error(fmt::format("{} does not divide hidden_size {}", out.n_head, n_embd), "a divisor of the width");
  if (!head_dim && defaults.head_dim == HeadDim::width_over_heads) head_dim = n_embd / out.n_head;
  if (!head_dim && defaults.head_dim == HeadDim::qwen3) head_dim = 128;
  out.head_dim = head_dim.value_or(n_embd / out.n_head);
  if (out.head_dim % 2 != 0) throw c.error(fmt::format("head size {} is odd", out.head_dim), "an even head size: RoPE rotates pairs");
  out.vocab = c["vocab_size"].integer(1, kMaxVocab);
  out.tie_word_embeddings = c.boolean_or("tie_word_embeddings", false);
  refuse_unsupported(c, a);
  check_layer_types(c);

  auto& m = out.metadata;
  m.push_back(kv(a + ".block_count", uint32_t(c["num_hidden_layers"].integer(1, kMaxLayers))));
  m.push_back(kv(a + ".context_length", uint32_t(c["max_position_embeddings"].integer(1, INT32_MAX))));
  m.push_back(kv(a + ".embedding_length", uint32_t(n_embd)));
  m.push_back(kv(a + ".feed_forward_length", uint32_t(c["intermediate_size"].integer(1, kMaxWidth))));
  m.push_back(kv(a + ".attention.head_count", uint32_t(out.n_head)));
  if (c.has("num_key_value_heads")) m.push_back(kv(a + ".attention.head_count_kv", uint32_t(out.n_head_kv)));
  add_rope_metadata(c, a, out.head_dim, out);
  m.push_back(kv(a + ".attention.layer_norm_rms_epsilon", positive_float(c, "rms_norm_eps").value_or(defaults.rms_norm_eps)));
  if (arch.moe) add_expert_metadata(c, a, defaults, out);
  if (head_dim) {
    m.push_back(kv(a + ".attention.key_length", uint32_t(*head_dim)));
    m.push_back(kv(a + ".attention.value_length", uint32_t(*head_dim)));
  }
  if (a == "llama") {  // LlamaModel.set_gguf_parameters adds these two
    m.push_back(kv(a + ".vocab_size", uint32_t(out.vocab)));
    m.push_back(kv(a + ".rope.dimension_count", uint32_t(out.head_dim)));
  }
  if (a == "qwen2moe" || a == "qwen3moe") {
    refuse_dense_layers(c, a);
    add_qwen_expert_widths(c, a, defaults, out);
  }

  const auto generation_path = dir / "generation_config.json";
  const json generation_json = std::filesystem::exists(generation_path) ? read_json_file(generation_path) : json::object();
  const JsonField generation(generation_json, generation_path.string());
  if (!generation_json.is_object()) throw generation.error("is not an object");
  for (auto [field, id] : {std::pair{"bos_token_id", &out.bos_id}, {"eos_token_id", &out.eos_id}, {"pad_token_id", &out.pad_id}})
    *id = token_id(c, field) ? token_id(c, field) : token_id(generation, field);
  if (a == "llama" && !c.json().contains("bos_token_id")) out.bos_id = 1;  // LlamaConfig's and MistralConfig's defaults
  if (a == "llama" && !c.json().contains("eos_token_id")) out.eos_id = 2;
  return out;
}

}  // namespace lowbit
