// What lowbit writes, read by llama.cpp's own tools (scripts/llama-cpp-tools.sh builds llama-perplexity
// and llama-quantize from the tree llama-cpp-python 0.3.36 vendors; scripts/test.sh points
// LOWBIT_LLAMA_CPP_BIN at them):
//   - GGUFs lowbit quantizes or dequantizes, and one it converts from a Hugging Face directory:
//     llama-perplexity loads each, its perplexity is lowbit eval's, and its log-probabilities agree with
//     the ones lowbit saved (llama-perplexity --kl-divergence against lowbit's --save-logits file);
//   - importance matrices lowbit collects, in the legacy .dat form and in GGUF: llama-quantize reads
//     both and writes, tensor for tensor, the bytes `lowbit quantize --imatrix` writes.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "lowbit/io/gguf.h"
#include "support/llama_cpp.h"
#include "support/paths.h"
#include "support/python.h"
#include "support/upcycled_moe.h"

namespace lowbit {
namespace {

#define REQUIRE_LLAMA_CPP()                                                                                      \
  if (test::llama_cpp_bin().empty() || !std::filesystem::exists(test::llama_cpp_bin() / "llama-perplexity")) {  \
    if (std::getenv("LOWBIT_REQUIRE_INTEROP")) FAIL() << "LOWBIT_LLAMA_CPP_BIN does not hold llama.cpp's tools"; \
    GTEST_SKIP() << "set LOWBIT_LLAMA_CPP_BIN to llama.cpp's tools (scripts/llama-cpp-tools.sh builds them)";    \
  }

std::string run(const std::string& command) {
  int status = 0;
  const std::string out = test::run_command(command + " 2>&1", &status);
  EXPECT_EQ(status, 0) << command << "\n" << out;
  return out;
}

std::string lowbit(const std::string& args) { return run(std::string(LOWBIT_CLI_PATH) + " " + args); }

// One of llama.cpp's tools, which must succeed and print `expected` (the files it writes are checked
// instead where that is empty).
std::string run_llama_tool(const std::string& command, const std::string& expected = "") {
  int status = 0;
  const std::string out = test::run_llama_cpp_tool(command, expected, &status);
  EXPECT_EQ(status, 0) << command << "\n" << out;
  return out;
}

double number_after(const std::string& text, const std::string& pattern) {
  std::smatch m;
  if (!std::regex_search(text, m, std::regex(pattern + R"(\s*([-0-9.eE+]+))"))) {
    ADD_FAILURE() << "no '" << pattern << "' in:\n" << text;
    return NAN;
  }
  return std::stod(m[1]);
}

const std::filesystem::path kModel = test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf";
constexpr int kCtx = 128, kChunks = 4;

// The first 16 kB of a shared text: enough windows, and llama-perplexity tokenizes the whole file first
// (minutes for the 800 kB original with this byte vocabulary).
std::filesystem::path calibration_text(const test::TempDir& dir) {
  const auto path = dir / "text.txt";
  if (!std::filesystem::exists(path)) {
    std::ifstream in(test::shared_data_dir() / "tinystories_valid_first1000.txt", std::ios::binary);
    std::string text(16000, '\0');
    in.read(text.data(), std::streamsize(text.size()));
    text.resize(size_t(in.gcount()));
    std::ofstream(path, std::ios::binary) << text;
  }
  return path;
}

struct Agreement {
  double lowbit_ppl, llama_ppl, mean_kld, same_top;
};

// lowbit eval (saving its log-probabilities) and llama-perplexity on the same file and text.
Agreement measure(const std::filesystem::path& model, const test::TempDir& dir) {
  const auto text = calibration_text(dir);
  const auto logits = dir / (model.stem().string() + ".logits");
  const std::string eval = lowbit(fmt::format("eval {} --text {} --ctx {} --chunks {} --save-logits {} --json --quiet", model.string(),
                                              text.string(), kCtx, kChunks, logits.string()));
  const auto j = nlohmann::json::parse(eval.substr(std::min(eval.find('{'), eval.size())));
  const std::string perplexity = (test::llama_cpp_bin() / "llama-perplexity").string();
  const std::string ppl = run_llama_tool(fmt::format("{} -m {} -f {} -c {} -b {} --chunks {} -t 2", perplexity, model.string(), text.string(), kCtx, kCtx, kChunks),
                                         "Final estimate: PPL =");
  const std::string kld = run_llama_tool(fmt::format("{} -m {} --kl-divergence-base {} --kl-divergence -c {} -b {} -t 2", perplexity, model.string(),
                                          logits.string(), kCtx, kCtx),
                                         "Same top p:");
  return {j["ppl"].get<double>(), number_after(ppl, R"(Final estimate: PPL =)"), number_after(kld, R"(Mean    KLD:)"),
          number_after(kld, R"(Same top p:)") / 100};
}

struct Output {
  std::string name, command;  // the lowbit command writing {out} from {in}
  double ppl_tolerance, kld_bound;
};

class LlamaCppReadsLowbitGguf : public testing::TestWithParam<Output> {};

// Tolerances: f16 weights compute the same function in both (llama.cpp keeps K/V in f16); with
// quantized weights llama.cpp's CPU kernels also round the activations to 8 bits inside every dot
// product (q8_K / q8_0) while lowbit multiplies in float32, which moves perplexity by a few tenths of a
// percent on this model.
TEST_P(LlamaCppReadsLowbitGguf, PerplexityAndLogProbabilitiesAgree) {
  REQUIRE_LLAMA_CPP();
  test::TempDir dir;
  const Output& o = GetParam();
  const auto out = dir / (o.name + ".gguf");
  lowbit(fmt::format(fmt::runtime(o.command), fmt::arg("in", kModel.string()), fmt::arg("out", out.string()),
                     fmt::arg("data", test::shared_data_dir().string())));
  const Agreement a = measure(out, dir);
  std::cout << fmt::format("[ llama.cpp ] {}: perplexity lowbit {:.4f}, llama.cpp {:.4f}; mean KLD {:.6f}, same top token {:.2f}%\n", o.name,
                           a.lowbit_ppl, a.llama_ppl, a.mean_kld, 100 * a.same_top);
  EXPECT_NEAR(a.lowbit_ppl, a.llama_ppl, o.ppl_tolerance * a.llama_ppl) << o.name;
  EXPECT_LE(a.mean_kld, o.kld_bound) << o.name;
  EXPECT_GE(a.same_top, 0.95) << o.name;
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, LlamaCppReadsLowbitGguf,
                         testing::Values(Output{"f16", "dequantize {in} -o {out} --dtype f16 --quiet", 0.001, 1e-4},
                                         Output{"q8_0", "quantize {in} -o {out} --format q8_0 --quiet", 0.005, 2e-3},
                                         Output{"Q4_K_M", "quantize {in} -o {out} --mix Q4_K_M --quiet", 0.01, 5e-3},
                                         Output{"Q2_K", "quantize {in} -o {out} --mix Q2_K --quiet", 0.02, 1e-2},
                                         Output{"iq4_xs", "quantize {in} -o {out} --format iq4_xs --quiet", 0.01, 5e-3},
                                         // GPTQ's codes (Hessians from 4 windows of WikiText-2) in llama.cpp's own mix
                                         Output{"Q3_K_M_gptq",
                                                "quantize {in} -o {out} --mix Q3_K_M --gptq-text {data}/wikitext2_test_hf_nonempty_crlf.raw "
                                                "--gptq-chunks 4 --quiet",
                                                0.01, 5e-3}),
                         [](const testing::TestParamInfo<Output>& p) { return p.param.name; });

// lowbit-bpe-50M as transformers 5.17 saved it (rope_parameters, no rope_theta), converted by lowbit:
// llama.cpp runs it as lowbit does.
TEST(LlamaCppReadsLowbitGguf, ConvertedHuggingFaceCheckpointRunsAsInLowbit) {
  REQUIRE_LLAMA_CPP();
  test::TempDir dir;
  const auto out = dir / "bpe50m-q8_0.gguf";
  lowbit(fmt::format("quantize {} -o {} --format q8_0 --quiet", (test::shared_data_dir() / "lowbit-bpe-50M").string(), out.string()));
  const Agreement a = measure(out, dir);
  std::cout << fmt::format("[ llama.cpp ] lowbit-bpe-50M q8_0: perplexity lowbit {:.4f}, llama.cpp {:.4f}; mean KLD {:.6f}, same top token {:.2f}%\n",
                           a.lowbit_ppl, a.llama_ppl, a.mean_kld, 100 * a.same_top);
  EXPECT_NEAR(a.lowbit_ppl, a.llama_ppl, 0.005 * a.llama_ppl);
  EXPECT_LE(a.mean_kld, 2e-3);
  EXPECT_GE(a.same_top, 0.95);
}

// lowbit-bytes-12M upcycled into 4 experts of which each token uses 2, as Mixtral ("llama" with
// experts) and as Qwen3-MoE: llama.cpp's MoE graph (softmax gating, top-k, renormalised weights, f16
// experts) computes what lowbit's runtime does.
class LlamaCppRunsLowbitsMixtures : public testing::TestWithParam<std::string> {};

TEST_P(LlamaCppRunsLowbitsMixtures, PerplexityAndLogProbabilitiesAgree) {
  REQUIRE_LLAMA_CPP();
  test::TempDir dir;
  const auto model = dir / (GetParam() + "-moe.gguf");
  test::write_upcycled_moe(kModel, model, GetParam());
  const Agreement a = measure(model, dir);
  std::cout << fmt::format("[ llama.cpp ] 12M upcycled to 4 experts ({}): perplexity lowbit {:.4f}, llama.cpp {:.4f}; mean KLD {:.6f}, "
                           "same top token {:.2f}%\n", GetParam(), a.lowbit_ppl, a.llama_ppl, a.mean_kld, 100 * a.same_top);
  EXPECT_NEAR(a.lowbit_ppl, a.llama_ppl, 0.002 * a.llama_ppl);
  EXPECT_LE(a.mean_kld, 5e-4);
  EXPECT_GE(a.same_top, 0.98);
}

INSTANTIATE_TEST_SUITE_P(LlamaCpp, LlamaCppRunsLowbitsMixtures, testing::Values("llama", "qwen3moe"),
                         [](const testing::TestParamInfo<std::string>& p) { return p.param == "llama" ? "Mixtral" : "Qwen3Moe"; });

// Tensor by tensor: type and bytes.
void expect_same_tensors(const std::filesystem::path& lowbit_file, const std::filesystem::path& llama_file) {
  const gguf::File ours(lowbit_file), theirs(llama_file);
  ASSERT_EQ(ours.tensors().size(), theirs.tensors().size());
  int identical = 0;
  for (const auto& t : theirs.tensors()) {
    const auto* mine = ours.find_tensor(t.name);
    ASSERT_NE(mine, nullptr) << t.name;
    EXPECT_EQ(ggml_type_name(mine->type), ggml_type_name(t.type)) << t.name;
    const auto a = ours.data(*mine), b = theirs.data(t);
    const bool same = a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
    EXPECT_TRUE(same) << t.name << " (" << ggml_type_name(t.type) << ") differs from llama-quantize's";
    identical += same;
  }
  std::cout << fmt::format("[ llama.cpp ] {}: {} of {} tensors identical to llama-quantize's\n", lowbit_file.filename().string(), identical,
                           theirs.tensors().size());
}

TEST(LlamaCppQuantize, ReadsLowbitsImportanceMatricesInBothForms) {
  REQUIRE_LLAMA_CPP();
  test::TempDir dir;
  const auto text = calibration_text(dir);
  for (const char* form : {"dat", "gguf"}) {
    const auto imatrix = dir / fmt::format("imatrix.{}", form);
    lowbit(fmt::format("imatrix {} --text {} --ctx {} --chunks {} -o {} --quiet", kModel.string(), text.string(), kCtx, kChunks, imatrix.string()));
    for (const char* mix : {"Q4_K_M", "IQ4_XS"}) {
      const auto ours = dir / fmt::format("lowbit-{}-{}.gguf", mix, form), theirs = dir / fmt::format("llama-{}-{}.gguf", mix, form);
      lowbit(fmt::format("quantize {} -o {} --mix {} --imatrix {} --quiet", kModel.string(), ours.string(), mix, imatrix.string()));
      run_llama_tool(fmt::format("{} --imatrix {} {} {} {} 2", (test::llama_cpp_bin() / "llama-quantize").string(), imatrix.string(), kModel.string(), theirs.string(), mix));
      expect_same_tensors(ours, theirs);
    }
  }
}

// On the upcycled Mixtral: llama-imatrix and lowbit imatrix route the same tokens to the same experts
// (the counts per expert agree but for the odd near-tie that float summation order decides) and sum the
// same squares; llama-quantize reads lowbit's per-expert matrix and writes the bytes lowbit quantize
// writes with it.
TEST(LlamaCppImatrix, CountsEachExpertsTokensAsLowbitDoes) {
  REQUIRE_LLAMA_CPP();
  test::TempDir dir;
  const auto text = calibration_text(dir), model = dir / "moe.gguf", ours = dir / "lowbit.imatrix", theirs = dir / "llama.imatrix";
  test::write_upcycled_moe(kModel, model, "llama");
  lowbit(fmt::format("imatrix {} --text {} --ctx {} --chunks {} -o {} --quiet", model.string(), text.string(), kCtx, kChunks, ours.string()));
  run_llama_tool(fmt::format("{} -m {} -f {} -c {} -b {} --chunks {} -o {} --no-ppl -t 2", (test::llama_cpp_bin() / "llama-imatrix").string(), model.string(),
                  text.string(), kCtx, kCtx, kChunks, theirs.string()));
  const gguf::File a(ours), b(theirs);
  int expert_entries = 0;
  // Routings (token → expert) counted for another expert; the largest relative L2 difference of a
  // tensor's sums, for weights every token reaches and for stacked experts (where a moved token counts).
  double moved = 0, routed = 0, worst_sums = 0, worst_expert_sums = 0;
  for (const auto& t : a.tensors()) {
    const auto* u = b.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name << " is not in llama-imatrix's file";
    ASSERT_EQ(shape_to_string(t.ne), shape_to_string(u->ne)) << t.name;
    const auto* x = reinterpret_cast<const float*>(a.data(t).data());
    const auto* y = reinterpret_cast<const float*>(b.data(*u).data());
    double diff = 0, norm = 0;
    for (int64_t i = 0; i < t.elements(); ++i) diff += (double(x[i]) - y[i]) * (double(x[i]) - y[i]), norm += double(y[i]) * y[i];
    if (t.name.ends_with(".counts")) {
      const bool experts = t.name.find("_exps") != std::string::npos;
      expert_entries += experts;
      for (int64_t i = 0; i < t.elements(); ++i) {
        if (!experts) {
          EXPECT_EQ(x[i], y[i]) << t.name;  // every token
        }
        if (experts) moved += std::abs(double(x[i]) - y[i]) / 2, routed += y[i];
      }
    } else {
      double& worst = t.name.find("_exps") != std::string::npos ? worst_expert_sums : worst_sums;
      worst = std::max(worst, std::sqrt(diff / norm));
    }
  }
  std::cout << fmt::format("[ llama.cpp ] imatrix of the upcycled Mixtral: {} tensors, {} per-expert entries; {} of {} routings differ; "
                           "largest relative L2 difference of a tensor's sums {:.2e}, of an expert tensor's {:.2e}\n",
                           a.tensors().size(), expert_entries, moved, routed, worst_sums, worst_expert_sums);
  EXPECT_LE(moved, 0.005 * routed);
  EXPECT_LE(worst_sums, 5e-3);  // llama.cpp keeps keys and values in f16
  EXPECT_LE(worst_expert_sums, 0.1);
  EXPECT_EQ(a.tensors().size(), b.tensors().size());
  EXPECT_GT(expert_entries, 0);
  const auto q_ours = dir / "lowbit-q4km.gguf", q_theirs = dir / "llama-q4km.gguf";
  lowbit(fmt::format("quantize {} -o {} --mix Q4_K_M --imatrix {} --quiet", model.string(), q_ours.string(), ours.string()));
  run_llama_tool(fmt::format("{} --imatrix {} {} {} Q4_K_M 2", (test::llama_cpp_bin() / "llama-quantize").string(), ours.string(), model.string(), q_theirs.string()));
  expect_same_tensors(q_ours, q_theirs);
}

}  // namespace
}  // namespace lowbit
