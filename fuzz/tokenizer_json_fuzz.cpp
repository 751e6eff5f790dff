// libFuzzer target: tokenizer.json -> llama.cpp's tokenizer.ggml.* metadata -> the Tokenizer, which
// then encodes and decodes a fixed text. tokenizer_config.json is fixed.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/model/tokenizer.h"
#include "io/hf_source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  static const auto dir = [] {
    const auto d = fuzz::scratch_dir() / "tokenizer";
    std::filesystem::create_directories(d);
    fuzz::write_file(d / "tokenizer_config.json", R"({"bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true})");
    return d;
  }();
  fuzz::write_file(dir / "tokenizer.json", data, size);
  try {
    std::vector<gguf::KeyValue> metadata;
    add_hf_tokenizer_metadata(dir, 16, metadata);
    const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(metadata, "fuzz");
    const auto ids = tokenizer.encode("Hello, world! <s> 123 ab", true, true);
    (void)tokenizer.decode(ids, true, true);
  } catch (const Error&) {
  }
  return 0;
}
