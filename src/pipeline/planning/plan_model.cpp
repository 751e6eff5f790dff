// plan_model: the whole of `lowbit plan` below its flags, shared by the CLI and the Python package.
#include <fmt/format.h>

#include <optional>

#include "lowbit/core/atomic_file.h"
#include "lowbit/core/error.h"
#include "lowbit/core/mapped_file.h"
#include "lowbit/core/temporaries.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/text_eval.h"

namespace lowbit {

ImportanceMatrix load_importance_matrix(const std::string& path) {
  auto imatrix = ImportanceMatrix::load(path);
  if (imatrix.entries().empty())
    throw Error("holds no importance data (no weight's activations): not an importance matrix",
                {.file = path, .expected = "an imatrix.gguf from lowbit imatrix or llama-imatrix, or a legacy .dat"});
  return imatrix;
}

PlanTarget parse_plan_target(const std::string& name) {
  if (name == "gguf") return PlanTarget::gguf;
  if (name == "bnb") return PlanTarget::bnb;
  throw Error(fmt::format("unknown target '{}'", name), {.expected = "gguf or bnb"});
}

Plan plan_model(const PlanRequest& request, Progress& progress) {
  constexpr int kProbeContext = 512;
  if (!(request.bpw >= 1 && request.bpw <= 32)) throw Error(fmt::format("bits per weight {} outside [1, 32]", request.bpw));
  if (request.target == PlanTarget::bnb && !std::filesystem::is_directory(request.model) &&
      std::filesystem::path(request.model).extension() != ".safetensors")
    throw Error("--target bnb plans a Hugging Face directory or a .safetensors file", {.file = request.model});
  if (!request.gptq.empty() && !request.gptq_text.empty()) throw Error("give --gptq HESSIAN or --gptq-text FILE, not both");
  PlanOptions options{.target_bpw = request.bpw};
  std::optional<HessianFile> hessian;
  std::optional<CollectedHessians> collected;  // Hessians collected on gptq_text, until the plan is made
  if (!request.gptq.empty()) {
    options.hessian = &hessian.emplace(request.gptq);
  } else if (!request.gptq_text.empty()) {
    collected.emplace(request.model, request.gptq_text, kGptqContext, request.gptq_chunks, request.device, Progress::none());
    options.hessian = &hessian.emplace(collected->path());
  }
  if (!request.rules.empty()) {
    auto extra = load_plan_rules(request.rules);
    options.rules.insert(options.rules.end(), extra.begin(), extra.end());
  }
  std::optional<ImportanceMatrix> imatrix;
  std::optional<ScratchDirectory> scratch;  // holds a matrix measured on `text` until the plan is made
  if (!request.imatrix.empty()) {
    imatrix = load_importance_matrix(request.imatrix);
  } else if (!request.text.empty()) {
    scratch.emplace("plan");
    imatrix = imatrix_from_text(request.model, request.text, *scratch / "imatrix.gguf", resolve_device(request.device));
  }
  options.imatrix = imatrix ? &*imatrix : nullptr;
  if (request.target == PlanTarget::bnb) {
    if (!request.probe_text.empty()) throw Error("--probe-text plans GGUF outputs only (--target gguf)");
    Plan plan = make_bnb_plan(Checkpoint(request.model), options, progress);
    plan.loss_measure.reason = "--target bnb: the probe plans GGUF outputs only";
    return plan;
  }
  const Device device = resolve_device(request.device);
  const auto [probe_text, reason] = choose_plan_loss(request.probe_text, request.text, device, request.no_probe);
  // The probe runs the unquantized model in the eval runtime, swapping one tensor at a time.
  std::optional<EvalModel> probe_model;
  std::optional<KldProbe> probe;
  if (!probe_text.empty()) {
    // The probe's small differences between candidates want f16's finer rounding (cuda_runtime.h).
    probe_model.emplace(request.model, device, DType::f16);
    const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(probe_model->metadata(), request.model);
    probe.emplace(probe_model->runtime(), tokenizer.encode(read_text_file(probe_text)), kProbeContext,
                  tokenizer.adds_bos() ? tokenizer.bos_id() : std::nullopt, request.probe_chunks);
    options.probe = &*probe;
  }
  Plan plan = make_plan(*ModelSource::open(request.model), options, progress);
  if (probe) plan.loss_measure.calibration = std::filesystem::path(probe_text).filename().string();
  plan.loss_measure.reason = reason;
  plan.loss_measure.imatrix = request.imatrix;
  if (scratch && !request.keep_imatrix.empty()) {  // kept only once the plan that uses it exists
    AtomicFile kept(request.keep_imatrix);
    kept.write(MappedFile(*scratch / "imatrix.gguf").bytes());
    kept.commit();
    plan.loss_measure.imatrix = request.keep_imatrix;
  }
  if (collected && !request.keep_hessian.empty()) {
    AtomicFile kept(request.keep_hessian);
    kept.write(MappedFile(collected->path()).bytes());
    kept.commit();
    plan.loss_measure.gptq = request.keep_hessian;
  }
  return plan;
}

std::string kept_hessian_path(const PlanRequest& request, const std::filesystem::path& plan) {
  return request.gptq_text.empty() ? "" : std::filesystem::path(plan).replace_extension(".hessian.gguf").string();
}

std::string kept_imatrix_path(const PlanRequest& request, const std::filesystem::path& plan) {
  const bool measures = !request.text.empty() && request.imatrix.empty() && request.target == PlanTarget::gguf;
  return measures ? std::filesystem::path(plan).replace_extension(".imatrix.gguf").string() : "";
}

}  // namespace lowbit
