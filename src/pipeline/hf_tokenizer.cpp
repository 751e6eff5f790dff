// tokenizer.json -> llama.cpp's tokenizer.ggml.* metadata, as its converter writes them for byte-level
// BPE vocabularies (GPT-2 style: Llama 3, Qwen2/3, SmolLM, Mistral Nemo).
#include <fmt/format.h>

#include <fstream>
#include <map>

#include "hf_source.h"
#include "lowbit/core/error.h"

namespace lowbit {
namespace {

using nlohmann::json;

// llama.cpp token types.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

json read_json(const std::filesystem::path& path) {
  std::ifstream in(path);
  if (!in) throw Error("cannot open", {.file = path.string()});
  try {
    return json::parse(in);
  } catch (const json::exception& e) {
    throw Error(fmt::format("not valid JSON: {}", e.what()), {.file = path.string()});
  }
}

// llama.cpp names its pre-tokenizers by the regexes they split with; these are the ones of the
// families lowbit converts. Unknown ones are "default", which llama.cpp accepts with a warning.
std::string pre_tokenizer_name(const json& tokenizer) {
  const std::string text = tokenizer.contains("pre_tokenizer") ? tokenizer["pre_tokenizer"].dump() : "";
  auto has = [&](std::string_view s) { return text.find(s) != std::string::npos; };
  if (has(R"(\\p{N}{1,3})")) return "llama-bpe";
  if (has(R"([^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|)")) return "qwen2";
  if (has(R"("individual_digits":true)") && has("ByteLevel")) return "smollm";
  if (has("ByteLevel")) return "gpt-2";
  return "default";
}

std::string token_text(const json& config_value) {
  if (config_value.is_string()) return config_value.get<std::string>();
  if (config_value.is_object() && config_value.contains("content")) return config_value["content"].get<std::string>();
  return {};
}

// What tokenizer.json's post-processor says about adding BOS ("bos") and EOS ("eos"): ByteLevel adds
// neither; a TemplateProcessing adds the special token its single-sequence template starts (ends)
// with when that is the BOS (EOS) token. Roles it says nothing about are absent.
std::map<std::string, bool> post_processor_adds(const json& tokenizer, const std::string& bos, const std::string& eos) {
  std::map<std::string, bool> adds;
  if (!tokenizer.contains("post_processor") || !tokenizer["post_processor"].is_object()) return adds;
  const json& pp = tokenizer["post_processor"];
  const json processors = pp.value("type", "") == "Sequence" && pp.contains("processors") ? pp["processors"] : json::array({pp});
  for (const auto& p : processors) {
    if (!p.is_object()) continue;
    const std::string type = p.value("type", "");
    if (type == "ByteLevel") {
      adds.emplace("bos", false);
      adds.emplace("eos", false);
    } else if (type == "TemplateProcessing" && p.contains("single") && p["single"].is_array() && p["single"].size() > 1) {
      auto special = [](const json& item) {
        return item.is_object() && item.contains("SpecialToken") && item["SpecialToken"].is_object() ? item["SpecialToken"].value("id", "") : "";
      };
      if (const auto first = special(p["single"].front()); !first.empty()) adds["bos"] = first == bos;
      if (const auto last = special(p["single"].back()); !last.empty()) adds["eos"] = last == eos;
    }
  }
  return adds;
}

}  // namespace

void add_hf_tokenizer_metadata(const std::filesystem::path& dir, int64_t vocab_size, std::vector<gguf::KeyValue>& out) {
  const auto path = dir / "tokenizer.json";
  if (!std::filesystem::exists(path)) throw Error("no tokenizer.json", {.file = path.string()});
  const json tokenizer = read_json(path);
  const std::string file = path.string();
  if (!tokenizer.contains("model") || tokenizer["model"].value("type", "") != "BPE")
    throw Error("only BPE tokenizers are supported", {.file = file, .expected = R"("model": {"type": "BPE"})"});
  const json& model = tokenizer["model"];
  if (model.value("byte_fallback", false))
    throw Error("SentencePiece-style BPE (byte_fallback) is not supported yet", {.file = file});

  std::map<int64_t, std::pair<std::string, int32_t>> by_id;  // id -> token, type
  for (const auto& [token, id] : model["vocab"].items()) by_id[id.get<int64_t>()] = {token, kNormal};
  std::map<std::string, int64_t> added_ids;
  if (tokenizer.contains("added_tokens"))
    for (const auto& t : tokenizer["added_tokens"]) {
      const int64_t id = t["id"].get<int64_t>();
      by_id[id] = {t["content"].get<std::string>(), t.value("special", false) ? kControl : kUserDefined};
      added_ids[t["content"].get<std::string>()] = id;
    }
  const int64_t n = std::max<int64_t>(vocab_size, by_id.empty() ? 0 : by_id.rbegin()->first + 1);
  std::vector<std::string> tokens;
  gguf::Array types{gguf::ValueType::i32, {}};
  for (int64_t id = 0; id < n; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      tokens.push_back(fmt::format("[PAD{}]", id));  // the model's vocabulary is padded past the tokenizer's
      types.items.push_back({int32_t(kUserDefined)});
    } else {
      tokens.push_back(it->second.first);
      types.items.push_back({it->second.second});
    }
  }
  std::vector<std::string> merges;
  for (const auto& m : model["merges"]) {
    if (m.is_string()) merges.push_back(m.get<std::string>());
    else if (m.is_array() && m.size() == 2) merges.push_back(m[0].get<std::string>() + " " + m[1].get<std::string>());
    else throw Error("merge is neither \"a b\" nor [a, b]", {.file = file});
  }

  out.push_back({"tokenizer.ggml.model", {std::string("gpt2")}});
  out.push_back({"tokenizer.ggml.pre", {pre_tokenizer_name(tokenizer)}});
  out.push_back({"tokenizer.ggml.tokens", gguf::make_string_array(std::move(tokens))});
  out.push_back({"tokenizer.ggml.token_type", {std::move(types)}});
  out.push_back({"tokenizer.ggml.merges", gguf::make_string_array(std::move(merges))});

  // Special tokens, by name in tokenizer_config.json (what llama.cpp's SpecialVocab reads).
  const auto config_path = dir / "tokenizer_config.json";
  const json config = std::filesystem::exists(config_path) ? read_json(config_path) : json::object();
  for (const auto& [role, key] : {std::pair{"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
                                  {"unk", "tokenizer.ggml.unknown_token_id"}, {"pad", "tokenizer.ggml.padding_token_id"}}) {
    const std::string text = config.contains(std::string(role) + "_token") ? token_text(config[std::string(role) + "_token"]) : "";
    auto it = added_ids.find(text);
    if (it != added_ids.end()) out.push_back({key, {uint32_t(it->second)}});
  }
  // Whether BOS/EOS are added: the post-processor decides where it says, tokenizer_config.json's
  // add_*_token otherwise (llama.cpp's SpecialVocab).
  auto adds = post_processor_adds(tokenizer, config.contains("bos_token") ? token_text(config["bos_token"]) : "",
                                  config.contains("eos_token") ? token_text(config["eos_token"]) : "");
  for (const char* role : {"bos", "eos"}) {
    const std::string key = fmt::format("add_{}_token", role);
    if (!adds.contains(role) && config.contains(key) && config[key].is_boolean()) adds[role] = config[key].get<bool>();
    if (adds.contains(role)) out.push_back({"tokenizer.ggml." + key, {adds[role]}});
  }
  if (config.contains("chat_template") && config["chat_template"].is_string())
    out.push_back({"tokenizer.chat_template", {config["chat_template"].get<std::string>()}});
  else if (std::ifstream jinja(dir / "chat_template.jinja"); jinja)
    out.push_back({"tokenizer.chat_template", {std::string(std::istreambuf_iterator<char>(jinja), {})}});
}

}  // namespace lowbit
