#include "hf_config.h"

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <numbers>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

using nlohmann::json;

template <class T>
gguf::KeyValue kv(std::string key, T value) {
  return {std::move(key), gguf::Value{value}};
}

// Reads fields of one JSON object, naming the file and the field's path in every error.
class Fields {
 public:
  Fields(const json& object, std::string file, std::string path = "") : object_(object), file_(std::move(file)), path_(std::move(path)) {}

  bool has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }
  std::string where(const char* key) const { return path_.empty() ? key : path_ + "." + key; }

  int64_t integer(const char* key) const {
    if (!has(key) || !object_[key].is_number_integer()) throw Error(fmt::format("config has no integer '{}'", where(key)), {.file = file_});
    return object_[key].get<int64_t>();
  }
  std::optional<int64_t> optional_integer(const char* key) const { return has(key) ? std::optional(integer(key)) : std::nullopt; }
  std::optional<double> number(const char* key) const {
    if (!has(key)) return std::nullopt;
    if (!object_[key].is_number()) throw Error(fmt::format("'{}' is not a number", where(key)), {.file = file_});
    return object_[key].get<double>();
  }
  std::optional<bool> boolean(const char* key) const {
    if (!has(key)) return std::nullopt;
    if (!object_[key].is_boolean()) throw Error(fmt::format("'{}' is not true or false", where(key)), {.file = file_});
    return object_[key].get<bool>();
  }
  std::optional<std::string> string(const char* key) const {
    if (!has(key)) return std::nullopt;
    if (!object_[key].is_string()) throw Error(fmt::format("'{}' is not a string", where(key)), {.file = file_});
    return object_[key].get<std::string>();
  }
  [[noreturn]] void refuse(const char* key, const std::string& why, const std::string& expected = "") const {
    throw Error(fmt::format("'{}' {}", where(key), why), {.file = file_, .expected = expected});
  }

 private:
  const json& object_;
  std::string file_, path_;
};

// transformers 5 keeps RoPE in rope_parameters (flat, or one dict per attention type); older
// checkpoints in rope_theta + rope_scaling ("type" or "rope_type"). Either way, the parameters of
// full attention, with rope_theta folded in, as the converter's TextModel.__init__ reads them.
json rope_parameters_of(const json& config, const std::string& file) {
  const char* key = config.contains("rope_parameters") && !config["rope_parameters"].is_null() ? "rope_parameters" : "rope_scaling";
  json rope = config.contains(key) && !config[key].is_null() ? config[key] : json::object();
  if (!rope.is_object()) throw Error(fmt::format("'{}' is not an object", key), {.file = file});
  const bool per_layer_type = rope.contains("full_attention") || rope.contains("sliding_attention");
  if (per_layer_type) {
    if (rope.contains("sliding_attention"))
      throw Error(fmt::format("'{}.sliding_attention': sliding-window layers are not supported for this architecture", key), {.file = file});
    rope = rope["full_attention"];
    if (!rope.is_object()) throw Error(fmt::format("'{}.full_attention' is not an object", key), {.file = file});
  } else {
    if (!rope.contains("rope_theta") && config.contains("rope_theta")) rope["rope_theta"] = config["rope_theta"];
    if (!rope.contains("rope_type") && rope.contains("type")) rope["rope_type"] = rope["type"];
  }
  return rope;
}

void add_rope_metadata(const json& config, const std::string& file, const std::string& a, int64_t head_dim, HfModelConfig& out) {
  const json rope_json = rope_parameters_of(config, file);
  const Fields rope(rope_json, file, config.contains("rope_parameters") ? "rope_parameters" : "rope_scaling");
  const std::string type = rope.string("rope_type").value_or("default");
  const auto factor = rope.number("factor");
  if (type == "linear" && factor) {
    out.metadata.push_back(kv(a + ".rope.scaling.type", std::string("linear")));
    out.metadata.push_back(kv(a + ".rope.scaling.factor", float(*factor)));
  } else if (type == "yarn" && factor) {
    out.metadata.push_back(kv(a + ".rope.scaling.type", std::string("yarn")));
    out.metadata.push_back(kv(a + ".rope.scaling.factor", float(*factor)));
    out.metadata.push_back(kv(a + ".rope.scaling.original_context_length", uint32_t(rope.integer("original_max_position_embeddings"))));
    for (auto [field, key] : {std::pair{"extrapolation_factor", "yarn_ext_factor"}, {"attention_factor", "yarn_attn_factor"},
                              {"beta_fast", "yarn_beta_fast"}, {"beta_slow", "yarn_beta_slow"}})
      if (const auto v = rope.number(field)) out.metadata.push_back(kv(a + ".rope.scaling." + key, float(*v)));
  } else if (type != "default" && type != "llama3" && type != "linear" && type != "yarn") {
    rope.refuse("rope_type", fmt::format("is '{}', which lowbit does not convert", type), "default, linear, llama3 or yarn");
  }
  const auto theta = rope.number("rope_theta");
  if (theta) out.metadata.push_back(kv(a + ".rope.freq_base", float(*theta)));
  if (type == "llama3")
    out.rope_freqs = llama3_rope_freqs(float(theta.value_or(10000.0)), head_dim, float(rope.number("factor").value_or(8.0)),
                                       float(rope.number("low_freq_factor").value_or(1.0)), float(rope.number("high_freq_factor").value_or(4.0)),
                                       float(rope.optional_integer("original_max_position_embeddings").value_or(8192)));
}

// Fields the converter (and lowbit's runtime) have no place for in these architectures: refused
// rather than converted into a model that computes something else.
void refuse_unsupported(const Fields& c, const std::string& a) {
  if (const auto f = c.number("partial_rotary_factor"); f && *f != 1.0)
    c.refuse("partial_rotary_factor", fmt::format("is {}: llama.cpp rotates whole heads in this architecture", *f), "1.0 or absent");
  if (c.boolean("mlp_bias").value_or(false)) c.refuse("mlp_bias", "is true: MLP biases are not supported", "false");
  if (a == "llama" && c.boolean("attention_bias").value_or(false))
    c.refuse("attention_bias", "is true: the output projection's bias has no place in llama.cpp's Llama", "false");
  if (c.boolean("use_sliding_window").value_or(false)) c.refuse("use_sliding_window", "is true: sliding-window attention is not supported", "false");
}

void check_layer_types(const json& config, const std::string& file) {
  if (!config.contains("layer_types") || config["layer_types"].is_null()) return;
  if (!config["layer_types"].is_array()) throw Error("'layer_types' is not a list", {.file = file});
  for (size_t i = 0; i < config["layer_types"].size(); ++i)
    if (config["layer_types"][i] != "full_attention")
      throw Error(fmt::format("'layer_types[{}]' is {}: only full attention is supported", i, config["layer_types"][i].dump()),
                  {.file = file, .expected = "\"full_attention\""});
}

json read_json_if_present(const std::filesystem::path& path) {
  if (!std::filesystem::exists(path)) return json::object();
  std::ifstream in(path);
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = path.string()});
  }
}

// An id, or none where the field holds a list (generation_config's several EOS ids) or nothing.
std::optional<int64_t> token_id(const json& object, const char* key) {
  if (!object.is_object() || !object.contains(key) || !object[key].is_number_integer()) return std::nullopt;
  return object[key].get<int64_t>();
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

HfModelConfig read_hf_model_config(const json& config, const std::string& file, const std::filesystem::path& dir, const std::string& a) {
  const Fields c(config, file);
  HfModelConfig out;
  const int64_t n_embd = c.integer("hidden_size");
  out.n_head = c.integer("num_attention_heads");
  out.n_head_kv = c.optional_integer("num_key_value_heads").value_or(out.n_head);
  // head_dim as transformers 5's config classes fill it in (the converter reads the config through
  // AutoConfig): Llama and Mistral default to hidden_size / heads, Qwen3 to 128, Qwen2 has none.
  std::optional<int64_t> head_dim = c.optional_integer("head_dim");
  if (!head_dim && a == "llama") head_dim = n_embd / out.n_head;
  if (!head_dim && a == "qwen3") head_dim = 128;
  out.head_dim = head_dim.value_or(n_embd / out.n_head);
  out.vocab = c.integer("vocab_size");
  out.tie_word_embeddings = c.boolean("tie_word_embeddings").value_or(false);
  refuse_unsupported(c, a);
  check_layer_types(config, file);

  auto& m = out.metadata;
  m.push_back(kv(a + ".block_count", uint32_t(c.integer("num_hidden_layers"))));
  m.push_back(kv(a + ".context_length", uint32_t(c.integer("max_position_embeddings"))));
  m.push_back(kv(a + ".embedding_length", uint32_t(n_embd)));
  m.push_back(kv(a + ".feed_forward_length", uint32_t(c.integer("intermediate_size"))));
  m.push_back(kv(a + ".attention.head_count", uint32_t(out.n_head)));
  if (c.has("num_key_value_heads")) m.push_back(kv(a + ".attention.head_count_kv", uint32_t(out.n_head_kv)));
  add_rope_metadata(config, file, a, out.head_dim, out);
  // transformers' own default where the config has none (LlamaConfig, Qwen2Config: 1e-6).
  m.push_back(kv(a + ".attention.layer_norm_rms_epsilon", float(c.number("rms_norm_eps").value_or(1e-6))));
  if (head_dim) {
    m.push_back(kv(a + ".attention.key_length", uint32_t(*head_dim)));
    m.push_back(kv(a + ".attention.value_length", uint32_t(*head_dim)));
  }
  if (a == "llama") {  // LlamaModel.set_gguf_parameters adds these two
    m.push_back(kv(a + ".vocab_size", uint32_t(out.vocab)));
    m.push_back(kv(a + ".rope.dimension_count", uint32_t(out.head_dim)));
  }

  const json generation = read_json_if_present(dir / "generation_config.json");
  for (auto [field, id] : {std::pair{"bos_token_id", &out.bos_id}, {"eos_token_id", &out.eos_id}, {"pad_token_id", &out.pad_id}})
    *id = token_id(config, field) ? token_id(config, field) : token_id(generation, field);
  if (a == "llama" && !config.contains("bos_token_id")) out.bos_id = 1;  // LlamaConfig's and MistralConfig's defaults
  if (a == "llama" && !config.contains("eos_token_id")) out.eos_id = 2;
  return out;
}

}  // namespace lowbit
