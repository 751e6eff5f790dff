// ModelSource over a Hugging Face directory: llama.cpp's converter's mapping of names, layout and
// metadata (config.json -> <arch>.*, tokenizer.json -> tokenizer.ggml.*), done on the fly. A
// bitsandbytes checkpoint is one too: its 4-bit and int8 weights are served dequantized to their
// recorded dtype, one tensor at a time, and their companion tensors are not listed. A mixture of
// experts' per-expert (or fused) projections are served as llama.cpp's stacked 3-D tensors, each
// assembled when it is loaded.
#pragma once

#include <map>
#include <memory>

#include "lowbit/io/checkpoint.h"
#include "lowbit/io/model_source.h"

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
  std::optional<bnb::Packed4bitView> packed_4bit(const Tensor& tensor) const override;
  GgmlType unquantized_type(const Tensor&) const override { return GgmlType::F32; }
  std::string label() const override { return checkpoint_.path().string(); }

 private:
  // A run of `count` values of a Hugging Face tensor from `offset` on (count -1: the whole tensor).
  struct Piece {
    std::string hf_name;
    int64_t offset = 0, count = -1;
  };
  // A GGUF tensor is its pieces one after another: one tensor, or a layer's experts in order.
  struct Origin {
    std::vector<Piece> pieces;  // empty: computed (rope_freqs.weight)
    int permute_heads = 0;      // > 0: rows are permuted from rotate-half to interleaved RoPE pairs
    std::vector<int32_t> row_order;  // then: row r is stored row row_order[r] (empty: rows that split into no heads)
  };
  void add_tensor(std::string name, Shape ne, DType dtype, Origin origin, const std::string& shard);
  Checkpoint checkpoint_;
  std::unique_ptr<BnbReader> bnb_;  // the bitsandbytes weights and their companions
  std::vector<gguf::KeyValue> metadata_;
  std::vector<Tensor> tensors_;
  std::map<std::string, Origin> origins_;  // GGUF name -> where it comes from
  std::vector<float> rope_freqs_;          // rope_freqs.weight, computed from config.json
};

// tokenizer.json (+ tokenizer_config.json) -> llama.cpp's tokenizer.ggml.* keys, appended to `out`.
void add_hf_tokenizer_metadata(const std::filesystem::path& dir, int64_t vocab_size, std::vector<gguf::KeyValue>& out);

}  // namespace lowbit
