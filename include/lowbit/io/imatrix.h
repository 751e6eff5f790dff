// llama.cpp's importance matrix files: per weight, the mean squared activation of each input column,
// which the quantizers use as per-column weights.
//
// GGUF form (llama.cpp's default): `general.type = "imatrix"`; per weight W, `W.in_sum2` F32
// [columns, experts] (sum of x² per column) and `W.counts` F32 [1, experts] (rows seen).
// Legacy .dat form: i32 entries; per entry: i32 name length, name, i32 ncall, i32 nval,
// f32[nval] (mean × ncall); then i32 last chunk and the dataset name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace lowbit {

struct ImatrixEntry {
  std::string name;         // the weight's GGUF name: "blk.0.attn_q.weight"
  int64_t columns = 0;      // input features (ne[0] of the weight)
  int64_t experts = 1;      // 1 for dense weights
  std::vector<float> weights;  // columns × experts: what llama-quantize passes as quant_weights
};

// What an importance matrix run collected for one weight: Σ x² per input column over the rows it saw,
// expert by expert for a layer's stacked experts (one expert for any other weight).
struct ImatrixSums {
  std::string name;
  std::vector<float> sums;    // columns × experts, expert by expert
  std::vector<float> counts;  // rows seen, per expert
  int64_t experts() const { return int64_t(counts.size()); }
  int64_t columns() const { return counts.empty() ? 0 : int64_t(sums.size()) / experts(); }
};

// Writes llama.cpp's GGUF form (general.type "imatrix", imatrix.datasets/chunk_count/chunk_size,
// per weight "<name>.in_sum2" F32 [columns, experts] and "<name>.counts" F32 [1, experts], written as
// [columns] and [1] for one expert, as ggml drops trailing dimensions of 1), names sorted.
void write_imatrix_gguf(const std::filesystem::path& path, std::vector<ImatrixSums> entries, const std::vector<std::string>& datasets,
                        uint32_t chunk_count, uint32_t chunk_size);

// Writes llama.cpp's legacy binary form (what llama-imatrix wrote before mid-2025 and every
// llama-quantize reads): per weight its name, ncall = chunk_count, and mean x² per column × ncall
// (per expert; an expert that saw no rows stores ones, as llama-imatrix writes it); then the chunk
// count and the first dataset's name. Names sorted, as the GGUF form.
void write_imatrix_dat(const std::filesystem::path& path, std::vector<ImatrixSums> entries, const std::vector<std::string>& datasets,
                       uint32_t chunk_count);

class ImportanceMatrix {
 public:
  // Reads either form (chosen by content: GGUF magic or not). Throws lowbit::Error naming file and entry.
  static ImportanceMatrix load(const std::filesystem::path& path);

  const std::vector<ImatrixEntry>& entries() const { return entries_; }
  const ImatrixEntry* find(std::string_view weight_name) const;
  const std::vector<std::string>& datasets() const { return datasets_; }
  int64_t chunk_count() const { return chunk_count_; }

 private:
  static ImportanceMatrix load_gguf(const std::filesystem::path& path);
  static ImportanceMatrix load_legacy(const std::filesystem::path& path);

  void build_index(const std::string& label);

  std::vector<ImatrixEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_;  // weight name -> position in entries_
  std::vector<std::string> datasets_;
  int64_t chunk_count_ = 0;
};

}  // namespace lowbit
