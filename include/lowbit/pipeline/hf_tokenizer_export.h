// A GGUF vocabulary (tokenizer.ggml.*) as the tokenizer.json + tokenizer_config.json that Hugging Face
// tokenizers and transformers load, encoding text to the ids llama.cpp (and lowbit's Tokenizer) give.
#pragma once

#include <filesystem>
#include <vector>

#include "lowbit/io/gguf.h"

namespace lowbit {

// Writes `dir`/tokenizer.json and `dir`/tokenizer_config.json (the directory must exist).
// Byte-level BPE ("gpt2") becomes a BPE model behind the pre-tokenizer regexes tokenizer.ggml.pre
// names; SentencePiece ("llama") becomes a byte-fallback BPE whose merges rank pairs by the score of
// the piece they make, as SentencePiece's BPE merges. Throws lowbit::Error for other vocabularies.
void write_hf_tokenizer(const std::vector<gguf::KeyValue>& metadata, const std::filesystem::path& dir);

}  // namespace lowbit
