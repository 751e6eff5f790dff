// The Tokenizer: vocabulary from GGUF metadata, special-token matching, encode/decode, following
// llama.cpp's llama_vocab (load, tokenizer_st_partition, tokenize, token_to_piece, detokenize).
#include "lowbit/model/tokenizer.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "tokenizer_vocabulary.h"

namespace lowbit {
namespace {

const gguf::Value* find_key(const std::vector<gguf::KeyValue>& metadata, std::string_view key) {
  for (const auto& kv : metadata)
    if (kv.key == key) return &kv.value;
  return nullptr;
}

Error bad_key(std::string_view key, std::string_view expected) {
  return key_error({}, std::string(key), "tokenizer metadata has the wrong type", std::string(expected));
}

std::string string_value(const std::vector<gguf::KeyValue>& metadata, std::string_view key) {
  const gguf::Value* v = find_key(metadata, key);
  if (!v) return {};
  if (auto s = v->get_if<std::string>()) return *s;
  throw bad_key(key, "string");
}

const gguf::Array* array_value(const std::vector<gguf::KeyValue>& metadata, std::string_view key) {
  const gguf::Value* v = find_key(metadata, key);
  if (!v) return nullptr;
  if (auto a = v->get_if<gguf::Array>()) return a;
  throw bad_key(key, "array");
}

std::optional<bool> bool_value(const std::vector<gguf::KeyValue>& metadata, std::string_view key) {
  const gguf::Value* v = find_key(metadata, key);
  if (!v) return std::nullopt;
  if (auto b = v->get_if<bool>()) return *b;
  throw bad_key(key, "bool");
}

// Token ids: a default that is out of range is dropped; a stored id out of range keeps the default.
std::optional<int32_t> token_id(const std::vector<gguf::KeyValue>& metadata, std::string_view key,
                                std::optional<int32_t> fallback, size_t n_tokens) {
  if (fallback && size_t(*fallback) >= n_tokens) fallback.reset();
  const gguf::Value* v = find_key(metadata, key);
  if (!v) return fallback;
  const auto id = v->as_int();
  if (!id) throw bad_key(key, "integer token id");
  if (*id < 0 || size_t(*id) >= n_tokens) return fallback;
  return int32_t(*id);
}

// A byte token's text is "<0xXX>" (two hex digits): decoding reads the byte from it.
bool is_byte_token_text(std::string_view text) {
  return text.size() == 6 && text.starts_with("<0x") && text.ends_with('>') && std::isxdigit(uint8_t(text[3])) &&
         std::isxdigit(uint8_t(text[4]));
}

// llama.cpp marks end-of-turn tokens as control by their text even when the converter did not, and
// control tokens are what parse_special matches.
bool looks_like_end_of_generation(std::string_view text) {
  static constexpr std::string_view kNames[] = {
      "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<|eom_id|>",
      "<EOT>", "_<EOT>", "<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>", "<|fim_pad|>", "<|fim_repo|>",
      "<|repo_name|>", "<|file_sep|>", "</s>", "<end_of_utterance>"};
  return std::find(std::begin(kNames), std::end(kNames), text) != std::end(kNames);
}

void read_tokens(const std::vector<gguf::KeyValue>& metadata, Tokenizer::Vocabulary& v) {
  const gguf::Array* tokens = array_value(metadata, "tokenizer.ggml.tokens");
  if (!tokens) throw key_error({}, "tokenizer.ggml.tokens", "no tokenizer.ggml.tokens in the metadata");
  const size_t n = tokens->items.size();
  const gguf::Array* scores = array_value(metadata, "tokenizer.ggml.scores");
  const gguf::Array* types = array_value(metadata, "tokenizer.ggml.token_type");
  if (scores && scores->items.size() < n) throw key_error({}, "tokenizer.ggml.scores", "fewer scores than tokens");
  if (types && types->items.size() < n) throw key_error({}, "tokenizer.ggml.token_type", "fewer token types than tokens");
  v.tokens.resize(n);
  v.scores.assign(n, 0.0f);
  v.types.assign(n, TokenType::Normal);
  for (size_t i = 0; i < n; ++i) {
    const auto* text = tokens->items[i].get_if<std::string>();
    if (!text) throw bad_key("tokenizer.ggml.tokens", "array of strings");
    v.tokens[i] = text->empty() ? fmt::format("[EMPTY_{}]", i) : *text;  // llama.cpp's name for empty tokens
    if (!v.token_ids.emplace(v.tokens[i], int32_t(i)).second)
      throw key_error({}, "tokenizer.ggml.tokens", fmt::format("token '{}' appears twice (ids {} and {})", v.tokens[i], v.token_ids[v.tokens[i]], i));
    if (scores) {
      const auto& s = scores->items[i];
      if (auto f = s.get_if<float>()) v.scores[i] = *f;
      else if (auto k = s.as_int()) v.scores[i] = float(*k);
      else throw bad_key("tokenizer.ggml.scores", "array of f32 or i32");
    }
    if (types) {
      const auto t = types->items[i].as_int();
      if (!t) throw bad_key("tokenizer.ggml.token_type", "array of i32");
      v.types[i] = (*t >= 1 && *t <= 6) ? TokenType(*t) : TokenType::Undefined;
      if (v.types[i] == TokenType::Byte && !is_byte_token_text(v.tokens[i]))
        throw key_error({}, "tokenizer.ggml.tokens", fmt::format("byte token {} is '{}'", i, v.tokens[i]), "<0xXX>");
    }
  }
}

void read_merges(const std::vector<gguf::KeyValue>& metadata, Tokenizer::Vocabulary& v) {
  const gguf::Array* merges = array_value(metadata, "tokenizer.ggml.merges");
  if (!merges) throw key_error({}, "tokenizer.ggml.merges", "byte-level BPE needs tokenizer.ggml.merges");
  for (size_t rank = 0; rank < merges->items.size(); ++rank) {
    const auto* line = merges->items[rank].get_if<std::string>();
    if (!line) throw bad_key("tokenizer.ggml.merges", "array of strings");
    // "left right", split at the first space after the first byte (a token may itself be " ").
    const size_t space = line->find(' ', 1);
    if (space == std::string::npos) continue;
    v.merge_ranks.emplace(merge_key(std::string_view(*line).substr(0, space), std::string_view(*line).substr(space + 1)),
                          int32_t(rank));
  }
}

// One piece of the text after special-token matching: either raw text or a special token's id.
struct Fragment {
  int32_t token;  // -1 for text
  size_t offset, length;
};

std::vector<Fragment> split_special_tokens(const Tokenizer::Vocabulary& v, std::string_view text, bool parse_special) {
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({-1, 0, text.size()});
  for (int32_t id : v.special_tokens) {
    const TokenType type = v.types[id];
    if (!parse_special && (type == TokenType::Control || type == TokenType::Unknown)) continue;
    const std::string_view needle = v.tokens[id];
    std::vector<Fragment> next;
    for (const Fragment& f : fragments) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      size_t at = f.offset;
      const size_t end = f.offset + f.length;
      for (size_t hit; (hit = text.substr(0, end).find(needle, at)) != std::string_view::npos; at = hit + needle.size()) {
        if (hit > at) next.push_back({-1, at, hit - at});
        next.push_back({id, hit, needle.size()});
      }
      if (at < end) next.push_back({-1, at, end - at});
    }
    fragments = std::move(next);
  }
  return fragments;
}

}  // namespace

Tokenizer Tokenizer::from_gguf_metadata(const std::vector<gguf::KeyValue>& metadata, const std::string& file) {
  try {
    return from_metadata(metadata);
  } catch (const Error& e) {  // the errors below name the key; this adds the file
    if (file.empty() || !e.context().file.empty()) throw;
    ErrorContext c = e.context();
    c.file = file;
    throw Error(e.problem(), c);
  }
}

Tokenizer Tokenizer::from_metadata(const std::vector<gguf::KeyValue>& metadata) {
  auto v = std::make_shared<Vocabulary>();
  const std::string model = string_value(metadata, "tokenizer.ggml.model");
  read_tokens(metadata, *v);
  const size_t n = v->tokens.size();
  std::optional<int32_t> bos, eos, unk;
  if (model == "llama") {
    v->kind = Kind::SentencePiece;
    v->add_bos = true;
    v->add_space_prefix = true;
    bos = 1, eos = 2, unk = 0;
  } else if (model == "gpt2") {
    v->kind = Kind::BytePairEncoding;
    v->pre = string_value(metadata, "tokenizer.ggml.pre");
    read_merges(metadata, *v);
    configure_pre_tokenizer(*v);
    bos = 11, eos = 11;  // llama.cpp's GPT-2 defaults, overridden by the ids most files store
  } else {
    throw key_error({}, "tokenizer.ggml.model", fmt::format("tokenizer model '{}' is not implemented", model), "llama (SentencePiece) or gpt2 (byte-level BPE)");
  }
  if (auto b = bool_value(metadata, "tokenizer.ggml.add_space_prefix")) v->add_space_prefix = *b;
  v->bos = token_id(metadata, "tokenizer.ggml.bos_token_id", bos, n);
  v->eos = token_id(metadata, "tokenizer.ggml.eos_token_id", eos, n);
  v->unk = token_id(metadata, "tokenizer.ggml.unknown_token_id", unk, n);
  if (auto b = bool_value(metadata, "tokenizer.ggml.add_bos_token")) v->add_bos = *b;
  if (auto b = bool_value(metadata, "tokenizer.ggml.add_eos_token")) v->add_eos = *b;
  if (v->add_bos && !v->bos) throw key_error({}, "tokenizer.ggml.bos_token_id", "add_bos_token is set but there is no BOS token");
  if (v->add_eos && !v->eos) throw key_error({}, "tokenizer.ggml.eos_token_id", "add_eos_token is set but there is no EOS token");

  for (size_t id = 0; id < n; ++id) {
    if (looks_like_end_of_generation(v->tokens[id]) && v->types[id] != TokenType::Control) v->types[id] = TokenType::Control;
    const TokenType t = v->types[id];
    if (t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) v->special_tokens.push_back(int32_t(id));
  }
  // Longest first, so "<|im_start|>" is found before any shorter token inside it.
  std::stable_sort(v->special_tokens.begin(), v->special_tokens.end(),
                   [&](int32_t a, int32_t b) { return v->tokens[a].size() > v->tokens[b].size(); });
  return Tokenizer(std::move(v));
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  const Vocabulary& v = *vocab_;
  std::vector<int32_t> out;
  if (add_special && v.add_bos) out.push_back(*v.bos);
  bool after_special = true;  // SPM: text at the start, or right after a special token, gets a leading space
  std::string buffer;
  for (const Fragment& f : split_special_tokens(v, text, parse_special)) {
    if (f.token >= 0) {
      out.push_back(f.token);
      after_special = true;
      continue;
    }
    const std::string_view piece = text.substr(f.offset, f.length);
    if (v.kind == Kind::BytePairEncoding) {
      encode_bpe(v, piece, out);
      continue;
    }
    buffer.clear();
    if (v.add_space_prefix && after_special) buffer += "\xE2\x96\x81";
    for (char c : piece) {
      if (c == ' ') buffer += "\xE2\x96\x81";  // SentencePiece writes spaces as U+2581 "▁"
      else buffer += c;
    }
    encode_spm(v, buffer, out);
    after_special = false;
  }
  if (add_special && v.add_eos) out.push_back(*v.eos);
  return out;
}

std::string Tokenizer::token_piece(int32_t id, bool render_special) const {
  const Vocabulary& v = *vocab_;
  const std::string& text = token_text(id);
  switch (v.types[id]) {
    case TokenType::Control:
    case TokenType::Unknown: return render_special ? text : std::string();
    case TokenType::UserDefined: return text;
    case TokenType::Byte: return std::string(1, char(std::stoi(text.substr(3, 2), nullptr, 16)));  // "<0xAB>", checked at load
    case TokenType::Normal: {
      if (v.kind == Kind::BytePairEncoding) return byte_level_decode(text);
      std::string out;
      for (size_t i = 0; i < text.size(); ++i) {
        if (text.compare(i, 3, "\xE2\x96\x81") == 0) out += ' ', i += 2;
        else out += text[i];
      }
      return out;
    }
    default: return {};  // unused and undefined tokens write nothing, as in llama.cpp
  }
}

// llama.cpp's clean_up_tokenization_spaces: " ?", " !", " .", " ," lose the space; so do " ' " between
// spaces, and " 's", " 'm", " 're", " 've".
static std::string clean_up_spaces(const std::string& s) {
  std::string a;
  for (size_t i = 0; i < s.size(); ++i) {
    const char x = s[i];
    if (i > 0 && s[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',') && !a.empty()) a.pop_back();
    a += x;
  }
  std::string b;
  for (size_t i = 0; i < a.size(); ++i) {
    const char x = a[i];
    if (i > 0 && x == '\'' && i + 1 < a.size() && a[i - 1] == ' ' && a[i + 1] == ' ') {
      b.pop_back();
      b += x;
      a[++i] = '\0';  // the space after goes too; llama.cpp blanks it, so it matches nothing later
      continue;
    }
    b += x;
  }
  std::string c;
  for (size_t i = 0; i < b.size(); ++i) {
    const char x = b[i];
    if (i > 0 && b[i - 1] == ' ' && x == '\'' && i + 1 < b.size()) {
      const char x1 = b[i + 1];
      const char x2 = i + 2 < b.size() ? b[i + 2] : '\0';
      if (x1 == 's' || x1 == 'm' || (x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) c.pop_back();
    }
    c += x;
  }
  return c;
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool remove_special, bool render_special) const {
  const Vocabulary& v = *vocab_;
  bool strip_leading_space = v.add_space_prefix;  // undo the space encode prepended
  if (remove_special && v.add_bos && !ids.empty() && ids.front() == v.bos) {
    strip_leading_space = false;
    ids = ids.subspan(1);
  }
  if (remove_special && v.add_eos && !ids.empty() && ids.back() == v.eos) ids = ids.first(ids.size() - 1);
  std::string out;
  for (int32_t id : ids) {
    std::string piece = token_piece(id, render_special);
    if (strip_leading_space && !piece.empty() && piece.front() == ' ') piece.erase(0, 1);
    strip_leading_space = false;
    out += piece;
  }
  return v.clean_spaces ? clean_up_spaces(out) : out;
}

const std::string& Tokenizer::token_text(int32_t id) const {
  if (id < 0 || size_t(id) >= vocab_->tokens.size())
    throw Error(fmt::format("token id {} is outside the vocabulary of {}", id, vocab_->tokens.size()));
  return vocab_->tokens[id];
}

TokenType Tokenizer::token_type(int32_t id) const {
  token_text(id);  // range check
  return vocab_->types[id];
}

std::optional<int32_t> Tokenizer::find_token(std::string_view text) const { return vocab_->find(text); }
Tokenizer::Kind Tokenizer::kind() const { return vocab_->kind; }
const std::string& Tokenizer::pre_tokenizer() const { return vocab_->pre; }
size_t Tokenizer::vocab_size() const { return vocab_->tokens.size(); }
std::optional<int32_t> Tokenizer::bos_id() const { return vocab_->bos; }
std::optional<int32_t> Tokenizer::eos_id() const { return vocab_->eos; }
bool Tokenizer::adds_bos() const { return vocab_->add_bos; }
bool Tokenizer::adds_eos() const { return vocab_->add_eos; }
bool Tokenizer::adds_space_prefix() const { return vocab_->add_space_prefix; }
bool Tokenizer::ignores_merges() const { return vocab_->ignore_merges; }
float Tokenizer::token_score(int32_t id) const { return vocab_->scores.at(size_t(id)); }

const std::vector<std::string>& Tokenizer::pre_tokenizer_regexes() const {
  static const std::vector<std::string> none;
  return vocab_->pre_tokenizer ? vocab_->pre_tokenizer->patterns() : none;
}

}  // namespace lowbit
