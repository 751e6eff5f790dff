#include "lowbit/pipeline/text_eval.h"

#include <fstream>
#include <iterator>

#include "lowbit/core/error.h"
#include "lowbit/io/hessian.h"
#include "lowbit/model/hessian_collector.h"
#include "lowbit/model/imatrix_collector.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/lora_merge.h"

namespace lowbit {

std::string read_text_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot read the text", {.file = path.string()});
  return {std::istreambuf_iterator<char>(in), {}};
}

std::vector<int32_t> TextTokens::windows(int ctx) const {
  std::vector<int32_t> out(ids.begin(), ids.begin() + int64_t(ids.size()) / ctx * ctx);
  if (bos)
    for (size_t i = 0; i < out.size(); i += size_t(ctx)) out[i] = *bos;
  return out;
}

TextTokens tokenize_text(const EvalModel& model, const std::filesystem::path& model_path, const std::filesystem::path& text, int ctx,
                         int chunks) {
  const Tokenizer tokenizer = Tokenizer::from_gguf_metadata(model.metadata(), model_path.string());
  TextTokens t;
  if (tokenizer.adds_bos()) t.bos = tokenizer.bos_id();
  t.ids = tokenizer.encode(read_text_file(text), /*add_special=*/true, /*parse_special=*/false);
  if (chunks > 0 && int64_t(t.ids.size()) > int64_t(chunks) * ctx) t.ids.resize(size_t(chunks) * size_t(ctx));
  return t;
}

EvalResult evaluate_text(const EvalRequest& request, Progress& progress) {
  if (!request.base.empty() && !request.kld_base.empty()) throw Error("give a base model or a base logits file, not both");
  if (!request.base_lora.empty() && request.base.empty()) throw Error("--base-lora applies to --base");
  const Device device = resolve_device(request.device);
  const EvalModel model(request.model, open_adapters(request.lora, request.lora_scale), device);
  const TextTokens tokens = tokenize_text(model, request.model, request.text, request.ctx, request.chunks);
  std::optional<BaseLogits> base_logits;
  std::optional<double> base_ppl;  // a base model's own perplexity, exact
  if (!request.kld_base.empty()) base_logits = BaseLogits::load(request.kld_base);
  if (!request.base.empty()) {
    const EvalModel base(request.base, open_adapters(request.base_lora, request.base_lora_scale), device);
    base_logits.emplace(request.ctx, base.model().config().n_vocab, tokens.windows(request.ctx));
    base_ppl = evaluate(base.runtime(), tokens.ids, request.ctx, tokens.bos, nullptr, &*base_logits, progress).ppl;
    if (!request.save_logits.empty()) base_logits->save(request.save_logits);
  }
  std::optional<BaseLogits> own;
  if (!request.save_logits.empty() && request.base.empty())
    own.emplace(request.ctx, model.model().config().n_vocab, tokens.windows(request.ctx));
  EvalResult result = evaluate(model.runtime(), tokens.ids, request.ctx, tokens.bos, base_logits ? &*base_logits : nullptr,
                               own ? &*own : nullptr, progress);
  if (own) own->save(request.save_logits);
  if (base_ppl) result.base_ppl = base_ppl;
  return result;
}

nlohmann::ordered_json eval_result_json(const EvalResult& r, int ctx) {
  nlohmann::ordered_json j{{"ppl", r.ppl}, {"tokens", r.tokens}};
  if (r.kld) {
    j["kld"] = {{"mean", r.kld->mean}, {"median", r.kld->median}, {"p99", r.kld->p99}, {"max", r.kld->max}};
    j["top1"] = *r.top1;
    j["base_ppl"] = *r.base_ppl;
    j["delta_ppl"] = r.ppl - *r.base_ppl;
  }
  j["chunks"] = r.chunks;
  j["ctx"] = ctx;
  return j;
}

TextRunSummary write_imatrix_from_text(const TextRunRequest& request, bool dat, Progress& progress) {
  const EvalModel model(request.model, resolve_device(request.device));
  const TextTokens tokens = tokenize_text(model, request.model, request.text, request.ctx, request.chunks);
  const auto run = collect_imatrix(model.runtime(), tokens.ids, request.ctx, tokens.bos, progress);
  const std::string dataset = std::filesystem::path(request.text).filename().string();
  if (dat) write_imatrix_dat(request.output, run.entries, {dataset}, uint32_t(run.chunks));
  else write_imatrix_gguf(request.output, run.entries, {dataset}, uint32_t(run.chunks), uint32_t(request.ctx));
  return {.tensors = run.entries.size(), .chunks = run.chunks, .tokens = uint64_t(run.chunks) * uint64_t(request.ctx)};
}

TextRunSummary write_hessians_from_text(const TextRunRequest& request, Progress& progress) {
  const EvalModel model(request.model, resolve_device(request.device));
  const TextTokens tokens = tokenize_text(model, request.model, request.text, request.ctx, request.chunks);
  const auto run = collect_hessians(model.runtime(), tokens.ids, request.ctx, tokens.bos, progress);
  size_t weights = 0;
  for (const auto& in : run.inputs) weights += in.weights.size();
  const std::string dataset = std::filesystem::path(request.text).filename().string();
  write_hessians(request.output, run.inputs, {dataset}, uint32_t(run.chunks), uint32_t(request.ctx), run.tokens);
  return {.tensors = run.inputs.size(), .weights = weights, .chunks = run.chunks, .tokens = run.tokens};
}

CollectedHessians::CollectedHessians(const std::string& model, const std::string& text, int ctx, int chunks, const std::string& device,
                                     Progress& progress)
    : scratch_("hessian"),
      path_((scratch_ / "hessian.gguf").string()),
      label_("collected on " + std::filesystem::path(text).filename().string()) {
  write_hessians_from_text({.model = model, .text = text, .output = path_, .ctx = ctx, .chunks = chunks, .device = device}, progress);
}

ImportanceMatrix imatrix_from_text(const std::string& model_path, const std::string& text, const std::filesystem::path& path,
                                   Device device) {
  constexpr int kCtx = 512, kChunks = 16;
  const EvalModel model(model_path, device);
  const TextTokens tokens = tokenize_text(model, model_path, text, kCtx, kChunks);
  const auto run = collect_imatrix(model.runtime(), tokens.ids, kCtx, tokens.bos);
  write_imatrix_gguf(path, run.entries, {std::filesystem::path(text).filename().string()}, uint32_t(run.chunks), kCtx);
  return ImportanceMatrix::load(path);
}

}  // namespace lowbit
