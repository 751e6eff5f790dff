// The CLI's jobs for Python (jobs.cpp): each request as the command's flags give it, each result the
// document the command prints with --json.
#pragma once

#include <nanobind/nanobind.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "lowbit/core/progress.h"

namespace nb = nanobind;

namespace lowbit::python {

struct QuantizeArgs {
  std::string input, output, format, mix, imatrix, gptq, gptq_text;
  int gptq_chunks = 32;
  std::vector<std::string> tensor_types;  // GLOB=TYPE
  std::string plan, target = "gguf", rules, probe_text;
  double bpw = 0;
  int probe_chunks = 4;
  std::string device = "auto";
  int64_t blocksize = 64;
  bool double_quant = false, force = false, allow_nonfinite = false;
  std::vector<std::string> skip;
};

struct DequantizeArgs {
  std::string input, output, dtype;  // dtype empty: GGUF f32, bitsandbytes each weight's recorded dtype
  bool force = false, allow_nonfinite = false;
};

struct PlanArgs {
  std::string model;
  double bpw = 0;
  std::string target = "gguf", imatrix, text, rules, probe_text, gptq, gptq_text;
  int probe_chunks = 4, gptq_chunks = 32;
  std::string device = "auto";
  std::string output;  // plan.json; empty only for a plan made inline by quantize
  bool force = false;
};

struct EvalArgs {
  std::string model, text, base, kld_base, save_logits, device = "auto";
  std::vector<std::string> lora, base_lora;
  std::vector<double> lora_scale, base_lora_scale;
  int ctx = 512, chunks = 0;
  bool force = false;
};

struct ImatrixArgs {
  std::string model, text, output, device = "auto";
  int ctx = 512, chunks = 0;
  bool force = false;
};

nlohmann::ordered_json quantize_job(const QuantizeArgs& args, Progress& progress);
nlohmann::ordered_json dequantize_job(const DequantizeArgs& args, Progress& progress);
nlohmann::ordered_json plan_job(const PlanArgs& args, Progress& progress);
nlohmann::ordered_json eval_job(const EvalArgs& args, Progress& progress);
nlohmann::ordered_json imatrix_job(const ImatrixArgs& args, Progress& progress);
// `lowbit hessian` (the same arguments: a text's windows, written to `output`).
nlohmann::ordered_json hessian_job(const ImatrixArgs& args, Progress& progress);

nb::object to_python(const nlohmann::ordered_json& json);
void bind_jobs(nb::module_& m);

}  // namespace lowbit::python
