// Quantizing a model (GGUF or Hugging Face directory) into a GGUF file, one tensor at a time.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "lowbit/core/nonfinite.h"
#include "lowbit/core/progress.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/io/model_source.h"
#include "lowbit/plan/llama_cpp_mix.h"

namespace lowbit {

struct Plan;

// The types a GGUF quantization is asked for, as `lowbit quantize` and Python's lowbit.quantize take
// them: a plan (every tensor it quantizes, by exact name), a llama.cpp mix, or one type; then GLOB=TYPE
// rules, first match wins.
struct GgufTypeRequest {
  const Plan* plan = nullptr;
  std::string plan_origin;                // the file the plan came from, named in its errors
  std::string mix, format;                // without a plan: a mix, or else one type
  std::vector<std::string> tensor_types;  // GLOB=TYPE
};
// Refuses a plan naming a tensor `source` lacks (an edited plan's misspelling would silently change
// nothing), an unknown mix or type, and a rule that is not GLOB=TYPE.
TypeSelection select_gguf_types(const ModelSource& source, const GgufTypeRequest& request);
// Hyperparameters the per-tensor type choices depend on, read from the source's metadata; values out
// of range are refused.
ModelFacts model_facts(const ModelSource& source);

struct GgufQuantizeOptions {
  TypeSelection selection;                    // mix or uniform type, overrides
  const ImportanceMatrix* imatrix = nullptr;  // per-column importance weights, by GGUF tensor name
  std::string imatrix_path;                   // recorded in the output's metadata
  NonfinitePolicy nonfinite;                  // NaN/Inf and out-of-range values: refused unless allowed
  const HessianFile* hessian = nullptr;       // --gptq: GPTQ's error feedback where the type has a path (formats/gptq.h)
  std::string hessian_path;                   // recorded in the output's metadata
};

// The importance matrix and Hessian file a GGUF quantization reads, each opened once: the file named,
// else the one the plan's losses were measured with (plan.json's loss_measure), which must still exist.
// attach() points the options at them, so this object must outlive their use.
struct GgufSideFiles {
  std::optional<ImportanceMatrix> imatrix;
  std::optional<HessianFile> hessian;
  std::string imatrix_path, hessian_path;         // empty: none
  bool imatrix_from_plan = false, hessian_from_plan = false;  // taken from the plan rather than named
  void attach(GgufQuantizeOptions& options) const;
};
GgufSideFiles open_gguf_side_files(const Plan* plan, const std::string& imatrix, const std::string& gptq);

struct GgufTensorReport {
  std::string name;
  GgmlType from, to;
  int64_t params;
  uint64_t bytes;
  bool used_imatrix;
  bool used_gptq = false;
};

struct GgufQuantizeReport {
  std::vector<GgufTensorReport> tensors;
  int64_t params = 0;
  uint64_t bytes = 0;
  NonfiniteCount nonfinite;                   // what --allow-nonfinite let through
  std::vector<GgmlType> gptq_fallback;        // with a Hessian: quantized types GPTQ cannot write, rounded as usual
  double seconds = 0;
};

// The document `lowbit quantize --json` prints for a GGUF output: each tensor's types, size and bpw, totals.
nlohmann::ordered_json gguf_report_json(const std::filesystem::path& output, const GgufQuantizeReport& report);

// Writes `out` atomically. Tensors already in their target type are copied, not requantized. Every
// tensor passes options.nonfinite's policy first; no non-finite block scale is ever written.
GgufQuantizeReport quantize_to_gguf(const ModelSource& source, const std::filesystem::path& out,
                                    GgufQuantizeOptions options, Progress& progress = Progress::none());

// A model quantized into a GGUF file as `lowbit quantize` and Python's lowbit.quantize ask for it, with
// or without a plan: the model opened, its types chosen (select_gguf_types), the side files opened
// (open_gguf_side_files: those named, else the plan's), then quantize_to_gguf.
struct GgufQuantizeJob {
  std::filesystem::path input, output;      // output: OUT.gguf
  GgufTypeRequest types;
  std::string imatrix, gptq;                // files the caller names (--imatrix, --gptq); empty: the plan's, if any
  std::string gptq_label;                   // recorded instead of gptq's path (Hessians collected into a scratch file)
  NonfinitePolicy nonfinite;
  // A line for people, before any tensor is written: which side files the plan brought. Null: none.
  std::function<void(const std::string&)> note;
};
GgufQuantizeReport quantize_model_to_gguf(const GgufQuantizeJob& job, Progress& progress = Progress::none());

// Every block-quantized tensor back to `dtype` (f32, f16 or bf16), float tensors as they are; into
// a GGUF (.gguf) or, under the GGUF names in PyTorch's dimension order, a .safetensors file.
GgufQuantizeReport dequantize_gguf(const ModelSource& source, const std::filesystem::path& out, DType dtype,
                                   Progress& progress = Progress::none(), const NonfinitePolicy& nonfinite = {});

// A GGUF (Llama, Qwen2, Qwen3 with a byte-level BPE vocabulary) as a Hugging Face directory: weights
// dequantized to `dtype` under transformers' names (Q/K rows back in HF's order), config.json,
// tokenizer.json and tokenizer_config.json. Written beside `out` and renamed when complete.
GgufQuantizeReport export_gguf_to_hf(const ModelSource& source, const std::filesystem::path& out, DType dtype,
                                     Progress& progress = Progress::none(), const NonfinitePolicy& nonfinite = {}, bool overwrite = false);

}  // namespace lowbit
