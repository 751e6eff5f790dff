// Dynamic quantization: a format per tensor that lands the whole model on a target average bits per
// weight (total stored bits / total parameters) at the least predicted loss.
//
// For every quantizable tensor and every candidate format, the loss is measured: the tensor (up to 256
// evenly spaced rows of it) is quantized and dequantized, and the squared error, weighted per input
// column by the importance matrix when one is given, is divided by the same weighting of the weights
// themselves (a relative error, comparable across tensors). With a KldProbe (model/kld_probe.h), the
// loss is instead measured at the output: each candidate quantizes the whole tensor, the model runs with
// that one tensor replaced on a few calibration windows, and the loss is the mean KL-divergence from the
// unchanged model — how much that tensor's error costs where it matters, at the cost of a few forward
// passes per candidate; candidates that another of no more bytes beats on relative error are dropped
// before probing. Rules bound the choice per tensor; an allocation (plan/allocate.h) then picks
// formats under the budget, minimising the summed losses.
//
// Two targets. GGUF: ggml types for the tensors llama-quantize would quantize. bitsandbytes: for the
// Linear weights of a Hugging Face checkpoint, NF4 or FP4 at blocksize 64, 128 or 256 with or without
// double quantization, or the weight kept in its 16-bit dtype; sizes count the absmax, nested scales,
// code maps and quant state exactly as stored. LLM.int8 is not a candidate: transformers loads a
// checkpoint through one quantizer, so one checkpoint's quantized Linear layers are all 4-bit or all int8.
#pragma once

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/core/progress.h"
#include "lowbit/io/checkpoint.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/model/kld_probe.h"
#include "lowbit/model/runtime.h"
#include "lowbit/io/model_source.h"
#include "lowbit/plan/roles.h"
#include "lowbit/plan/tensor_format.h"

namespace lowbit {

// A rule of the rules file: tensors whose name matches `match` (a glob; a Hugging Face tensor is matched
// by its GGUF name too) and whose layer is in `layers` (when given) may only take the formats named in
// `allow` (when given: "q4_K", "nf4", "fp4", "bf16" ...), none of those in `deny`, and formats of at
// least `min_bpw` / at most `max_bpw` bits per weight as stored.
struct PlanRule {
  std::string match;
  std::optional<std::pair<int, int>> layers;  // first and last layer, inclusive
  std::vector<FormatId> allow, deny;
  std::optional<double> min_bpw, max_bpw;
};

// The rules every plan starts from: embeddings and the output layer at 4.5 bits or more.
std::vector<PlanRule> default_plan_rules();
// A GGUF plan's floor for an embedding that is also the output layer (no output.weight).
inline constexpr double kTiedOutputMinBpw = 6.0;
// {"rules": [{"match": "blk.*.ffn_down_exps.weight", "layers": "0-5", "min_bpw": 3.4},
//            {"match": "*attn_v*", "allow": ["q6_K", "q8_0"]}, {"match": "*", "deny": ["q4_1"]}]}
// "layers" is "A-B", "A-" (A and after) or "A"; a rule may carry a "note". Unknown keys are errors.
std::vector<PlanRule> load_plan_rules(const std::filesystem::path& path);

enum class PlanTarget { gguf, bnb };
std::string_view plan_target_name(PlanTarget target);  // "gguf", "bnb"

struct PlanOptions {
  double target_bpw = 4.5;
  const ImportanceMatrix* imatrix = nullptr;
  std::vector<PlanRule> rules = default_plan_rules();
  // GGUF target only: the probe of the model being planned (same tensors, unquantized); when set, every
  // candidate's loss is the output KL-divergence it causes alone, the tensor quantized as the output
  // file will hold it (with the importance matrix, when given).
  KldProbe* probe = nullptr;
  // Candidates written as quantize --gptq writes them (GPTQ's codes where the type has a path,
  // formats/gptq.h; for a bnb target the 4-bit weights whose blocks lie within rows), and a layer
  // matrix's relative error measured on its output, Σ ΔHΔᵀ / Σ WHWᵀ with its input's Hessian H, since
  // GPTQ trades weight error for output error.
  const HessianFile* hessian = nullptr;
};

// A candidate format of one tensor: its exact size and measured loss.
struct PlanOption {
  FormatSpec format;
  uint64_t bytes = 0;
  double loss = 0;
};

struct PlannedTensor {
  std::string name;                                  // GGUF name (GGUF target) or Hugging Face name (bitsandbytes)
  TensorRole role = TensorRole::Other;
  int layer = -1;
  FormatSpec format = format_spec(GgmlType::F32);
  int64_t params = 0;
  uint64_t bytes = 0;
  bool quantized = false;                            // false: kept as the source stores it, not planned
  double loss = 0;                                   // predicted loss of the chosen format
  std::vector<PlanOption> options;                   // every allowed candidate (with the probe, those it weighed)
};

// What the candidates' losses measure, so that a plan file says how its choices were made.
struct PlanLossMeasure {
  bool output_kld = false;          // false: relative reconstruction error
  bool imatrix_weighted = false;    // errors weighted by (and tensors quantized with) an importance matrix
  int64_t probe_positions = 0;      // output KLD: scored positions per candidate
  std::string calibration;          // output KLD: the probe's text, when known
  std::string reason;               // why this loss was used (the CLI's choice), when known
  // The file of that importance matrix, when there is one (a GGUF plan): quantize --plan quantizes with
  // it, so the tensors are rounded as the planner measured them. plan.json holds its name alone when it
  // lies beside the plan (where plan --text keeps the one it measures), else its absolute path.
  std::string imatrix;
  // The Hessian file when candidates were measured as GPTQ writes them (plan --gptq); quantize --plan
  // then writes them so. Recorded as `imatrix` is.
  std::string gptq;
  // Output KLD: the plan's own KLD on the probe's windows, every tensor quantized at once, which the
  // sum of the chosen losses (Plan::predicted_loss) predicts.
  std::optional<double> whole_kld;
};
std::string plan_loss_description(const PlanLossMeasure& measure);  // one line for people

// Which loss a GGUF plan measures, and why (PlanLossMeasure::reason): the output-KLD probe on
// `probe_text` when given; by default on `text` when the model runs on a GPU, where probing every
// candidate is fast (on the CPU it takes minutes per window); else the relative error (empty text).
struct PlanLossChoice {
  std::string probe_text, reason;
};
PlanLossChoice choose_plan_loss(const std::string& probe_text, const std::string& text, Device device, bool no_probe);

struct Plan {
  std::string model;
  PlanTarget target = PlanTarget::gguf;
  double target_bpw = 0, achieved_bpw = 0;
  PlanLossMeasure loss_measure;
  double predicted_loss = 0;  // Σ of the chosen formats' losses: with the probe, a predicted output KLD
  int64_t params = 0;
  uint64_t bytes = 0;
  std::vector<PlannedTensor> tensors;
};

// A plan for a GGUF output.
Plan make_plan(const ModelSource& source, const PlanOptions& options, Progress& progress = Progress::none());
// A plan for a bitsandbytes checkpoint of a Hugging Face directory (or a bare .safetensors file, whose
// 2-D float tensors are all candidates), under Hugging Face names.
Plan make_bnb_plan(const Checkpoint& checkpoint, const PlanOptions& options, Progress& progress = Progress::none());
// The role and layer of a tensor named as GGUF or as Hugging Face names it.
RoleOf role_of_tensor(const std::string& name);
void write_plan(const std::filesystem::path& path, const Plan& plan);
Plan read_plan(const std::filesystem::path& path);
// An SVG heat map (layer × role -> bits per weight) and an HTML page showing it with the allocation.
void write_plan_report(const Plan& plan, const std::filesystem::path& svg, const std::filesystem::path& html);

// What `lowbit plan` and Python's lowbit.plan ask for.
struct PlanRequest {
  std::string model;
  double bpw = 0;
  PlanTarget target = PlanTarget::gguf;
  std::string imatrix, text, rules;  // empty: none
  std::string probe_text;            // non-empty: losses measured as output KL-divergence on this text
  int probe_chunks = 4;              // windows of 512 tokens of probe_text
  std::string device = "auto";       // where the probe and text's importance matrix run: cpu, cuda or auto
  bool no_probe = false;             // keep the relative error even where the probe would be the default
  // With `text` and no `imatrix`: where a GGUF plan keeps the importance matrix it measures, recorded
  // in loss_measure.imatrix (empty: measured in a scratch file and dropped).
  std::string keep_imatrix;
  std::string gptq;                  // a Hessian file (lowbit hessian): measure candidates as GPTQ writes them
  // Or collect the Hessians first, over at most gptq_chunks windows of kGptqContext tokens of this text,
  // and keep them at keep_hessian (recorded in loss_measure.gptq; empty: dropped with the scratch file).
  std::string gptq_text;
  int gptq_chunks = 32;
  std::string keep_hessian;
};
// The window length of the Hessians plan and quantize collect themselves (--gptq-text).
inline constexpr int kGptqContext = 512;
// Where a plan written to `plan` keeps the importance matrix `request` has it measure (PLAN.imatrix.gguf):
// a GGUF plan with a text and no --imatrix; empty otherwise. The caller sets request.keep_imatrix to it.
std::string kept_imatrix_path(const PlanRequest& request, const std::filesystem::path& plan);
// Likewise the Hessians it collects with gptq_text (PLAN.hessian.gguf); empty without.
std::string kept_hessian_path(const PlanRequest& request, const std::filesystem::path& plan);
// Opens the model, loads or measures the importance matrix (on `text`), builds the probe that
// choose_plan_loss picks, and plans.
Plan plan_model(const PlanRequest& request, Progress& progress);
PlanTarget parse_plan_target(const std::string& name);  // "gguf" or "bnb"
// An importance matrix that holds data for at least one weight: a model file or an empty file is
// refused rather than used as "no importance matrix".
ImportanceMatrix load_importance_matrix(const std::string& path);

}  // namespace lowbit
