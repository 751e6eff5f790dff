// The CLI's jobs as Python functions: quantize, dequantize, plan, eval, imatrix. Each makes the same
// library calls as its command in cli/ and returns the document `lowbit <command> --json` prints
// (tests/test_jobs.py holds them equal). Plans, quantizations and evaluations are single library
// calls (pipeline/plan.h's plan_model, quantize_gguf.h's quantize_model_to_gguf, bnb_jobs.h's
// quantize_to_bnb, pipeline/text_eval.h).
#include "jobs.h"

#include <nanobind/stl/function.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>


#include "lowbit/core/error.h"
#include "lowbit/core/output_path.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "lowbit/pipeline/text_eval.h"

namespace lowbit::python {
namespace {

using Json = nlohmann::ordered_json;
namespace fs = std::filesystem;

// ---- Python <-> the library's callbacks ----

// Progress as calls of a Python callable: callback(what, done, total), with the GIL taken for each.
// An exception the callback raises stops the calls and is raised again when the job returns (it
// cannot cross the library, whose progress may be reported from its worker threads).
class CallbackProgress final : public Progress {
 public:
  explicit CallbackProgress(nb::object callback) : callback_(std::move(callback)) {}
  void raise_pending() {
    if (error_) {
      nb::python_error e = std::move(*error_);
      error_.reset();
      throw e;
    }
  }
  void begin(std::string_view what, int64_t total_items, uint64_t) override {
    what_ = std::string(what);
    total_ = total_items;
    done_ = 0;
    call();
  }
  void advance(std::string_view, uint64_t, int64_t items) override {
    done_ += items;
    call();
  }

 private:
  void call() {
    nb::gil_scoped_acquire gil;
    if (callback_.is_none() || error_) return;
    try {
      callback_(what_, done_, total_);
    } catch (nb::python_error& e) {
      error_.emplace(std::move(e));
    }
  }
  nb::object callback_;
  std::optional<nb::python_error> error_;
  std::string what_;
  int64_t total_ = 0, done_ = 0;
};

// --allow-nonfinite's reports as Python warnings (RuntimeWarning), as the CLI writes them to stderr.
NonfinitePolicy nonfinite_policy(bool allow) {
  return {.allow = allow, .report = [](const std::string& line) {
            nb::gil_scoped_acquire gil;
            // Warnings turned into errors cannot stop a job already allowed to keep these values (they are
            // counted in its result): the error is cleared.
            if (PyErr_WarnEx(PyExc_RuntimeWarning, line.c_str(), 1) < 0) PyErr_Clear();
          }};
}

Json nonfinite_json(const NonfiniteCount& count) { return {{"values", count.values}, {"tensors", count.tensors}}; }

void check_outputs(const std::vector<std::string>& outputs, const std::vector<std::string>& inputs, bool force) {
  const std::vector<fs::path> in(inputs.begin(), inputs.end());
  for (const auto& output : outputs)
    if (!output.empty()) check_output_path(output, in, force);
}

// Runs `job` without the GIL (the library's threads and Python's other threads go on meanwhile).
template <class F>
auto released(F&& job) {
  nb::gil_scoped_release no_gil;
  return job();
}

// ---- plans (the library's plan_model, as `lowbit plan` calls it) ----

PlanRequest plan_request(const PlanArgs& a) {
  PlanRequest request{.model = a.model, .bpw = a.bpw, .target = parse_plan_target(a.target), .imatrix = a.imatrix, .text = a.text,
                      .rules = a.rules, .probe_text = a.probe_text, .probe_chunks = a.probe_chunks, .device = a.device, .gptq = a.gptq,
                      .gptq_text = a.gptq_text, .gptq_chunks = a.gptq_chunks};
  if (!a.output.empty()) {  // no files for a plan made inline
    request.keep_imatrix = kept_imatrix_path(request, a.output);
    request.keep_hessian = kept_hessian_path(request, a.output);
  }
  return request;
}

Plan make_plan_for(const PlanArgs& a, Progress& progress) { return plan_model(plan_request(a), progress); }

// ---- quantize (cli/quantize.cpp) ----

Json quantize_bnb(const QuantizeArgs& a, const Plan* plan, Progress& progress, const std::string& gptq_label = "") {
  if (!a.mix.empty() || !a.imatrix.empty() || !a.tensor_types.empty())
    throw Error("mix, imatrix and tensor_types apply to GGUF outputs, not to bitsandbytes formats");
  const auto r = quantize_to_bnb(a.input, a.output,
                                 {.format = {.id = parse_bnb_format(a.format).value_or(FormatId::nf4), .blocksize = a.blocksize, .double_quant = a.double_quant},
                                  .skip = a.skip, .plan = plan,
                                  .nonfinite = nonfinite_policy(a.allow_nonfinite), .overwrite = a.force, .gptq = a.gptq,
                                  .gptq_label = gptq_label},
                                 progress);
  return {{"output", a.output}, {"format", plan ? "planned" : a.format}, {"tensors", r.tensors}, {"quantized", r.quantized},
          {"bytes_in", r.bytes_in}, {"bytes_out", r.bytes_out}, {"shards", r.shards}, {"nonfinite", nonfinite_json(r.nonfinite)},
          {"gptq", r.gptq}, {"seconds", r.seconds}};
}

Json quantize_gguf(const QuantizeArgs& a, const Plan* plan, Progress& progress, const std::string& gptq_label = "") {
  const auto report = quantize_model_to_gguf(
      {.input = a.input, .output = a.output,
       .types = {.plan = plan, .plan_origin = a.plan.empty() ? a.input : a.plan, .mix = a.mix, .format = a.format, .tensor_types = a.tensor_types},
       .imatrix = a.imatrix, .gptq = a.gptq, .gptq_label = gptq_label, .nonfinite = nonfinite_policy(a.allow_nonfinite)},
      progress);
  return gguf_report_json(a.output, report);
}

}  // namespace

Json quantize_job(const QuantizeArgs& args, Progress& progress) {
  check_outputs({args.output}, {args.input, args.imatrix, args.plan, args.rules, args.probe_text, args.gptq, args.gptq_text}, args.force);
  if (int(!args.format.empty()) + int(!args.mix.empty()) + int(!args.plan.empty()) + int(args.bpw > 0) != 1)
    throw Error("give exactly one of format, mix, plan and bpw");
  if ((args.target != "gguf" || !args.rules.empty() || !args.probe_text.empty()) && args.bpw <= 0)
    throw Error("target, rules and probe_text apply to bpw (a plan file records its own target and choices)");
  QuantizeArgs a = args;
  std::optional<CollectedHessians> collected;  // gptq_text's Hessians, removed when done
  if (!args.gptq_text.empty()) {
    if (!args.gptq.empty()) throw Error("give gptq or gptq_text, not both");
    collected.emplace(args.input, args.gptq_text, kGptqContext, args.gptq_chunks, args.device, progress);
    a.gptq = collected->path();
  }
  const std::string gptq_label = collected ? collected->label() : "";
  if (parse_bnb_format(a.format)) return quantize_bnb(a, nullptr, progress, gptq_label);
  if (a.plan.empty() && a.bpw <= 0) return quantize_gguf(a, nullptr, progress, gptq_label);
  const Plan plan = !a.plan.empty() ? read_plan(a.plan)
                                    : make_plan_for({.model = a.input, .bpw = a.bpw, .target = a.target, .imatrix = a.imatrix, .rules = a.rules,
                                                     .probe_text = a.probe_text, .gptq = a.gptq, .probe_chunks = a.probe_chunks, .device = a.device},
                                                    progress);
  if (plan.target == PlanTarget::bnb) {
    QuantizeArgs rest = a;
    if (a.bpw > 0) rest.imatrix.clear();  // the planner weighed the losses with it; bitsandbytes has no use for it
    return quantize_bnb(rest, &plan, progress, gptq_label);
  }
  return quantize_gguf(a, &plan, progress, gptq_label);
}

Json dequantize_job(const DequantizeArgs& a, Progress& progress) {
  check_outputs({a.output}, {a.input}, a.force);
  const NonfinitePolicy policy = nonfinite_policy(a.allow_nonfinite);
  std::optional<DType> dtype;
  if (!a.dtype.empty()) {
    dtype = dtype_from_name(a.dtype);
    if (!dtype || !dtype_is_float(*dtype) || *dtype == DType::f64) throw Error("dtype '" + a.dtype + "' is not f32, f16 or bf16");
  }
  Json j{{"output", a.output}};
  if (fs::path(a.input).extension() == ".gguf") {
    const auto source = ModelSource::open(a.input);
    const auto ext = fs::path(a.output).extension();
    const auto r = ext == ".gguf" || ext == ".safetensors" ? dequantize_gguf(*source, a.output, dtype.value_or(DType::f32), progress, policy)
                                                           : export_gguf_to_hf(*source, a.output, dtype.value_or(DType::f32), progress, policy, a.force);
    j["tensors"] = r.tensors.size();
    j["bytes_out"] = r.bytes;
    j["nonfinite"] = nonfinite_json(r.nonfinite);
    j["seconds"] = r.seconds;
  } else {
    if (!is_bnb_checkpoint(a.input)) throw Error("no bitsandbytes-quantized weight found", {.file = a.input});
    const auto r = dequantize_bnb(a.input, a.output, dtype, progress, policy, a.force);
    j["tensors"] = r.tensors;
    j["dequantized"] = r.quantized;
    j["bytes_out"] = r.bytes_out;
    j["nonfinite"] = nonfinite_json(r.nonfinite);
    j["seconds"] = r.seconds;
  }
  return j;
}

Json plan_job(const PlanArgs& a, Progress& progress) {
  const fs::path out(a.output);
  const auto svg = fs::path(out).replace_extension(".svg"), html = fs::path(out).replace_extension(".html");
  const PlanRequest request = plan_request(a);
  const std::string& kept = request.keep_imatrix;
  check_outputs({a.output, svg, html, kept, request.keep_hessian}, {a.model, a.imatrix, a.text, a.probe_text, a.rules, a.gptq, a.gptq_text},
                a.force);
  const Plan plan = plan_model(request, progress);
  write_plan(a.output, plan);
  write_plan_report(plan, svg, html);
  return {{"plan", a.output}, {"target", a.target}, {"target_bpw", plan.target_bpw}, {"achieved_bpw", plan.achieved_bpw},
          {"predicted_loss", plan.predicted_loss},
          {"whole_kld", plan.loss_measure.whole_kld ? Json(*plan.loss_measure.whole_kld) : Json(nullptr)},
          {"params", plan.params}, {"bytes", plan.bytes}, {"imatrix", kept.empty() ? Json(nullptr) : Json(kept)},
          {"hessian", request.keep_hessian.empty() ? Json(nullptr) : Json(request.keep_hessian)}};
}

namespace {

void check_window(int ctx, int chunks) {
  if (ctx < 2 || ctx > (1 << 20)) throw Error("ctx must lie in [2, 1048576]");
  if (chunks < 0) throw Error("chunks must not be negative");
}

}  // namespace

Json eval_job(const EvalArgs& a, Progress& progress) {
  check_window(a.ctx, a.chunks);
  std::vector<std::string> inputs{a.model, a.text, a.base, a.kld_base};
  inputs.insert(inputs.end(), a.lora.begin(), a.lora.end());
  inputs.insert(inputs.end(), a.base_lora.begin(), a.base_lora.end());
  check_outputs({a.save_logits}, inputs, a.force);
  const EvalResult r = evaluate_text({.model = a.model, .text = a.text, .base = a.base, .kld_base = a.kld_base, .save_logits = a.save_logits,
                                      .lora = a.lora, .base_lora = a.base_lora, .lora_scale = a.lora_scale,
                                      .base_lora_scale = a.base_lora_scale, .ctx = a.ctx, .chunks = a.chunks, .device = a.device},
                                     progress);
  return eval_result_json(r, a.ctx);
}

Json imatrix_job(const ImatrixArgs& a, Progress& progress) {
  check_window(a.ctx, a.chunks);
  check_outputs({a.output}, {a.model, a.text}, a.force);
  const auto run = write_imatrix_from_text({.model = a.model, .text = a.text, .output = a.output, .ctx = a.ctx, .chunks = a.chunks,
                                            .device = a.device},
                                           false, progress);
  return {{"output", a.output}, {"weights", run.tensors}, {"chunks", run.chunks}, {"ctx", a.ctx}};
}

Json hessian_job(const ImatrixArgs& a, Progress& progress) {
  check_window(a.ctx, a.chunks);
  check_outputs({a.output}, {a.model, a.text}, a.force);
  const auto run = write_hessians_from_text({.model = a.model, .text = a.text, .output = a.output, .ctx = a.ctx, .chunks = a.chunks,
                                             .device = a.device},
                                            progress);
  return {{"output", a.output}, {"inputs", run.tensors}, {"weights", run.weights}, {"tokens", run.tokens}, {"chunks", run.chunks},
          {"ctx", a.ctx}};
}

// ---- Python ----

nb::object to_python(const Json& j) {
  switch (j.type()) {
    case Json::value_t::null: return nb::none();
    case Json::value_t::boolean: return nb::bool_(j.get<bool>());
    case Json::value_t::number_integer: return nb::int_(j.get<int64_t>());
    case Json::value_t::number_unsigned: return nb::int_(j.get<uint64_t>());
    case Json::value_t::number_float: return nb::float_(j.get<double>());
    case Json::value_t::string: return nb::str(j.get_ref<const std::string&>().c_str());
    case Json::value_t::array: {
      nb::list out;
      for (const auto& v : j) out.append(to_python(v));
      return out;
    }
    case Json::value_t::object: {
      nb::dict out;
      for (const auto& [k, v] : j.items()) out[k.c_str()] = to_python(v);
      return out;
    }
    default: throw Error("a JSON value Python has no type for");
  }
}

namespace {

// A job with its Python progress callback, run without the GIL; its document as a dict.
template <class Args>
nb::object run_job(Json (*job)(const Args&, Progress&), const Args& args, nb::object progress) {
  CallbackProgress callback(std::move(progress));
  const Json result = released([&] { return job(args, callback); });
  callback.raise_pending();
  return to_python(result);
}

}  // namespace

void bind_jobs(nb::module_& m) {
  using S = std::string;
  using Strings = std::vector<std::string>;
  m.def(
      "quantize",
      [](S input, S output, S format, S mix, S plan, double bpw, S target, S rules, S probe_text, int probe_chunks, S device, S imatrix,
         S gptq, S gptq_text, int gptq_chunks, Strings tensor_types, int64_t blocksize, bool double_quant, Strings skip, bool allow_nonfinite,
         bool force, nb::object progress) {
        return run_job(&quantize_job,
                       QuantizeArgs{.input = input, .output = output, .format = format, .mix = mix, .imatrix = imatrix, .gptq = gptq,
                                    .gptq_text = gptq_text, .gptq_chunks = gptq_chunks, .tensor_types = tensor_types,
                                    .plan = plan, .target = target, .rules = rules, .probe_text = probe_text, .bpw = bpw,
                                    .probe_chunks = probe_chunks, .device = device, .blocksize = blocksize, .double_quant = double_quant,
                                    .force = force, .allow_nonfinite = allow_nonfinite, .skip = skip},
                       std::move(progress));
      },
      nb::arg("input"), nb::arg("output"), nb::arg("format"), nb::arg("mix"), nb::arg("plan"), nb::arg("bpw"), nb::arg("target"),
      nb::arg("rules"), nb::arg("probe_text"), nb::arg("probe_chunks"), nb::arg("device"), nb::arg("imatrix"), nb::arg("gptq"),
      nb::arg("gptq_text"), nb::arg("gptq_chunks"), nb::arg("tensor_types"),
      nb::arg("blocksize"), nb::arg("double_quant"), nb::arg("skip"), nb::arg("allow_nonfinite"), nb::arg("force"), nb::arg("progress").none());
  m.def(
      "dequantize",
      [](S input, S output, S dtype, bool allow_nonfinite, bool force, nb::object progress) {
        return run_job(&dequantize_job,
                       DequantizeArgs{.input = input, .output = output, .dtype = dtype, .force = force, .allow_nonfinite = allow_nonfinite},
                       std::move(progress));
      },
      nb::arg("input"), nb::arg("output"), nb::arg("dtype"), nb::arg("allow_nonfinite"), nb::arg("force"), nb::arg("progress").none());
  m.def(
      "plan",
      [](S model, double bpw, S output, S target, S imatrix, S text, S rules, S probe_text, int probe_chunks, S device, S gptq, S gptq_text,
         int gptq_chunks, bool force, nb::object progress) {
        return run_job(&plan_job,
                       PlanArgs{.model = model, .bpw = bpw, .target = target, .imatrix = imatrix, .text = text, .rules = rules,
                                .probe_text = probe_text, .gptq = gptq, .gptq_text = gptq_text, .probe_chunks = probe_chunks,
                                .gptq_chunks = gptq_chunks, .device = device, .output = output, .force = force},
                       std::move(progress));
      },
      nb::arg("model"), nb::arg("bpw"), nb::arg("output"), nb::arg("target"), nb::arg("imatrix"), nb::arg("text"), nb::arg("rules"),
      nb::arg("probe_text"), nb::arg("probe_chunks"), nb::arg("device"), nb::arg("gptq"), nb::arg("gptq_text"), nb::arg("gptq_chunks"),
      nb::arg("force"), nb::arg("progress").none());
  m.def(
      "eval",
      [](S model, S text, int ctx, int chunks, S base, S kld_base, S save_logits, Strings lora, std::vector<double> lora_scale,
         Strings base_lora, std::vector<double> base_lora_scale, S device, bool force, nb::object progress) {
        return run_job(&eval_job,
                       EvalArgs{.model = model, .text = text, .base = base, .kld_base = kld_base, .save_logits = save_logits, .device = device,
                                .lora = lora, .base_lora = base_lora, .lora_scale = lora_scale, .base_lora_scale = base_lora_scale,
                                .ctx = ctx, .chunks = chunks, .force = force},
                       std::move(progress));
      },
      nb::arg("model"), nb::arg("text"), nb::arg("ctx"), nb::arg("chunks"), nb::arg("base"), nb::arg("kld_base"), nb::arg("save_logits"),
      nb::arg("lora"), nb::arg("lora_scale"), nb::arg("base_lora"), nb::arg("base_lora_scale"), nb::arg("device"), nb::arg("force"),
      nb::arg("progress").none());
  m.def(
      "imatrix",
      [](S model, S text, S output, int ctx, int chunks, S device, bool force, nb::object progress) {
        return run_job(&imatrix_job,
                       ImatrixArgs{.model = model, .text = text, .output = output, .device = device, .ctx = ctx, .chunks = chunks, .force = force},
                       std::move(progress));
      },
      nb::arg("model"), nb::arg("text"), nb::arg("output"), nb::arg("ctx"), nb::arg("chunks"), nb::arg("device"), nb::arg("force"),
      nb::arg("progress").none());
  m.def(
      "hessian",
      [](S model, S text, S output, int ctx, int chunks, S device, bool force, nb::object progress) {
        return run_job(&hessian_job,
                       ImatrixArgs{.model = model, .text = text, .output = output, .device = device, .ctx = ctx, .chunks = chunks, .force = force},
                       std::move(progress));
      },
      nb::arg("model"), nb::arg("text"), nb::arg("output"), nb::arg("ctx"), nb::arg("chunks"), nb::arg("device"), nb::arg("force"),
      nb::arg("progress").none());
}

}  // namespace lowbit::python
