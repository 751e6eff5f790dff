// Pre-tokenizers: the regexes that split text into words before byte-level BPE, one set per
// tokenizer.ggml.pre name, as llama.cpp's llm_tokenizer_bpe lists them. Matched with PCRE2 in UTF and
// Unicode-property mode, so \p{L} and \p{N} are the Unicode letter and number categories.
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <fmt/format.h>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "tokenizer_vocabulary.h"

namespace lowbit {
namespace {

// GPT-2: contractions, letters, digits, other symbols, each with one optional leading space; then
// whitespace runs that leave their last space to the next word. The trailing "|\s+" is in the
// original; llama.cpp's hand-written matcher behaves as if it were there.
constexpr const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
// Llama 3: case-insensitive contractions (spelled out: PCRE2's (?i) would also fold 'ſ' and 'K'),
// a letter run with one leading non-letter, digits in threes, newlines kept apart from other spaces.
constexpr const char* kLlama3 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
// Qwen2: Llama 3's with single digits.
constexpr const char* kQwen2 =
    R"((?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N})"
    R"(| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

enum class RegexSet { Default, Gpt2, Llama3, Qwen2, DigitsThenGpt2 };

struct PreTokenizerName {
  const char* name;
  RegexSet regexes;
  bool clean_spaces;
  bool ignore_merges;
  bool add_bos;
};

// The names llama.cpp gives these regex sets (llama-vocab.cpp, load()), with its per-name flags.
constexpr PreTokenizerName kPreTokenizers[] = {
    {"default", RegexSet::Default, true, false, false},
    {"llama3", RegexSet::Llama3, true, true, true},
    {"llama-v3", RegexSet::Llama3, true, true, true},
    {"llama-bpe", RegexSet::Llama3, true, true, true},
    {"falcon3", RegexSet::Llama3, true, true, true},
    {"pixtral", RegexSet::Llama3, true, true, true},
    {"dbrx", RegexSet::Llama3, true, false, false},
    {"smaug-bpe", RegexSet::Llama3, true, false, false},
    {"gpt-2", RegexSet::Gpt2, true, false, false},
    {"phi-2", RegexSet::Gpt2, true, false, false},
    {"mpt", RegexSet::Gpt2, true, false, false},
    {"olmo", RegexSet::Gpt2, true, false, false},
    {"jais", RegexSet::Gpt2, true, false, false},
    {"qwen2", RegexSet::Qwen2, false, false, false},
    {"deepseek-r1-qwen", RegexSet::Qwen2, false, false, false},
    {"stablelm2", RegexSet::Qwen2, true, false, false},
    {"megrez", RegexSet::Qwen2, true, false, false},
    {"smollm", RegexSet::DigitsThenGpt2, false, false, false},
    {"starcoder", RegexSet::DigitsThenGpt2, true, false, false},
    {"refact", RegexSet::DigitsThenGpt2, true, false, false},
    {"codeshell", RegexSet::DigitsThenGpt2, true, false, false},
    {"command-r", RegexSet::DigitsThenGpt2, false, false, false},
};

std::vector<std::string> regexes_of(RegexSet set) {
  switch (set) {
    case RegexSet::Gpt2: return {kGpt2};
    case RegexSet::Llama3: return {kLlama3};
    case RegexSet::Qwen2: return {kQwen2};
    case RegexSet::DigitsThenGpt2: return {R"(\p{N})", kGpt2};  // every digit a word of its own first
    case RegexSet::Default: break;
  }
  return {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2, R"(\p{N}+)", R"([0-9][0-9][0-9])"};
}

// Unicode's White_Space set, which llama.cpp's tables use for \s. PCRE2's own \s leaves out U+0085.
constexpr const char* kWhitespace = R"(\t-\r \x{85}\x{A0}\x{1680}\x{2000}-\x{200A}\x{2028}\x{2029}\x{202F}\x{205F}\x{3000})";

// Rewrites \s and \S as explicit classes (inside a [...] class, \s contributes its ranges).
std::string expand_whitespace(std::string_view regex) {
  std::string out;
  bool in_class = false;
  for (size_t i = 0; i < regex.size(); ++i) {
    const char c = regex[i];
    if (c == '\\' && i + 1 < regex.size()) {
      const char e = regex[++i];
      if (e == 's') out += in_class ? std::string(kWhitespace) : fmt::format("[{}]", kWhitespace);
      else if (e == 'S' && !in_class) out += fmt::format("[^{}]", kWhitespace);
      else out += {c, e};
      continue;
    }
    if (c == '[') in_class = true;
    if (c == ']') in_class = false;
    out += c;
  }
  return out;
}

}  // namespace

struct PreTokenizer::Compiled {
  pcre2_code* code = nullptr;
  ~Compiled() { pcre2_code_free(code); }
};

PreTokenizer::PreTokenizer(const std::vector<std::string>& regexes) {
  for (const auto& regex : regexes) {
    const std::string& pattern = patterns_.emplace_back(expand_whitespace(regex));
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    auto compiled = std::make_unique<Compiled>();
    compiled->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), PCRE2_UTF | PCRE2_UCP,
                                   &error, &error_offset, nullptr);
    if (!compiled->code) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof message);
      throw Error(fmt::format("pre-tokenizer regex does not compile at {}: {}", error_offset, reinterpret_cast<char*>(message)),
                  {.expected = pattern});
    }
    pcre2_jit_compile(compiled->code, PCRE2_JIT_COMPLETE);  // optional: interpreted matching still works
    regexes_.push_back(std::move(compiled));
  }
}

PreTokenizer::~PreTokenizer() = default;

std::vector<std::pair<size_t, size_t>> PreTokenizer::split(std::string_view utf8) const {
  std::vector<std::pair<size_t, size_t>> pieces;
  if (!utf8.empty()) pieces.push_back({0, utf8.size()});
  for (const auto& regex : regexes_) {
    pcre2_match_data* match = pcre2_match_data_create_from_pattern(regex->code, nullptr);
    std::vector<std::pair<size_t, size_t>> next;
    next.reserve(pieces.size() * 2);
    for (auto [begin, end] : pieces) {
      // Each piece is its own subject, so lookaheads and the end of text stop at the piece's edge.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(utf8.data() + begin);
      const size_t length = end - begin;
      size_t at = 0, kept = 0;  // search position, end of what is already in `next`
      while (at < length) {
        const int rc = pcre2_match(regex->code, subject, length, at, PCRE2_NO_UTF_CHECK, match, nullptr);
        if (rc < 0) break;  // no match: the rest is one piece
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(match);
        if (ov[1] == ov[0]) {  // an empty match splits nothing; step over one character
          at = ov[0] + utf8_sequence_length(char(subject[ov[0]]));
          continue;
        }
        if (ov[0] > kept) next.push_back({begin + kept, begin + ov[0]});  // unmatched text between
        next.push_back({begin + ov[0], begin + ov[1]});
        kept = at = ov[1];
      }
      if (kept < length) next.push_back({begin + kept, end});
    }
    pcre2_match_data_free(match);
    pieces = std::move(next);
  }
  return pieces;
}

void configure_pre_tokenizer(Tokenizer::Vocabulary& vocab) {
  const std::string name = vocab.pre.empty() ? "default" : vocab.pre;
  for (const auto& known : kPreTokenizers) {
    if (name != known.name) continue;
    vocab.clean_spaces = known.clean_spaces;
    vocab.ignore_merges = known.ignore_merges;
    vocab.add_bos = known.add_bos;
    vocab.pre_tokenizer = std::make_unique<PreTokenizer>(regexes_of(known.regexes));
    return;
  }
  std::string names;
  for (const auto& known : kPreTokenizers) names += fmt::format("{}{}", names.empty() ? "" : ", ", known.name);
  throw key_error({}, "tokenizer.ggml.pre", fmt::format("pre-tokenizer '{}' is not implemented", name), names);
}

}  // namespace lowbit
