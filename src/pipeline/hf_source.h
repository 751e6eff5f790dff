// ModelSource over a Hugging Face directory: llama.cpp's converter's mapping of names, layout and
// metadata (config.json -> <arch>.*, tokenizer.json -> tokenizer.ggml.*), done on the fly. A
// bitsandbytes checkpoint is one too: its 4-bit and int8 weights are served dequantized to their
// recorded dtype, one tensor at a time, and their companion tensors are not listed.
#pragma once

#include <map>
#include <memory>

#include "lowbit/io/checkpoint.h"
#include "lowbit/pipeline/model_source.h"

namespace lowbit {

class BnbReader;

class HfSource : public ModelSource {
 public:
  explicit HfSource(const std::filesystem::path& dir);
  ~HfSource() override;
  const std::vector<gguf::KeyValue>& metadata() const override { return metadata_; }
  const std::vector<Tensor>& tensors() const override { return tensors_; }
  std::span<const std::byte> raw(const Tensor& tensor) const override;
  std::vector<float> load_f32(const Tensor& tensor) const override;
  GgmlType unquantized_type(const Tensor&) const override { return GgmlType::F32; }
  std::string label() const override { return checkpoint_.path().string(); }

 private:
  struct Origin {
    std::string hf_name;
    int permute_heads = 0;  // > 0: rows are permuted from rotate-half to interleaved RoPE pairs
  };
  Checkpoint checkpoint_;
  std::unique_ptr<BnbReader> bnb_;  // the bitsandbytes weights and their companions
  std::vector<gguf::KeyValue> metadata_;
  std::vector<Tensor> tensors_;
  std::map<std::string, Origin> origins_;  // GGUF name -> where it comes from (no hf_name: computed)
  std::vector<float> rope_freqs_;          // rope_freqs.weight, computed from config.json
};

// tokenizer.json (+ tokenizer_config.json) -> llama.cpp's tokenizer.ggml.* keys, appended to `out`.
void add_hf_tokenizer_metadata(const std::filesystem::path& dir, int64_t vocab_size, std::vector<gguf::KeyValue>& out);

}  // namespace lowbit
