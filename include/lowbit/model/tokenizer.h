// Tokenizer built from GGUF metadata (tokenizer.ggml.*), giving the token ids llama.cpp gives.
// Two vocabulary kinds, named by tokenizer.ggml.model:
//   "llama": SentencePiece-style (SPM) pieces with scores; spaces become "▁", a "▁" is prepended
//            (add_space_prefix), and text no piece covers falls back to the byte tokens <0x00>..<0xFF>.
//   "gpt2":  byte-level BPE (GPT-2, Llama 3, Qwen2, SmolLM): text is split by the pre-tokenizer
//            regexes named by tokenizer.ggml.pre, each byte mapped to a printable character, then
//            merged pairwise by merge rank (tokenizer.ggml.merges).
// Special tokens (control, user-defined, unknown) are matched in the text before either, as llama.cpp
// does. For a Hugging Face directory, build the metadata with add_hf_tokenizer_metadata (pipeline) and
// pass it here.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "lowbit/io/gguf.h"

namespace lowbit {

// Token types as tokenizer.ggml.token_type stores them (llama.cpp's llama_token_type).
enum class TokenType : int32_t { Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

class Tokenizer {
 public:
  enum class Kind { SentencePiece, BytePairEncoding };

  // Reads tokenizer.ggml.{model, pre, tokens, scores, token_type, merges, *_token_id, add_*_token,
  // add_space_prefix}. Throws lowbit::Error naming the key on missing or malformed metadata and on
  // vocabulary kinds or pre-tokenizers lowbit does not implement; `file` (the model's path) is named
  // in those errors.
  static Tokenizer from_gguf_metadata(const std::vector<gguf::KeyValue>& metadata, const std::string& file = {});

  // Token ids of `text`. add_special is llama.cpp's add_special: it adds BOS (and EOS) only where the
  // vocabulary asks for them (tokenizer.ggml.add_bos_token, or the kind's default). parse_special
  // turns the text of control tokens (e.g. "<|im_start|>", "<s>") into their ids; user-defined tokens
  // are always matched, as llama.cpp does. Invalid UTF-8 is read as U+FFFD, as llama.cpp reads it.
  std::vector<int32_t> encode(std::string_view text, bool add_special = true, bool parse_special = false) const;

  // Text of `ids`, as llama_detokenize writes it: remove_special drops a leading BOS / trailing EOS
  // the vocabulary adds; render_special writes control tokens' text (otherwise they vanish).
  std::string decode(std::span<const int32_t> ids, bool remove_special = false, bool render_special = false) const;

  // The bytes one token stands for (byte-level and "▁" undone; control tokens only if render_special).
  std::string token_piece(int32_t id, bool render_special = true) const;
  // The token as stored in the vocabulary (e.g. "Ġthe", "▁the", "<0x0A>").
  const std::string& token_text(int32_t id) const;
  TokenType token_type(int32_t id) const;
  std::optional<int32_t> find_token(std::string_view text) const;

  Kind kind() const;
  const std::string& pre_tokenizer() const;  // tokenizer.ggml.pre ("" for SPM)
  size_t vocab_size() const;
  std::optional<int32_t> bos_id() const;
  std::optional<int32_t> eos_id() const;
  bool adds_bos() const;
  bool adds_eos() const;
  // SPM: a "▁" is prepended to the text and after each special token (tokenizer.ggml.add_space_prefix).
  bool adds_space_prefix() const;
  // BPE: the pre-tokenizer's regexes, applied in turn each within the pieces of the one before (PCRE2
  // syntax, \s spelled out as Unicode White_Space); whether a word that is a whole token skips merging.
  const std::vector<std::string>& pre_tokenizer_regexes() const;
  bool ignores_merges() const;
  // SPM: the piece's score (higher merges first); 0 where the vocabulary stores none.
  float token_score(int32_t id) const;

  struct Vocabulary;  // shared, immutable: copying a Tokenizer is cheap

 private:
  explicit Tokenizer(std::shared_ptr<const Vocabulary> vocab) : vocab_(std::move(vocab)) {}
  static Tokenizer from_metadata(const std::vector<gguf::KeyValue>& metadata);
  std::shared_ptr<const Vocabulary> vocab_;
};

}  // namespace lowbit
