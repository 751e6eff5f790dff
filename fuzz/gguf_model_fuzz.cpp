// libFuzzer target: a GGUF model's metadata -> the model config (LlamaConfig), the planner's facts and
// the tokenizer; when the config is valid, the model is loaded (every tensor's shape checked against
// it) and run on two tokens. The container itself is fuzzed by gguf_fuzz.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/io/model_source.h"
#include "lowbit/pipeline/quantize_gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(data), size);
  std::unique_ptr<gguf::File> file;
  try {
    file = std::make_unique<gguf::File>(gguf::File::parse(bytes, "fuzz"));
  } catch (const Error&) {
    return 0;  // not a GGUF container: gguf_fuzz's business
  }
  try {
    const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(file->metadata(), "fuzz");
    const auto ids = tokenizer.encode("Hello <s> world 123", true, true);
    (void)tokenizer.decode(ids, true, true);
  } catch (const Error&) {
  }
  const auto path = fuzz::scratch_dir() / "model.gguf";
  fuzz::write_file(path, data, size);
  try {
    (void)model_facts(*ModelSource::open(path));
  } catch (const Error&) {
  }
  try {
    const auto model = LlamaModel::load(path);
    const int32_t tokens[2] = {0, model->config().n_vocab - 1};
    (void)model->forward(tokens);
  } catch (const Error&) {
  }
  return 0;
}
