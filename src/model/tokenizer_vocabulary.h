// The tokenizer's shared state and the pieces its files share: UTF-8 as llama.cpp reads it, GPT-2's
// byte-to-character map, the pre-tokenizer (PCRE2), and the two merge algorithms.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowbit/model/tokenizer.h"

namespace lowbit {

// Splits text into words with a list of regexes applied in turn, each inside the pieces the previous
// one left (llama.cpp's unicode_regex_split): text between matches stays a piece of its own.
class PreTokenizer {
 public:
  explicit PreTokenizer(const std::vector<std::string>& regexes);
  ~PreTokenizer();
  PreTokenizer(const PreTokenizer&) = delete;
  PreTokenizer& operator=(const PreTokenizer&) = delete;

  // Byte ranges [begin, end) of the words of `utf8`, which must be valid UTF-8.
  std::vector<std::pair<size_t, size_t>> split(std::string_view utf8) const;
  // The regexes as compiled (\s and \S spelled out as Unicode White_Space classes).
  const std::vector<std::string>& patterns() const { return patterns_; }

 private:
  struct Compiled;
  std::vector<std::string> patterns_;
  std::vector<std::unique_ptr<Compiled>> regexes_;
};

struct Tokenizer::Vocabulary {
  Kind kind = Kind::SentencePiece;
  std::string pre;
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<TokenType> types;
  std::unordered_map<std::string, int32_t> token_ids;
  std::unordered_map<std::string, int32_t> merge_ranks;  // key: merge_key(left, right)
  std::vector<int32_t> special_tokens;  // control, user-defined and unknown tokens, longest text first
  std::optional<int32_t> bos, eos, unk;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SPM: prepend " " to text at the start and after special tokens
  bool ignore_merges = false;     // BPE (Llama 3): a word that is a whole token is not merged
  bool clean_spaces = false;      // decode: drop " " before ?!., and in " 's" etc. (clean_up_tokenization_spaces)
  std::unique_ptr<PreTokenizer> pre_tokenizer;  // BPE only

  std::optional<int32_t> find(std::string_view text) const {
    auto it = token_ids.find(std::string(text));
    if (it == token_ids.end()) return std::nullopt;
    return it->second;
  }
};

// 0xFF never occurs in UTF-8, so it separates the halves of a merge unambiguously.
inline std::string merge_key(std::string_view left, std::string_view right) {
  std::string key;
  key.reserve(left.size() + 1 + right.size());
  key.append(left).push_back('\xff');
  key.append(right);
  return key;
}

// Bytes in a UTF-8 sequence, from its first byte alone (a stray continuation byte counts as 1), as
// llama.cpp's unicode_len_utf8.
inline size_t utf8_sequence_length(char first) {
  static constexpr size_t kLengths[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLengths[static_cast<uint8_t>(first) >> 4];
}

void append_utf8(std::string& out, uint32_t codepoint);
// `text` with every invalid UTF-8 sequence replaced by U+FFFD, one per bad byte (llama.cpp's
// unicode_cpts_from_utf8); surrogates and code points past U+10FFFF become U+FFFD too.
std::string sanitize_utf8(std::string_view text);

// GPT-2's bytes_to_unicode: printable Latin-1 bytes map to themselves, the other 68 bytes to U+0100...
const std::array<std::string, 256>& byte_level_chars();
// Inverse of byte_level_chars over a token's text; characters outside the map are kept as UTF-8.
std::string byte_level_decode(std::string_view token_text);

// SentencePiece-style merge by score over one fragment (spaces already "▁"), appending ids.
void encode_spm(const Tokenizer::Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out);
// Byte-level BPE over one fragment: pre-tokenize, map bytes, merge by rank, appending ids.
void encode_bpe(const Tokenizer::Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out);

// Sets kind-specific defaults and the pre-tokenizer from tokenizer.ggml.pre; throws on unknown names.
void configure_pre_tokenizer(Tokenizer::Vocabulary& vocab);

}  // namespace lowbit
