// What the CLI and the Python package ask a GGUF quantization for, turned into the library's
// TypeSelection and opened side files (importance matrix, Hessians), and its report as JSON.
#include <fmt/format.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <set>

#include "lowbit/core/error.h"
#include "lowbit/core/key_error.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"

namespace lowbit {
namespace {

GgmlType parse_type(const std::string& name, const std::string& where) {
  const auto type = ggml_type_from_name(name);
  if (!type) throw Error(fmt::format("unknown ggml type '{}' in {}", name, where), {.expected = "q4_0, q8_0, q4_K, iq4_xs, f16 ..."});
  return *type;
}

// `given` when named, else the file the plan recorded, which must still exist.
std::string plan_input(const std::string& recorded, const std::string& given, std::string_view what, std::string_view flag) {
  if (!given.empty() || recorded.empty()) return given;
  if (!std::filesystem::is_regular_file(recorded))
    throw Error(fmt::format("the plan's losses were measured with this {}, which is gone", what),
                {.file = recorded, .expected = fmt::format("the file where the plan names it, or {} FILE (or plan again)", flag)});
  return recorded;
}

}  // namespace

GgufSideFiles open_gguf_side_files(const Plan* plan, const std::string& imatrix, const std::string& gptq) {
  GgufSideFiles files;
  files.imatrix_path = plan ? plan_input(plan->loss_measure.imatrix, imatrix, "importance matrix", "--imatrix") : imatrix;
  files.hessian_path = plan ? plan_input(plan->loss_measure.gptq, gptq, "Hessian file", "--gptq") : gptq;
  files.imatrix_from_plan = files.imatrix_path != imatrix;
  files.hessian_from_plan = files.hessian_path != gptq;
  if (!files.imatrix_path.empty()) files.imatrix = load_importance_matrix(files.imatrix_path);
  if (!files.hessian_path.empty()) files.hessian.emplace(files.hessian_path);
  return files;
}

void GgufSideFiles::attach(GgufQuantizeOptions& options) const {
  options.imatrix = imatrix ? &*imatrix : nullptr;
  options.imatrix_path = imatrix_path;
  options.hessian = hessian ? &*hessian : nullptr;
  options.hessian_path = hessian_path;
}

ModelFacts model_facts(const ModelSource& source) {
  ModelFacts f;
  const auto* arch_value = source.find("general.architecture");
  const std::string arch = arch_value && arch_value->get_if<std::string>() ? *arch_value->get_if<std::string>() : "llama";
  // Type choices count layers and split rows by heads: values out of range are refused, not used.
  auto get = [&](const std::string& key, int fallback, int64_t min, int64_t max) {
    const auto* v = source.find(arch + "." + key);
    if (!v) return fallback;
    const auto n = v->as_int();
    if (!n || *n < min || *n > max)
      throw key_error(source.label(), arch + "." + key, fmt::format("{} is not an integer in range", v->as_int() ? std::to_string(*n) : std::string(gguf::value_type_name(v->type()))), fmt::format("{} to {}", min, max));
    return int(*n);
  };
  f.n_layer = get("block_count", 0, 0, 10'000);
  f.n_head = get("attention.head_count", 1, 1, 1 << 20);
  f.n_head_kv = get("attention.head_count_kv", f.n_head, 1, f.n_head);
  f.n_expert = get("expert_count", 0, 0, 1 << 16);
  if (f.n_head % f.n_head_kv != 0)
    throw key_error(source.label(), arch + ".attention.head_count_kv", fmt::format("{} does not divide the head count {}", f.n_head_kv, f.n_head));
  f.has_output = std::ranges::any_of(source.tensors(), [](const ModelSource::Tensor& t) { return t.name == "output.weight"; });
  return f;
}

GgufQuantizeReport quantize_model_to_gguf(const GgufQuantizeJob& job, Progress& progress) {
  if (!job.output.string().ends_with(".gguf")) throw Error("the output of a GGUF quantization must end in .gguf", {.file = job.output.string()});
  const auto source = ModelSource::open(job.input);
  GgufQuantizeOptions options{.selection = select_gguf_types(*source, job.types), .nonfinite = job.nonfinite};
  GgufSideFiles side = open_gguf_side_files(job.types.plan, job.imatrix, job.gptq);
  if (!job.gptq_label.empty()) side.hessian_path = job.gptq_label;  // recorded instead of a scratch file's path
  side.attach(options);
  if (job.note && side.imatrix_from_plan) job.note(fmt::format("quantizing with the plan's importance matrix {}", side.imatrix_path));
  if (job.note && side.hessian_from_plan) job.note(fmt::format("writing the plan's GPTQ candidates with its Hessian file {}", side.hessian_path));
  return quantize_to_gguf(*source, job.output, options, progress);
}

TypeSelection select_gguf_types(const ModelSource& source, const GgufTypeRequest& request) {
  TypeSelection selection;
  if (request.plan) {
    std::set<std::string, std::less<>> names;
    for (const auto& t : source.tensors()) names.insert(t.name);
    std::map<GgmlType, int64_t> params_by_type;
    for (const auto& t : request.plan->tensors)
      if (t.quantized) {
        if (!names.contains(t.name)) throw Error("the plan names a tensor the model does not have", {.file = request.plan_origin, .tensor = t.name});
        const GgmlType type = *format_info(t.format.id).ggml;
        selection.overrides.emplace_back(t.name, type);
        params_by_type[type] += std::max<int64_t>(t.params, 1);
      }
    // The type of most parameters stands for the file (general.file_type); every tensor is named above.
    selection.default_type = params_by_type.empty() ? GgmlType::Q8_0
                                                    : std::ranges::max_element(params_by_type, {}, [](const auto& p) { return p.second; })->first;
  } else if (!request.mix.empty()) {
    selection.mix = find_llama_mix(request.mix);
    if (!selection.mix)
      throw Error(fmt::format("unknown mix '{}'", request.mix), {.expected = "Q2_K, Q3_K_S, Q3_K_M, Q3_K_L, Q4_K_S, Q4_K_M, Q5_K_S, Q5_K_M, Q6_K, Q8_0 ..."});
    selection.default_type = selection.mix->default_type;
  } else {
    selection.default_type = parse_type(request.format, "--format");
  }
  for (const auto& rule : request.tensor_types) {
    const auto eq = rule.rfind('=');
    if (eq == std::string::npos || eq == 0) throw Error(fmt::format("--tensor-type '{}' is not GLOB=TYPE", rule));
    selection.overrides.emplace_back(rule.substr(0, eq), parse_type(rule.substr(eq + 1), "--tensor-type"));
  }
  return selection;
}

nlohmann::ordered_json gguf_report_json(const std::filesystem::path& output, const GgufQuantizeReport& report) {
  nlohmann::ordered_json j;
  j["output"] = output.string();
  j["tensors"] = nlohmann::ordered_json::array();
  for (const auto& t : report.tensors)
    j["tensors"].push_back({{"name", t.name}, {"from", ggml_type_name(t.from)}, {"format", ggml_type_name(t.to)}, {"params", t.params},
                            {"bytes", t.bytes}, {"bpw", 8.0 * double(t.bytes) / double(t.params)}, {"imatrix", t.used_imatrix},
                            {"gptq", t.used_gptq}});
  j["total"] = {{"params", report.params}, {"bytes", report.bytes}, {"bpw", 8.0 * double(report.bytes) / double(report.params)},
                {"seconds", report.seconds}};
  j["nonfinite"] = {{"values", report.nonfinite.values}, {"tensors", report.nonfinite.tensors}};
  return j;
}

}  // namespace lowbit
