// libFuzzer target: tokenizer_config.json (special tokens, add_bos_token, chat template) beside a
// fixed, valid tokenizer.json, through to the Tokenizer built from the resulting metadata.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/model/tokenizer.h"
#include "io/hf_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  static const auto dir = [] {
    const auto d = fuzz::scratch_dir() / "tokenizer-config";
    std::filesystem::create_directories(d);
    fuzz::write_file(d / "tokenizer.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "\u0120": 3}, "merges": ["a b"]},)"
                     R"( "added_tokens": [{"id": 4, "content": "<s>", "special": true}, {"id": 5, "content": "</s>", "special": true}],)"
                     R"( "pre_tokenizer": {"type": "ByteLevel"}})");
    return d;
  }();
  fuzz::write_file(dir / "tokenizer_config.json", data, size);
  try {
    std::vector<gguf::KeyValue> metadata;
    add_hf_tokenizer_metadata(dir, 8, metadata);
    const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(metadata, "fuzz");
    const auto ids = tokenizer.encode("ab ba <s>", true, true);
    (void)tokenizer.decode(ids, true, true);
  } catch (const Error&) {
  }
  return 0;
}
