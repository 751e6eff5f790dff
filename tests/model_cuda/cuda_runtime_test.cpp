// The CUDA backend of the model runtime against the CPU's, on the same loaded model and text: the
// KL-divergence of the GPU's next-token distributions from the CPU's, perplexity, importance matrices,
// a probed plan, and greedy decoding through the key/value cache. Skipped without a GPU; run on the
// device machine by scripts/device-check.sh (the numbers are printed for the record).
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <span>

#include "lowbit/model/hessian_collector.h"
#include "lowbit/model/imatrix_collector.h"
#include "lowbit/model/kld_probe.h"
#include "lowbit/model/llama.h"
#include "lowbit/model/perplexity.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/io/model_source.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/pipeline/plan.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/tiny_moe_model.h"
#include "support/upcycled_moe.h"
#ifdef LOWBIT_HAVE_CUDA
#include "lowbit/kernels/cuda/device.h"
#include "lowbit/model/cuda_runtime.h"
#endif

namespace lowbit {
namespace {

#ifdef LOWBIT_HAVE_CUDA
#define SKIP_WITHOUT_GPU()                                  \
  do {                                                      \
    if (cuda::devices().empty()) GTEST_SKIP() << "no CUDA device"; \
  } while (false)
#else
#define SKIP_WITHOUT_GPU() GTEST_SKIP() << "built without CUDA"
#endif

std::filesystem::path bytes_model() { return test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf"; }

std::vector<int32_t> text_tokens(const LlamaModel& model, const std::string& file, size_t bytes) {
  std::ifstream in(test::shared_data_dir() / file, std::ios::binary);
  std::string text((std::istreambuf_iterator<char>(in)), {});
  if (text.size() > bytes) text.resize(bytes);
  return Tokenizer::from_gguf_metadata(model.weights().metadata()).encode(text, true);
}

std::optional<int32_t> bos_of(const LlamaModel& model) {
  const auto tokenizer = Tokenizer::from_gguf_metadata(model.weights().metadata());
  return tokenizer.adds_bos() ? tokenizer.bos_id() : std::nullopt;
}

#ifdef LOWBIT_HAVE_CUDA
struct Agreement {
  double mean_kld = 0, max_kld = 0, cpu_ppl = 0, gpu_ppl = 0;
  int64_t positions = 0;
};

// Mean KL(CPU ‖ GPU) over the positions perplexity scores, and both perplexities, on `windows` windows.
Agreement agreement(LlamaModel& model, const std::vector<int32_t>& tokens, int n_ctx, int windows) {
  auto gpu = cuda::make_llama_runtime(model);
  const int n_vocab = model.config().n_vocab, first = n_ctx / 2;
  std::vector<int32_t> batch(tokens.begin(), tokens.begin() + int64_t(windows) * n_ctx);
  const auto bos = bos_of(model);
  if (bos)
    for (int w = 0; w < windows; ++w) batch[size_t(w) * size_t(n_ctx)] = *bos;
  const auto cpu_logits = model.forward(batch, windows);
  const auto gpu_logits = gpu->forward(batch, windows);
  EXPECT_EQ(cpu_logits.size(), gpu_logits.size());
  Agreement a;
  std::vector<float> p(static_cast<size_t>(n_vocab)), q(static_cast<size_t>(n_vocab));
  for (int w = 0; w < windows; ++w)
    for (int j = first; j < n_ctx - 1; ++j) {
      const size_t row = (size_t(w) * size_t(n_ctx) + size_t(j)) * size_t(n_vocab);
      log_softmax(cpu_logits.data() + row, n_vocab, p.data());
      log_softmax(gpu_logits.data() + row, n_vocab, q.data());
      double kld = 0;
      for (int i = 0; i < n_vocab; ++i) kld += std::exp(double(p[size_t(i)])) * (double(p[size_t(i)]) - double(q[size_t(i)]));
      a.mean_kld += kld;
      a.max_kld = std::max(a.max_kld, kld);
      ++a.positions;
    }
  a.mean_kld /= double(a.positions);
  // Perplexity's terms as the GPU computes them, against log_softmax of its own logits on the host.
  const auto terms = gpu->next_token_log_probs(batch, windows);
  EXPECT_EQ(terms.size(), batch.size());
  double worst = 0;
  for (size_t t = 0; t < batch.size(); ++t) {
    if (t % size_t(n_ctx) == size_t(n_ctx) - 1) {
      EXPECT_TRUE(std::isnan(terms[t])) << "a window's last row has no next token";
      continue;
    }
    log_softmax(gpu_logits.data() + t * size_t(n_vocab), n_vocab, q.data());
    worst = std::max(worst, double(std::abs(terms[t] - q[size_t(batch[t + 1])])));
  }
  EXPECT_LE(worst, 1e-5);
  a.cpu_ppl = evaluate(model, batch, n_ctx, bos).ppl;
  a.gpu_ppl = evaluate(*gpu, batch, n_ctx, bos).ppl;
  std::printf("agreement: %lld positions, mean KLD(cpu||gpu) %.3g, max %.3g, ppl cpu %.5f gpu %.5f (%+.4f%%)\n", (long long)a.positions,
              a.mean_kld, a.max_kld, a.cpu_ppl, a.gpu_ppl, 100 * (a.gpu_ppl / a.cpu_ppl - 1));
  return a;
}

// How far the GPU's sums b are from the CPU's a: ‖a − b‖ / ‖a‖, and the largest difference of one element
// relative to its own size.
struct RelativeDifference {
  double whole = 0, worst_element = 0;
};
RelativeDifference relative_difference(std::span<const float> a, std::span<const float> b) {
  double difference = 0, size = 0, worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = double(a[i]) - double(b[i]);
    difference += d * d;
    size += double(a[i]) * double(a[i]);
    worst = std::max(worst, std::abs(d) / std::max(double(std::abs(a[i])), 1e-30));
  }
  return {std::sqrt(difference / size), worst};
}

void expect_agreement(const Agreement& a) {
  EXPECT_LE(a.mean_kld, 1e-4);
  EXPECT_NEAR(a.gpu_ppl / a.cpu_ppl, 1.0, 0.002);
}

// Mean KL(CPU ‖ GPU) over every row of `windows` windows of `batch`.
double mean_kld(const LlamaModel& model, const LlamaRuntime& gpu, const std::vector<int32_t>& batch, int windows) {
  const int n_vocab = model.config().n_vocab;
  const auto cpu = model.forward(batch, windows), on_gpu = gpu.forward(batch, windows);
  EXPECT_EQ(cpu.size(), on_gpu.size());
  std::vector<float> p(static_cast<size_t>(n_vocab)), q(static_cast<size_t>(n_vocab));
  double total = 0;
  for (size_t row = 0; row < batch.size(); ++row) {
    log_softmax(cpu.data() + row * size_t(n_vocab), n_vocab, p.data());
    log_softmax(on_gpu.data() + row * size_t(n_vocab), n_vocab, q.data());
    for (int i = 0; i < n_vocab; ++i) total += std::exp(double(p[size_t(i)])) * (double(p[size_t(i)]) - double(q[size_t(i)]));
  }
  return total / double(batch.size());
}

// Decoding's products against the CPU: one token, five one-token windows and a 64-token prompt, all
// below the token count from which the products dequantize into a tile (dequantize_tokens).
void expect_few_token_agreement(const LlamaModel& model, const LlamaRuntime& gpu, const std::vector<int32_t>& tokens,
                                const std::string& name) {
  for (size_t t = 0; t < 8; ++t) EXPECT_LE(mean_kld(model, gpu, {tokens[100 * t]}, 1), 1e-4) << name << ", one token";
  EXPECT_LE(mean_kld(model, gpu, std::vector<int32_t>(tokens.begin(), tokens.begin() + 5), 5), 1e-4) << name << ", five tokens";
  const double prompt = mean_kld(model, gpu, std::vector<int32_t>(tokens.begin(), tokens.begin() + 64), 1);
  std::printf("%s: mean KLD(cpu||gpu) over a 64-token prompt %.3g\n", name.c_str(), prompt);
  EXPECT_LE(prompt, 1e-4) << name << ", a 64-token prompt";
}
#endif

TEST(CudaRuntime, Stories260KAgreesWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");  // f32 weights, head_dim 8
  expect_agreement(agreement(*model, text_tokens(*model, "tinystories_valid_first1000.txt", 20000), 128, 4));
#endif
}

TEST(CudaRuntime, Bytes12MAgreesWithTheCpuInBf16AndQuantized) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(bytes_model());
  const auto tokens = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 40000);
  expect_agreement(agreement(*model, tokens, 512, 8));
  // The same model in three stored formats: the fused 4-bit kernel's q4_K, a k-quant and a 32-block type.
  for (const GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q4_0}) {
    test::TempDir dir;
    GgufQuantizeOptions options;
    options.selection.default_type = type;
    quantize_to_gguf(*ModelSource::open(bytes_model()), dir / "m.gguf", options);
    auto quantized = LlamaModel::load(dir / "m.gguf");
    std::printf("%s: ", std::string(ggml_type_name(type)).c_str());
    expect_agreement(agreement(*quantized, tokens, 512, 8));
  }
#endif
}

// Decoding's products against the CPU: one token (q2_K, q3_K and q6_K through the run kernels, q4_K
// through the fused kernel with gate and up stacked), five one-token windows (the 8-value matvec) and a
// 64-token prompt (the fused kernel at a prompt's size); the agreement tests above take the many-token path.
TEST(CudaRuntime, FewTokenProductsAgreeWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  const auto tokens = text_tokens(*LlamaModel::load(bytes_model()), "wikitext2_test_hf_nonempty_crlf.raw", 4000);
  for (const GgmlType type : {GgmlType::Q4_K, GgmlType::Q6_K, GgmlType::Q2_K, GgmlType::Q3_K}) {
    test::TempDir dir;
    GgufQuantizeOptions options;
    options.selection.default_type = type;
    quantize_to_gguf(*ModelSource::open(bytes_model()), dir / "m.gguf", options);
    auto model = LlamaModel::load(dir / "m.gguf");
    expect_few_token_agreement(*model, *cuda::make_llama_runtime(*model), tokens, std::string(ggml_type_name(type)));
  }
#endif
}

// The types of issue 15 that need no importance matrix, each through its own GPU kernel (rows none of
// them tiles fall back as llama-quantize's do).
TEST(CudaRuntime, Bytes12MInIquantAndFp4TypesAgreesWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  test::TempDir dir;
  const auto tokens = text_tokens(*LlamaModel::load(bytes_model()), "wikitext2_test_hf_nonempty_crlf.raw", 40000);
  for (const GgmlType type : {GgmlType::IQ4_NL, GgmlType::IQ4_XS, GgmlType::IQ3_S, GgmlType::MXFP4, GgmlType::NVFP4}) {
    const auto path = dir / (std::string(ggml_type_name(type)) + ".gguf");
    GgufQuantizeOptions options;
    options.selection.default_type = type;
    quantize_to_gguf(*ModelSource::open(bytes_model()), path, options);
    auto quantized = LlamaModel::load(path);
    std::printf("%s: ", std::string(ggml_type_name(type)).c_str());
    expect_agreement(agreement(*quantized, tokens, 512, 8));
  }
#endif
}

// A bitsandbytes checkpoint (lowbit-bpe-50M quantized here: nf4 with double quant, fp4 without) runs
// with its 4-bit weights packed as stored (Q and K rows moved into llama.cpp's order): the fused kernel
// for a few tokens (gate and up stacked), the CPU's dequantized values in a tile for many; the
// unquantized embedding and output stay 16-bit. The weights on the GPU are measured against the same
// model with f16 activations, which keeps every weight as the CPU holds it (bf16).
TEST(CudaRuntime, BitsandbytesWeightsRunPackedAndAgreeWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  // The device takes 64 MiB a call: the 100 MB checkpoint travels in two calls (scripts/device-check.sh's header).
  if (!std::filesystem::exists(test::shared_data_dir() / "lowbit-bpe-50M" / "model.safetensors"))
    GTEST_SKIP() << "lowbit-bpe-50M did not travel with this call";
  test::TempDir dir;
  for (const bool double_quant : {true, false}) {
    const FormatId format = double_quant ? FormatId::nf4 : FormatId::fp4;
    const std::string name = fmt::format("{}{}", format_name(format), double_quant ? "+dq" : "");
    quantize_to_bnb(test::shared_data_dir() / "lowbit-bpe-50M", dir / name,
                    {.format = {.id = format, .blocksize = 64, .double_quant = double_quant}});
    EvalModel loaded(dir / name);
    LlamaModel& model = loaded.model();
    const auto packed = cuda::time_generation(model, 16, 4), as_cpu = cuda::time_generation(model, 16, 4, {.activations = DType::f16});
    std::printf("%s: weights on the GPU %.1f MB packed, %.1f MB as the CPU holds them; a decoding step reads %.1f MB, %.1f MB\n",
                name.c_str(), packed.weight_bytes / 1e6, as_cpu.weight_bytes / 1e6, packed.decode_weight_bytes / 1e6,
                as_cpu.decode_weight_bytes / 1e6);
    EXPECT_LT(double(packed.weight_bytes), 0.75 * double(as_cpu.weight_bytes)) << name;
    EXPECT_LT(double(packed.decode_weight_bytes), 0.6 * double(as_cpu.decode_weight_bytes)) << name;

    const auto tokens = text_tokens(model, "wikitext2_test_hf_nonempty_crlf.raw", 40000);
    std::printf("%s: ", name.c_str());
    expect_agreement(agreement(model, tokens, 512, 4));
    auto gpu = cuda::make_llama_runtime(model);
    expect_few_token_agreement(model, *gpu, tokens, name);
    const std::vector<int32_t> prompt(tokens.begin(), tokens.begin() + 100);
    EXPECT_EQ(cuda::generate(model, prompt, 20, {.decode_graph = true}), cuda::generate(model, prompt, 20, {.decode_graph = false}))
        << name;

    // The probe's swap: a packed weight for its dequantized bytes (up leaves the stacked layout), and back.
    const std::string up = "blk.0.ffn_up.weight";
    QuantizedMatrix dequantized;
    for (const auto& [weight, m] : model.matrices())
      if (weight == up) dequantized = m;
    ASSERT_TRUE(dequantized.packed_4bit) << name;
    dequantized.packed_4bit.reset();
    const std::vector<int32_t> few(tokens.begin(), tokens.begin() + 5);
    const auto before = gpu->forward(few, 5);
    const QuantizedMatrix previous = gpu->swap_weight(up, dequantized);
    EXPECT_TRUE(previous.packed_4bit) << name;
    EXPECT_LE(mean_kld(model, *gpu, few, 5), 1e-4) << name << ", ffn_up dequantized";
    gpu->swap_weight(up, previous);
    EXPECT_EQ(gpu->forward(few, 5), before) << name << ", ffn_up packed again";
  }
#endif
}

TEST(CudaRuntime, DefaultModelAgreesWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  // SmolLM2-135M (scripts/test.sh sets LOWBIT_DEFAULT_MODEL; on the device machine a smaller re-quantized
  // form of it travels, LOWBIT_GPU_TEST_MODEL).
  const char* path = std::getenv("LOWBIT_GPU_TEST_MODEL");
  if (!path) path = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!path) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL or LOWBIT_GPU_TEST_MODEL";
  auto model = LlamaModel::load(path);
  expect_agreement(agreement(*model, text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 40000), 512, 4));
#endif
}

TEST(CudaRuntime, ImportanceMatricesAgreeWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(bytes_model());
  auto gpu = cuda::make_llama_runtime(*model);
  const auto tokens = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 20000);
  const auto cpu_run = collect_imatrix(*model, tokens, 512, bos_of(*model));
  const auto gpu_run = collect_imatrix(*gpu, tokens, 512, bos_of(*model));
  ASSERT_EQ(cpu_run.entries.size(), gpu_run.entries.size());
  ASSERT_EQ(cpu_run.entries.size(), size_t(7 * model->config().n_layer));
  // Each entry (one weight's column sums) within 1e-3 of the CPU's, relative to its size; single columns
  // differ more (the 16-bit matmul inputs move every activation by ~0.1%), reported beside.
  double worst_entry = 0, worst_column = 0;
  for (size_t e = 0; e < cpu_run.entries.size(); ++e) {
    const auto &a = cpu_run.entries[e], &b = gpu_run.entries[e];
    ASSERT_EQ(a.name, b.name);
    EXPECT_EQ(a.counts, b.counts) << a.name;
    ASSERT_EQ(a.sums.size(), b.sums.size()) << a.name;
    const RelativeDifference d = relative_difference(a.sums, b.sums);
    worst_entry = std::max(worst_entry, d.whole);
    worst_column = std::max(worst_column, d.worst_element);
    EXPECT_LE(d.whole, 1e-3) << a.name;
  }
  std::printf("imatrix: %zu entries, largest relative difference of an entry %.3g, of a single column %.3g\n", cpu_run.entries.size(),
              worst_entry, worst_column);
#endif
}

// GPTQ's Hessians with the forward pass on the GPU (XᵀX is summed on the host either way): each input's
// matrix within 2e-3 of the CPU's, relative (Frobenius), the same rows counted.
TEST(CudaRuntime, HessiansAgreeWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(bytes_model());
  auto gpu = cuda::make_llama_runtime(*model);
  const auto tokens = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 6000);
  const auto cpu_run = collect_hessians(*model, tokens, 512, bos_of(*model));
  const auto gpu_run = collect_hessians(*gpu, tokens, 512, bos_of(*model));
  ASSERT_EQ(cpu_run.inputs.size(), gpu_run.inputs.size());
  ASSERT_GE(cpu_run.inputs.size(), size_t(4 * model->config().n_layer));  // qkv, o, gate/up, down per layer; the output
  EXPECT_EQ(cpu_run.tokens, gpu_run.tokens);
  double worst = 0;
  for (size_t i = 0; i < cpu_run.inputs.size(); ++i) {
    const auto &a = cpu_run.inputs[i], &b = gpu_run.inputs[i];
    ASSERT_EQ(a.input, b.input);
    EXPECT_EQ(a.weights, b.weights) << a.input;
    ASSERT_EQ(a.xtx.size(), b.xtx.size()) << a.input;
    const double relative = relative_difference(a.xtx, b.xtx).whole;
    worst = std::max(worst, relative);
    EXPECT_LE(relative, 2e-3) << a.input;
  }
  std::printf("hessians: %zu inputs over %llu rows, largest relative difference %.3g\n", cpu_run.inputs.size(),
              (unsigned long long)cpu_run.tokens, worst);
#endif
}

TEST(CudaRuntime, ProbedPlanChoosesTheCpuPlansFormats) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(bytes_model());
  const auto tokens = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 20000);
  auto plan_with = [&](LlamaRuntime& runtime) {
    KldProbe probe(runtime, tokens, 512, bos_of(*model), 2);
    PlanOptions options{.target_bpw = 4.5, .probe = &probe};
    return make_plan(*ModelSource::open(bytes_model()), options);
  };
  const Plan cpu_plan = plan_with(*model);
  auto agreeing = [&](const Plan& gpu_plan) {
    EXPECT_EQ(cpu_plan.tensors.size(), gpu_plan.tensors.size());
    int same = 0, quantized = 0;
    for (size_t i = 0; i < cpu_plan.tensors.size(); ++i) {
      if (!cpu_plan.tensors[i].quantized) continue;
      ++quantized;
      same += cpu_plan.tensors[i].format == gpu_plan.tensors[i].format;
    }
    return std::pair{same, quantized};
  };
  // The probe's losses are small KL-divergences, and candidates of nearly equal loss swap places under
  // the 16-bit rounding of the matmul inputs: f16's three more bits of mantissa are what the planner's
  // GPU probe uses (cuda::kProbeActivations).
  for (const DType activations : {DType::bf16, cuda::kProbeActivations}) {
    auto gpu = cuda::make_llama_runtime(*model, {.activations = activations});
    const auto [same, quantized] = agreeing(plan_with(*gpu));
    std::printf("probed plan, %s activations: %d of %d tensors in the CPU plan's format (%.1f%%)\n", dtype_name(activations).data(), same,
                quantized, 100.0 * same / quantized);
    if (activations == cuda::kProbeActivations) {
      EXPECT_GE(double(same), 0.95 * quantized);
    }
  }
#endif
}

TEST(CudaRuntime, GreedyDecodingThroughTheCacheFollowsTheFullForwardPass) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  auto model = LlamaModel::load(test::shared_data_dir() / "stories260K.gguf");
  // The published sample of stories260K: greedy decoding from BOS.
  const auto tokenizer = Tokenizer::from_gguf_metadata(model->weights().metadata());
  const int32_t bos = tokenizer.bos_id().value();
  const auto generated = cuda::generate(*model, {bos}, 40);
  std::vector<int32_t> expected{bos};
  for (int i = 0; i < 40; ++i) {
    const auto logits = model->forward(expected);
    const float* last = logits.data() + logits.size() - size_t(model->config().n_vocab);
    expected.push_back(int32_t(std::max_element(last, last + model->config().n_vocab) - last));
  }
  EXPECT_EQ(generated, std::vector<int32_t>(expected.begin() + 1, expected.end()));
  EXPECT_NE(tokenizer.decode(generated).find("Once upon a time, there was a little girl"), std::string::npos) << tokenizer.decode(generated);
#endif
}

// Decoding replays a CUDA graph of each step, the position read on the device and attention launched
// over the cache's whole capacity: the same greedy tokens as the steps launched one by one, across
// several 64-key splits, in bf16 and through the fused q4_K product.
TEST(CudaRuntime, DecodingGraphsGiveTheStepsLaunchedOneByOne) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  test::TempDir dir;
  GgufQuantizeOptions options;
  options.selection.default_type = GgmlType::Q4_K;
  quantize_to_gguf(*ModelSource::open(bytes_model()), dir / "q4_K.gguf", options);
  for (const auto& path : {bytes_model(), dir / "q4_K.gguf"}) {
    auto model = LlamaModel::load(path);
    const auto text = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 4000);
    const std::vector<int32_t> prompt(text.begin(), text.begin() + 300);
    const auto by_graph = cuda::generate(*model, prompt, 100, {.decode_graph = true});
    const auto one_by_one = cuda::generate(*model, prompt, 100, {.decode_graph = false});
    EXPECT_EQ(by_graph, one_by_one) << path;
  }
#endif
}

// Mixtures of experts: lowbit-bytes-12M upcycled to 4 experts (Mixtral's layout; f16 experts, then
// quantized to q4_K) on text, with importance matrices counted per expert; and the tiny Qwen2-MoE
// (shared expert and its sigmoid gate) on fixed tokens. The GPU routes from its own router logits, so
// a near-tie may send a token elsewhere than the CPU: the counts agree to within a few routings.
TEST(CudaRuntime, MixtureOfExpertsAgreesWithTheCpu) {
  SKIP_WITHOUT_GPU();
#ifdef LOWBIT_HAVE_CUDA
  test::TempDir dir;
  test::write_upcycled_moe(bytes_model(), dir / "moe.gguf", "llama");
  auto model = LlamaModel::load(dir / "moe.gguf");
  const auto tokens = text_tokens(*model, "wikitext2_test_hf_nonempty_crlf.raw", 40000);
  std::printf("upcycled 12M, f16 experts: ");
  expect_agreement(agreement(*model, tokens, 512, 4));
  GgufQuantizeOptions options;
  options.selection.default_type = GgmlType::Q4_K;
  quantize_to_gguf(*ModelSource::open(dir / "moe.gguf"), dir / "q4_K.gguf", options);
  auto quantized = LlamaModel::load(dir / "q4_K.gguf");
  std::printf("upcycled 12M, q4_K: ");
  expect_agreement(agreement(*quantized, tokens, 512, 4));

  const std::vector<int32_t> some(tokens.begin(), tokens.begin() + 4 * 512);
  const auto gpu = cuda::make_llama_runtime(*model);
  const auto on_cpu = collect_imatrix(*model, some, 512, bos_of(*model)), on_gpu = collect_imatrix(*gpu, some, 512, bos_of(*model));
  ASSERT_EQ(on_cpu.entries.size(), on_gpu.entries.size());
  double moved = 0, routed = 0;
  for (size_t i = 0; i < on_cpu.entries.size(); ++i) {
    const auto &a = on_cpu.entries[i], &b = on_gpu.entries[i];
    ASSERT_EQ(a.name, b.name);
    ASSERT_EQ(a.counts.size(), b.counts.size()) << a.name;
    if (a.experts() == 1) EXPECT_EQ(a.counts, b.counts) << a.name;
    else
      for (size_t e = 0; e < a.counts.size(); ++e) moved += std::abs(a.counts[e] - b.counts[e]) / 2, routed += a.counts[e];
  }
  std::printf("imatrix: %zu entries, %.0f of %.0f expert routings differ between cpu and gpu\n", on_cpu.entries.size(), moved, routed);
  EXPECT_GT(routed, 0);
  EXPECT_LE(moved, 0.005 * routed);

  test::write_tiny_moe_gguf(dir / "tiny.gguf", {.style = test::MoeStyle::qwen2_moe});
  auto tiny = LlamaModel::load(dir / "tiny.gguf");
  std::vector<int32_t> ids(64);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t((i * 37 + 11) % 64);
  const auto cpu_logits = tiny->forward(ids, 2), gpu_logits = cuda::make_llama_runtime(*tiny)->forward(ids, 2);
  double worst = 0, scale = 0;
  for (size_t i = 0; i < cpu_logits.size(); ++i)
    worst = std::max(worst, double(std::abs(cpu_logits[i] - gpu_logits[i]))), scale = std::max(scale, double(std::abs(cpu_logits[i])));
  std::printf("tiny Qwen2-MoE: largest |logit difference| %.3g of logits up to %.3g\n", worst, scale);
  EXPECT_LE(worst, 1e-2 * scale);
#endif
}

}  // namespace
}  // namespace lowbit
