// Hessians for GPTQ: for each input of the model's linear layers, XᵀX summed over the calibration
// tokens (X: tokens × columns), float32, in a GGUF container of their own.
//
// general.type = "hessian"; hessian.datasets (strings), hessian.chunk_count and hessian.chunk_size (u32),
// hessian.tokens (u64: the rows of X, the same for every input); hessian.weights and hessian.inputs
// (strings, one pair per weight: its GGUF name and the input it reads). Per input I, the tensor
// "I.xtx" F32 [columns, columns]. Weights that read one input (attn_q/k/v, ffn_gate/up) share it.
// The diagonal divided by hessian.tokens is llama.cpp's importance matrix of each of those weights.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

namespace gguf {
class File;
}

// What a collection run summed for one input.
struct HessianSums {
  std::string input;                 // "blk.0.attn_qkv": named by the collector (model/hessian_collector.h)
  std::vector<std::string> weights;  // the weights that read it, GGUF names
  int64_t columns = 0;
  std::vector<float> xtx;            // columns × columns, symmetric
};

// Writes the file atomically, inputs sorted by name. Every input must have seen the same `tokens` rows.
void write_hessians(const std::filesystem::path& path, std::vector<HessianSums> inputs, const std::vector<std::string>& datasets,
                    uint32_t chunk_count, uint32_t chunk_size, uint64_t tokens);

class HessianFile {
 public:
  // Maps and validates a file written by write_hessians; throws lowbit::Error naming the file and tensor.
  explicit HessianFile(const std::filesystem::path& path);

  struct Input {
    std::string name;
    int64_t columns = 0;
    std::span<const float> xtx;  // columns × columns, mapped from the file
  };
  // The input `weight` reads, or null when the file does not cover it.
  const Input* find(std::string_view weight) const;
  uint64_t tokens() const { return tokens_; }
  const std::vector<std::string>& datasets() const { return datasets_; }
  const std::string& label() const { return label_; }

 private:
  std::shared_ptr<const gguf::File> file_;
  std::string label_;
  uint64_t tokens_ = 0;
  std::vector<std::string> datasets_;
  std::map<std::string, Input, std::less<>> inputs_;          // by input name
  std::map<std::string, std::string, std::less<>> weights_;  // weight name -> its input's name
};

}  // namespace lowbit
