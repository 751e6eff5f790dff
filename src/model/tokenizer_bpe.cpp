// Byte-level BPE: GPT-2's byte map, UTF-8 repair, and merging by rank as llama.cpp's
// llm_tokenizer_bpe_session does it (a priority queue of adjacent pairs, lowest rank first, leftmost
// first among equal ranks).
#include <queue>

#include "tokenizer_vocabulary.h"

namespace lowbit {

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out.push_back(char(cp));
  } else if (cp < 0x800) {
    out.push_back(char(0xC0 | (cp >> 6)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(char(0xE0 | (cp >> 12)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(char(0xF0 | (cp >> 18)));
    out.push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(char(0x80 | (cp & 0x3F)));
  }
}

std::string sanitize_utf8(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  size_t i = 0;
  auto continuation = [&](size_t k) { return i + k < s.size() && (uint8_t(s[i + k]) & 0xC0) == 0x80; };
  while (i < s.size()) {
    const uint8_t b = uint8_t(s[i]);
    // Lengths and checks as llama.cpp's unicode_cpt_from_utf8: the lead byte's high bits, then
    // continuation bytes; overlong forms pass, as they do there.
    size_t n = 0;
    uint32_t cp = 0;
    if (b < 0x80) n = 1, cp = b;
    else if ((b & 0xE0) == 0xC0 && continuation(1)) n = 2, cp = b & 0x1F;
    else if ((b & 0xF0) == 0xE0 && continuation(1) && continuation(2)) n = 3, cp = b & 0x0F;
    else if ((b & 0xF8) == 0xF0 && continuation(1) && continuation(2) && continuation(3)) n = 4, cp = b & 0x07;
    if (n == 0) {
      append_utf8(out, 0xFFFD);
      ++i;
      continue;
    }
    for (size_t k = 1; k < n; ++k) cp = (cp << 6) | (uint8_t(s[i + k]) & 0x3F);
    // PCRE2 needs valid UTF-8; llama.cpp would keep these code points, which no regex class matches.
    if ((cp >= 0xD800 && cp <= 0xDFFF) || cp > 0x10FFFF) cp = 0xFFFD;
    append_utf8(out, cp);
    i += n;
  }
  return out;
}

const std::array<std::string, 256>& byte_level_chars() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    uint32_t next = 256;  // the non-printable bytes take U+0100, U+0101, ... in byte order
    for (int b = 0; b < 256; ++b) append_utf8(t[b], printable(b) ? uint32_t(b) : next++);
    return t;
  }();
  return table;
}

std::string byte_level_decode(std::string_view text) {
  static const std::unordered_map<std::string, char> inverse = [] {
    std::unordered_map<std::string, char> m;
    for (int b = 0; b < 256; ++b) m[byte_level_chars()[b]] = char(b);
    return m;
  }();
  std::string out;
  for (size_t i = 0; i < text.size();) {
    const size_t n = std::min(utf8_sequence_length(text[i]), text.size() - i);
    auto it = inverse.find(std::string(text.substr(i, n)));
    if (it != inverse.end()) out.push_back(it->second);
    else out.append(text.substr(i, n));
    i += n;
  }
  return out;
}

namespace {

struct Symbol {
  int32_t prev, next;
  size_t offset, length;  // bytes of the word
};

struct Bigram {
  int32_t left, right;
  int32_t rank;
  size_t length;  // left + right when queued: stale once either side changed
};

// std::priority_queue pops the "largest": make that the lowest rank, then the leftmost pair.
struct LaterBigram {
  bool operator()(const Bigram& a, const Bigram& b) const {
    return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
  }
};

// Merges one byte-level word and appends its ids.
void merge_word(const Tokenizer::Vocabulary& vocab, const std::string& word, std::vector<int32_t>& out) {
  if (vocab.ignore_merges) {
    if (auto id = vocab.find(word)) {
      out.push_back(*id);
      return;
    }
  }
  std::vector<Symbol> symbols;
  for (size_t offset = 0; offset < word.size();) {
    const size_t n = std::min(utf8_sequence_length(word[offset]), word.size() - offset);
    const int32_t index = int32_t(symbols.size());
    symbols.push_back({index - 1, offset + n == word.size() ? -1 : index + 1, offset, n});
    offset += n;
  }
  std::priority_queue<Bigram, std::vector<Bigram>, LaterBigram> queue;
  auto text_of = [&](const Symbol& s) { return std::string_view(word).substr(s.offset, s.length); };
  auto try_pair = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    auto it = vocab.merge_ranks.find(merge_key(text_of(symbols[left]), text_of(symbols[right])));
    if (it == vocab.merge_ranks.end()) return;
    queue.push({left, right, it->second, symbols[left].length + symbols[right].length});
  };
  for (int32_t i = 1; i < int32_t(symbols.size()); ++i) try_pair(i - 1, i);

  while (!queue.empty()) {
    const Bigram top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.left];
    Symbol& right = symbols[top.right];
    if (left.length == 0 || right.length == 0 || left.length + right.length != top.length) continue;
    left.length += right.length;
    right.length = 0;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.left;
    try_pair(left.prev, top.left);
    try_pair(top.left, left.next);
  }

  for (int32_t i = 0; i != -1 && !symbols.empty(); i = symbols[i].next) {
    const std::string_view piece = text_of(symbols[i]);
    if (auto id = vocab.find(piece)) {
      out.push_back(*id);
      continue;
    }
    // A merge result outside the vocabulary: llama.cpp looks up its bytes one by one and drops the
    // ones that are not tokens.
    for (char c : piece)
      if (auto byte_id = vocab.find(std::string_view(&c, 1))) out.push_back(*byte_id);
  }
}

}  // namespace

void encode_bpe(const Tokenizer::Vocabulary& vocab, std::string_view text, std::vector<int32_t>& out) {
  const std::string clean = sanitize_utf8(text);
  const auto& chars = byte_level_chars();
  // Running prose repeats its words; remembering each word's ids makes 1 MB take a fraction of a second.
  std::unordered_map<std::string, std::vector<int32_t>> seen;
  std::string word;
  for (auto [begin, end] : vocab.pre_tokenizer->split(clean)) {
    word.clear();
    for (size_t i = begin; i < end; ++i) word += chars[uint8_t(clean[i])];
    auto [it, fresh] = seen.try_emplace(word);
    if (fresh) merge_word(vocab, word, it->second);
    out.insert(out.end(), it->second.begin(), it->second.end());
  }
}

}  // namespace lowbit
