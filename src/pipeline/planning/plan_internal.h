// What the GGUF and bitsandbytes planners share: the rules' verdict on a candidate, the row sample
// losses are measured on, and the allocation that turns measured candidates into a plan.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "lowbit/pipeline/plan.h"

namespace lowbit::planning {

// Up to this many evenly spaced rows of a tensor are quantized to measure a format's loss.
inline constexpr int64_t kSampledRows = 256;

// True when every rule that matches one of `names` (and `layer`) lets the tensor take `format` at
// `bpw` bits per weight as stored.
bool rules_allow(const std::vector<PlanRule>& rules, std::span<const std::string> names, int layer, const FormatSpec& format,
                 double bpw);

// Evenly spaced rows of a tensor, each with the importance weights of its input columns (or none).
struct RowSample {
  int64_t cols = 0;
  std::vector<float> values;                // the rows, one after another
  std::vector<const float*> importance;     // per row: `cols` weights, or nullptr
  int64_t rows() const { return int64_t(importance.size()); }
};
// `values` holds rows of `cols`; `importance` is null or `cols` × experts weights, expert e's slice
// weighting its `rows_per_expert` consecutive rows (a 3-D expert tensor has one slice per expert).
RowSample sample_rows(const std::vector<float>& values, int64_t cols, const float* importance, int64_t rows_per_expert);
// Σ w·(x - y)² / Σ w·x² over the sample, y the reconstruction of its values.
double relative_error(const RowSample& sample, const std::vector<float>& reconstruction);
// The same on the layer's output: Σ (x - y) H (x - y)ᵀ / Σ x H xᵀ over the sample's rows, H the
// cols × cols Hessian (XᵀX) of the layer's input, so ‖(W - Ŵ)X‖² / ‖WX‖² on the calibration tokens.
// The denominator is computed once per sample, the numerator per candidate.
class OutputError {
 public:
  OutputError(const RowSample& sample, std::span<const float> hessian);
  double relative(const std::vector<float>& reconstruction) const;

 private:
  const RowSample& sample_;
  std::span<const float> hessian_;
  double reference_;
};

// For every planned tensor (quantized, with options), the option the allocation picks so the whole
// model lands at or under plan.target_bpw; fills each tensor's format, bytes and loss and the plan's
// totals. Throws when even the smallest allowed options do not fit.
void allocate_plan(Plan& plan);

}  // namespace lowbit::planning
