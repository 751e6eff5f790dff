// tokenizer.ggml.* -> tokenizer.json + tokenizer_config.json (the inverse of hf_tokenizer.cpp), built
// from lowbit's own Tokenizer so that the ids tokenizers gives are the ids lowbit and llama.cpp give:
// the same pre-tokenizer regexes, the same special tokens, the same BOS/EOS rule.
#include "lowbit/pipeline/hf_tokenizer_export.h"

#include <fmt/format.h>

#include <algorithm>
#include <ranges>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "pipeline/outputs/checkpoint_output.h"
#include "lowbit/core/error.h"
#include "lowbit/model/tokenizer.h"

namespace lowbit {
namespace {

using nlohmann::ordered_json;

bool is_added_token(TokenType type) {
  return type == TokenType::Control || type == TokenType::UserDefined || type == TokenType::Unknown;
}

// Special tokens are matched in the text before the model runs, as llama.cpp matches them. Control and
// unknown tokens are "special" (tokenizers skips them with split_special_tokens, as llama.cpp does
// without parse_special); user-defined tokens are always matched, in both.
ordered_json added_tokens(const Tokenizer& tok) {
  ordered_json added = ordered_json::array();
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id) {
    const TokenType type = tok.token_type(id);
    if (!is_added_token(type)) continue;
    added.push_back({{"id", id}, {"content", tok.token_text(id)}, {"single_word", false}, {"lstrip", false}, {"rstrip", false},
                     {"normalized", false}, {"special", type != TokenType::UserDefined}});
  }
  return added;
}

// BOS and EOS where the vocabulary adds them (llama.cpp's add_special).
ordered_json post_processor(const Tokenizer& tok) {
  if (!tok.adds_bos() && !tok.adds_eos()) return nullptr;
  ordered_json single = ordered_json::array(), pair = ordered_json::array(), specials = ordered_json::object();
  auto special = [&](int32_t id, ordered_json& into, int type_id) {
    const std::string& text = tok.token_text(id);
    into.push_back({{"SpecialToken", {{"id", text}, {"type_id", type_id}}}});
    specials[text] = {{"id", text}, {"ids", {id}}, {"tokens", {text}}};
  };
  for (auto [seq, type_id] : {std::pair{"A", 0}, {"B", 1}}) {
    if (tok.adds_bos()) special(*tok.bos_id(), pair, type_id);
    pair.push_back({{"Sequence", {{"id", seq}, {"type_id", type_id}}}});
    if (tok.adds_eos()) special(*tok.eos_id(), pair, type_id);
  }
  if (tok.adds_bos()) special(*tok.bos_id(), single, 0);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (tok.adds_eos()) special(*tok.eos_id(), single, 0);
  return {{"type", "TemplateProcessing"}, {"single", single}, {"pair", pair}, {"special_tokens", specials}};
}

ordered_json vocab_of(const Tokenizer& tok) {
  ordered_json vocab = ordered_json::object();
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id)
    if (!vocab.contains(tok.token_text(id))) vocab[tok.token_text(id)] = id;  // a repeated text keeps its first id
  return vocab;
}

ordered_json byte_level_bpe(const Tokenizer& tok, const std::vector<gguf::KeyValue>& metadata) {
  // lowbit's pre-tokenizer regexes, each splitting the pieces of the one before ("Isolated": matches
  // and the text between them become pieces), then GPT-2's byte-to-character map without its regex.
  ordered_json steps = ordered_json::array();
  for (const auto& regex : tok.pre_tokenizer_regexes()) {
    if (regex == R"(\p{N})")  // every digit apart (SmolLM, StarCoder): written as the Digits step their own files use
      steps.push_back({{"type", "Digits"}, {"individual_digits", true}});
    else
      steps.push_back({{"type", "Split"}, {"pattern", {{"Regex", regex}}}, {"behavior", "Isolated"}, {"invert", false}});
  }
  steps.push_back({{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", false}});
  ordered_json merges = ordered_json::array();
  const auto found = std::ranges::find(metadata, std::string("tokenizer.ggml.merges"), &gguf::KeyValue::key);
  if (found != metadata.end())
    for (const auto& item : found->value.get_if<gguf::Array>()->items) {
      const std::string& merge = *item.get_if<std::string>();
      const size_t space = merge.find(' ', 1);
      merges.push_back({merge.substr(0, space), space == std::string::npos ? "" : merge.substr(space + 1)});
    }
  return {{"normalizer", nullptr},
          {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", steps}}},
          {"post_processor", post_processor(tok)},
          {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr}, {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr}, {"fuse_unk", false}, {"byte_fallback", false},
                     {"ignore_merges", tok.ignores_merges()}, {"vocab", vocab_of(tok)}, {"merges", merges}}}};
}

// SentencePiece's BPE merges the adjacent pair whose joined piece scores highest. As tokenizers' BPE
// merges by rank, every split of every piece into two pieces of the vocabulary becomes a merge ranked
// by the joined piece's score (ties: the vocabulary's order, then the halves' ids).
ordered_json spm_merges(const Tokenizer& tok) {
  std::unordered_map<std::string, int32_t> ids;
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id)
    if (tok.token_type(id) != TokenType::Byte) ids.emplace(tok.token_text(id), id);
  struct Merge {
    int32_t joined, left, right;
    size_t split;
  };
  std::vector<Merge> merges;
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id) {
    const std::string& text = tok.token_text(id);
    if (tok.token_type(id) == TokenType::Byte) continue;
    for (size_t split = 1; split < text.size(); ++split) {
      if ((static_cast<unsigned char>(text[split]) & 0xC0) == 0x80) continue;  // inside a UTF-8 sequence
      const auto left = ids.find(text.substr(0, split)), right = ids.find(text.substr(split));
      if (left != ids.end() && right != ids.end()) merges.push_back({id, left->second, right->second, split});
    }
  }
  std::ranges::stable_sort(merges, [&](const Merge& a, const Merge& b) {
    if (tok.token_score(a.joined) != tok.token_score(b.joined)) return tok.token_score(a.joined) > tok.token_score(b.joined);
    if (a.joined != b.joined) return a.joined < b.joined;
    return std::pair(a.left, a.right) < std::pair(b.left, b.right);
  });
  ordered_json out = ordered_json::array();
  for (const Merge& m : merges) out.push_back({tok.token_text(m.left), tok.token_text(m.right)});
  return out;
}

ordered_json sentencepiece_bpe(const Tokenizer& tok) {
  // llama.cpp writes spaces as "▁" and prepends one to the text and after each special token; a
  // normalizer runs on each stretch between added tokens, so Prepend does exactly that.
  ordered_json normalizers = ordered_json::array();
  if (tok.adds_space_prefix()) normalizers.push_back({{"type", "Prepend"}, {"prepend", "\u2581"}});
  normalizers.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "\u2581"}});
  ordered_json decoders = {{{"type", "Replace"}, {"pattern", {{"String", "\u2581"}}}, {"content", " "}},
                           {{"type", "ByteFallback"}}, {{"type", "Fuse"}}};
  if (tok.adds_space_prefix()) decoders.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
  // (A plain loop: clang, which builds the fuzz targets, rejects libstdc++ 12's ranges::iota_view.)
  ordered_json unk_token = nullptr;
  for (int32_t id = 0; id < int32_t(tok.vocab_size()); ++id)
    if (tok.token_type(id) == TokenType::Unknown) {
      unk_token = tok.token_text(id);
      break;
    }
  return {{"normalizer", {{"type", "Sequence"}, {"normalizers", normalizers}}},
          {"pre_tokenizer", nullptr},
          {"post_processor", post_processor(tok)},
          {"decoder", {{"type", "Sequence"}, {"decoders", decoders}}},
          {"model", {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", unk_token}, {"continuing_subword_prefix", nullptr},
                     {"end_of_word_suffix", nullptr}, {"fuse_unk", true}, {"byte_fallback", true}, {"ignore_merges", false},
                     {"vocab", vocab_of(tok)}, {"merges", spm_merges(tok)}}}};
}

const gguf::Value* find(const std::vector<gguf::KeyValue>& metadata, std::string_view key) {
  const auto it = std::ranges::find(metadata, key, &gguf::KeyValue::key);
  return it == metadata.end() ? nullptr : &it->value;
}

ordered_json tokenizer_config(const Tokenizer& tok, const std::vector<gguf::KeyValue>& metadata) {
  ordered_json config = {{"tokenizer_class", "PreTrainedTokenizerFast"}, {"clean_up_tokenization_spaces", false}};
  auto name = [&](std::optional<int32_t> id) { return id ? ordered_json(tok.token_text(*id)) : ordered_json(nullptr); };
  if (tok.bos_id()) config["bos_token"] = name(tok.bos_id());
  if (tok.eos_id()) config["eos_token"] = name(tok.eos_id());
  for (auto [role, key] : {std::pair{"unk_token", "tokenizer.ggml.unknown_token_id"}, {"pad_token", "tokenizer.ggml.padding_token_id"}})
    if (const auto* v = find(metadata, key); v && v->as_int() && *v->as_int() >= 0 && *v->as_int() < int64_t(tok.vocab_size()))
      config[role] = tok.token_text(int32_t(*v->as_int()));
  config["add_bos_token"] = tok.adds_bos();
  config["add_eos_token"] = tok.adds_eos();
  if (const auto* v = find(metadata, "tokenizer.chat_template"); v && v->get_if<std::string>()) config["chat_template"] = *v->get_if<std::string>();
  return config;
}

}  // namespace

void write_hf_tokenizer(const std::vector<gguf::KeyValue>& metadata, const std::filesystem::path& dir) {
  const Tokenizer tok = Tokenizer::from_gguf_metadata(metadata);
  ordered_json body = tok.kind() == Tokenizer::Kind::BytePairEncoding ? byte_level_bpe(tok, metadata) : sentencepiece_bpe(tok);
  ordered_json tokenizer = {{"version", "1.0"}, {"truncation", nullptr}, {"padding", nullptr}, {"added_tokens", added_tokens(tok)}};
  tokenizer.update(body);
  write_json_file(dir / "tokenizer.json", tokenizer);
  write_json_file(dir / "tokenizer_config.json", tokenizer_config(tok, metadata));
}

}  // namespace lowbit
