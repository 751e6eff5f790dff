// libFuzzer target: config.json of a Hugging Face directory -> the model config lowbit builds
// (HfSource's GGUF metadata and the facts the planner reads). The directory's other files are fixed
// and valid: a one-tensor model.safetensors and a small tokenizer.json.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/model_source.h"
#include "lowbit/pipeline/quantize_gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  static const auto dir = [] {
    const auto d = fuzz::scratch_dir() / "model";
    std::filesystem::create_directories(d);
    // model.embed_tokens.weight: F32 [8, 4] of zeros.
    const std::string header = R"({"model.embed_tokens.weight":{"dtype":"F32","shape":[8,4],"data_offsets":[0,128]}})";
    std::string st(8, '\0');
    for (int i = 0; i < 8; ++i) st[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
    fuzz::write_file(d / "model.safetensors", st + header + std::string(128, '\0'));
    fuzz::write_file(d / "tokenizer.json",
                     R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},)"
                     R"( "added_tokens": [{"id": 3, "content": "<s>", "special": true}], "pre_tokenizer": {"type": "ByteLevel"}})");
    fuzz::write_file(d / "tokenizer_config.json", R"({"bos_token": "<s>"})");
    return d;
  }();
  fuzz::write_file(dir / "config.json", data, size);
  try {
    const auto source = ModelSource::open(dir);
    (void)model_facts(*source);
  } catch (const Error&) {
  }
  return 0;
}
