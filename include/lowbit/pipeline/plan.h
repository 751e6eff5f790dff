// Dynamic quantization: a format per tensor that lands the whole model on a target average bits per
// weight (total stored bits / total parameters) at the least predicted loss.
//
// For every quantizable tensor and every candidate format, the loss is measured: the tensor (up to 256
// evenly spaced rows of it) is quantized and dequantized, and the squared error, weighted per input
// column by the importance matrix when one is given, is divided by the same weighting of the weights
// themselves (a relative error, comparable across tensors). Rules bound the choice per tensor; an
// allocation (plan/allocate.h) then picks formats under the budget.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/pipeline/model_source.h"
#include "lowbit/plan/roles.h"

namespace lowbit {

// A rule of the rules file: tensors whose GGUF name matches `match` (a glob) may only take the formats
// listed in `allow` (when given) and formats of at least `min_bpw` / at most `max_bpw` bits per weight.
struct PlanRule {
  std::string match;
  std::vector<GgmlType> allow;
  std::optional<double> min_bpw, max_bpw;
};

// The rules every plan starts from: embeddings and the output layer at 4.5 bits or more.
std::vector<PlanRule> default_plan_rules();
// {"rules": [{"match": "blk.*.ffn_down.weight", "min_bpw": 4.5}, {"match": "*attn_v*", "allow": ["q6_K", "q8_0"]}]}
std::vector<PlanRule> load_plan_rules(const std::filesystem::path& path);

struct PlanOptions {
  double target_bpw = 4.5;
  const ImportanceMatrix* imatrix = nullptr;
  std::vector<PlanRule> rules = default_plan_rules();
};

struct PlannedTensor {
  std::string name;
  TensorRole role = TensorRole::Other;
  int layer = -1;
  GgmlType format = GgmlType::F32;
  int64_t params = 0;
  uint64_t bytes = 0;
  bool quantized = false;                            // false: kept as the source stores it
  double loss = 0;                                   // predicted loss of the chosen format
  std::vector<std::pair<GgmlType, double>> options;  // every allowed candidate and its loss
};

struct Plan {
  std::string model;
  double target_bpw = 0, achieved_bpw = 0;
  int64_t params = 0;
  uint64_t bytes = 0;
  std::vector<PlannedTensor> tensors;
};

Plan make_plan(const ModelSource& source, const PlanOptions& options, Progress& progress = Progress::none());
void write_plan(const std::filesystem::path& path, const Plan& plan);
Plan read_plan(const std::filesystem::path& path);
// An SVG heat map (layer × role -> bits per weight) and an HTML page showing it with the allocation.
void write_plan_report(const Plan& plan, const std::filesystem::path& svg, const std::filesystem::path& html);

}  // namespace lowbit
