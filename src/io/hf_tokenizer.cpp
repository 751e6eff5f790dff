// tokenizer.json -> llama.cpp's tokenizer.ggml.* metadata, as its converter writes them for byte-level
// BPE vocabularies (GPT-2 style: Llama 3, Qwen2/3, SmolLM, Mistral Nemo).
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <map>

#include "io/hf_source.h"
#include "lowbit/core/error.h"
#include "lowbit/io/json_file.h"

namespace lowbit {
namespace {

using nlohmann::json;

// llama.cpp token types.
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

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

// tokenizer_config.json's "bos_token": "<s>" or {"content": "<s>", ...}.
std::string token_text(const JsonField& value) {
  if (value.json().is_string()) return value.string();
  if (value.json().is_object()) return value["content"].string();
  throw value.error("is neither a string nor an object", "a token's text or {\"content\": text}");
}

// What tokenizer.json's post-processor says about adding BOS ("bos") and EOS ("eos"): ByteLevel adds
// neither; a TemplateProcessing adds the special token its single-sequence template starts (ends)
// with when that is the BOS (EOS) token. Roles it says nothing about are absent.
std::map<std::string, bool> post_processor_adds(const JsonField& tokenizer, const std::string& bos, const std::string& eos) {
  std::map<std::string, bool> adds;
  const auto pp = tokenizer.find("post_processor");
  if (!pp || !pp->json().is_object()) return adds;
  const std::vector<JsonField> processors = pp->string_or("type", "") == "Sequence" && pp->has("processors") ? (*pp)["processors"].elements()
                                                                                                               : std::vector<JsonField>{*pp};
  for (const auto& p : processors) {
    if (!p.json().is_object()) continue;
    const std::string type = p.string_or("type", "");
    if (type == "ByteLevel") {
      adds.emplace("bos", false);
      adds.emplace("eos", false);
    } else if (type == "TemplateProcessing" && p.has("single")) {
      const auto single = p["single"].elements();
      if (single.size() < 2) continue;
      auto special = [](const JsonField& item) -> std::string {
        if (!item.json().is_object() || !item.has("SpecialToken")) return "";
        return item["SpecialToken"].string_or("id", "");
      };
      if (const auto first = special(single.front()); !first.empty()) adds["bos"] = first == bos;
      if (const auto last = special(single.back()); !last.empty()) adds["eos"] = last == eos;
    }
  }
  return adds;
}

}  // namespace

void add_hf_tokenizer_metadata(const std::filesystem::path& dir, int64_t vocab_size, std::vector<gguf::KeyValue>& out) {
  const auto path = dir / "tokenizer.json";
  if (!std::filesystem::exists(path)) throw Error("no tokenizer.json", {.file = path.string()});
  const json document = read_json_file(path);
  const std::string file = path.string();
  const JsonField tokenizer(document, file);
  const auto model = tokenizer.find("model");
  if (!model || model->string_or("type", "") != "BPE")
    throw Error("only BPE tokenizers are supported", {.file = file, .expected = R"("model": {"type": "BPE"})"});
  if (model->boolean_or("byte_fallback", false))
    throw Error("SentencePiece-style BPE (byte_fallback) is not supported yet", {.file = file});

  // Ids index the token list lowbit builds, so they are bounded by what the file holds: the vocabulary
  // and added tokens, or the model's (checked) vocab_size when it pads past them.
  const auto vocab = (*model)["vocab"].members();
  const auto added = tokenizer.find("added_tokens");
  const auto added_tokens = added ? added->elements() : std::vector<JsonField>{};
  const int64_t max_id = std::max<int64_t>(vocab_size, int64_t(vocab.size() + added_tokens.size())) - 1;
  std::map<int64_t, std::pair<std::string, int32_t>> by_id;  // id -> token, type
  for (const auto& [token, id] : vocab) by_id[id.integer(0, max_id)] = {token, kNormal};
  std::map<std::string, int64_t> added_ids;
  for (const auto& t : added_tokens) {
    const int64_t id = t["id"].integer(0, max_id);
    const std::string content = t["content"].string();
    by_id[id] = {content, t.boolean_or("special", false) ? kControl : kUserDefined};
    added_ids[content] = id;
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
  for (const auto& m : (*model)["merges"].elements()) {
    if (m.json().is_string()) merges.push_back(m.string());
    else if (m.json().is_array() && m.json().size() == 2) merges.push_back(m.elements()[0].string() + " " + m.elements()[1].string());
    else throw m.error("is neither \"a b\" nor [a, b]", "a merge");
  }

  out.push_back({"tokenizer.ggml.model", {std::string("gpt2")}});
  out.push_back({"tokenizer.ggml.pre", {pre_tokenizer_name(document)}});
  out.push_back({"tokenizer.ggml.tokens", gguf::make_string_array(std::move(tokens))});
  out.push_back({"tokenizer.ggml.token_type", {std::move(types)}});
  out.push_back({"tokenizer.ggml.merges", gguf::make_string_array(std::move(merges))});

  // Special tokens, by name in tokenizer_config.json (what llama.cpp's SpecialVocab reads).
  const auto config_path = dir / "tokenizer_config.json";
  const json config_document = std::filesystem::exists(config_path) ? read_json_file(config_path) : json::object();
  const JsonField config(config_document, config_path.string());
  for (const auto& [role, key] : {std::pair{"bos", "tokenizer.ggml.bos_token_id"}, {"eos", "tokenizer.ggml.eos_token_id"},
                                  {"unk", "tokenizer.ggml.unknown_token_id"}, {"pad", "tokenizer.ggml.padding_token_id"}}) {
    const auto value = config.find(std::string(role) + "_token");
    auto it = value ? added_ids.find(token_text(*value)) : added_ids.end();
    if (it != added_ids.end()) out.push_back({key, {uint32_t(it->second)}});
  }
  // Whether BOS/EOS are added: the post-processor decides where it says, tokenizer_config.json's
  // add_*_token otherwise (llama.cpp's SpecialVocab).
  auto adds = post_processor_adds(tokenizer, config.has("bos_token") ? token_text(config["bos_token"]) : "",
                                  config.has("eos_token") ? token_text(config["eos_token"]) : "");
  for (const char* role : {"bos", "eos"}) {
    const std::string key = fmt::format("add_{}_token", role);
    if (!adds.contains(role) && config.has(key)) adds[role] = config[key].boolean();
    if (adds.contains(role)) out.push_back({"tokenizer.ggml." + key, {adds[role]}});
  }
  if (const auto chat_template = config.find("chat_template"); chat_template && chat_template->json().is_string())
    out.push_back({"tokenizer.chat_template", {chat_template->string()}});
  else if (std::ifstream jinja(dir / "chat_template.jinja"); jinja)
    out.push_back({"tokenizer.chat_template", {std::string(std::istreambuf_iterator<char>(jinja), {})}});
}

}  // namespace lowbit
