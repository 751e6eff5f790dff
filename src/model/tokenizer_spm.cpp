// SentencePiece-style tokenization as llama.cpp's llm_tokenizer_spm_session: start from single UTF-8
// characters, repeatedly merge the adjacent pair whose concatenation is the vocabulary piece of highest
// score (leftmost first among equal scores), then write each final symbol as its token, or as byte
// tokens <0xXX> when no piece covers it (byte fallback).
#include <fmt/format.h>

#include <queue>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "tokenizer_vocabulary.h"

namespace lowbit {
namespace {

struct Symbol {
  int32_t prev, next;
  size_t offset, length;  // bytes of the fragment
};

struct Bigram {
  int32_t left, right;
  float score;
  size_t length;  // left + right when queued: stale once either side changed
};

// std::priority_queue pops the "largest": make that the highest score, then the leftmost pair.
struct WorseBigram {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.score < b.score || (a.score == b.score && a.left > b.left);
  }
};

int32_t byte_token(const Tokenizer::Vocabulary& vocab, uint8_t byte) {
  if (auto id = vocab.find(fmt::format("<0x{:02X}>", byte))) return *id;
  const char c = char(byte);
  if (auto id = vocab.find(std::string_view(&c, 1))) return *id;  // llama.cpp's fallback: the byte itself
  throw key_error({}, "tokenizer.ggml.tokens", fmt::format("the vocabulary has no token for byte 0x{:02X}", byte), fmt::format("<0x{:02X}>", byte));
}

class SpmSession {
 public:
  SpmSession(const Tokenizer::Vocabulary& vocab, std::string_view text) : vocab_(vocab), text_(text) {}

  void run(std::vector<int32_t>& out) {
    for (size_t offset = 0; offset < text_.size();) {
      const size_t n = std::min(utf8_sequence_length(text_[offset]), text_.size() - offset);
      const int32_t index = int32_t(symbols_.size());
      symbols_.push_back({index - 1, offset + n == text_.size() ? -1 : index + 1, offset, n});
      offset += n;
    }
    for (int32_t i = 1; i < int32_t(symbols_.size()); ++i) try_pair(i - 1, i);

    while (!queue_.empty()) {
      const Bigram top = queue_.top();
      queue_.pop();
      Symbol& left = symbols_[top.left];
      Symbol& right = symbols_[top.right];
      if (left.length == 0 || right.length == 0 || left.length + right.length != top.length) continue;
      left.length += right.length;
      right.length = 0;
      left.next = right.next;
      if (right.next >= 0) symbols_[right.next].prev = top.left;
      try_pair(left.prev, top.left);
      try_pair(top.left, left.next);
    }
    for (int32_t i = 0; i != -1 && !symbols_.empty(); i = symbols_[i].next)
      resegment(symbols_[i].offset, symbols_[i].length, out);
  }

 private:
  void try_pair(int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const size_t length = symbols_[left].length + symbols_[right].length;
    auto id = vocab_.find(text_.substr(symbols_[left].offset, length));
    if (!id) return;
    queue_.push({left, right, vocab_.scores[*id], length});
  }

  // Only pairs that form a piece merge, so a final symbol is a piece or a single character that none
  // covers; llama.cpp's resegment also records merges to undo, which therefore never applies.
  void resegment(size_t offset, size_t length, std::vector<int32_t>& out) {
    const std::string_view text = text_.substr(offset, length);
    if (auto id = vocab_.find(text)) {
      out.push_back(*id);
      return;
    }
    for (char c : text) out.push_back(byte_token(vocab_, uint8_t(c)));
  }

  const Tokenizer::Vocabulary& vocab_;
  std::string_view text_;
  std::vector<Symbol> symbols_;
  std::priority_queue<Bigram, std::vector<Bigram>, WorseBigram> queue_;
};

}  // namespace

void encode_spm(const Tokenizer::Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out) {
  SpmSession(vocab, text).run(out);
}

}  // namespace lowbit
