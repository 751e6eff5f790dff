// lowbit hessian and quantize --gptq from the command line: the Hessian file, GPTQ bytes that the
// standard dequantizer reads and that differ from plain rounding, and the refusals (a Hessian that
// misses a weight or has other columns, a bitsandbytes output, an output that is an input).
#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <filesystem>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

#include "lowbit/io/gguf.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "support/paths.h"

namespace lowbit {
namespace {

struct Run {
  int status;
  std::string out;
};

Run run_cli(const std::string& args, const std::string& environment = "") {
  const std::string cmd = (environment.empty() ? "" : environment + " ") + std::string(LOWBIT_CLI_PATH) + " " + args + " 2>&1";
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), out};
}

const std::string kModel = (test::shared_data_dir() / "stories260K.gguf").string();
const std::string kText = (test::shared_data_dir() / "tinystories_valid_first1000.txt").string();
// Rows of 512 and 1536: every k-quant and i-quant tiles them.
const std::string kModel12M = (test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf").string();

class GptqCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new test::TempDir;
    const auto r = run_cli("hessian " + kModel + " --text " + kText + " --ctx 64 --chunks 3 --json -o " + hessian());
    ASSERT_EQ(r.status, 0) << r.out;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["tokens"], 192);
    EXPECT_EQ(j["inputs"], 5 * 4 + 1);
    EXPECT_EQ(j["weights"], 5 * 7 + 1);
  }
  static void TearDownTestSuite() { delete dir_; }
  static std::string hessian() { return (dir_->path() / "h.gguf").string(); }
  static std::string path(const char* name) { return (dir_->path() / name).string(); }
  // The 12M model's Hessians over one window of 64 tokens, collected on first use.
  static std::string hessian12() {
    const std::string h = path("h12.gguf");
    if (!std::filesystem::exists(h)) {
      const auto r = run_cli("hessian " + kModel12M + " --text " + kText + " --ctx 64 --chunks 1 --quiet -o " + h);
      EXPECT_EQ(r.status, 0) << r.out;
    }
    return h;
  }
  static test::TempDir* dir_;
};
test::TempDir* GptqCli::dir_ = nullptr;

TEST_F(GptqCli, QuantizesWithErrorFeedbackIntoTheFormatsBytes) {
  const auto r = run_cli("quantize " + kModel + " --format q4_0 --gptq " + hessian() + " --json -o " + path("gptq.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  int gptq = 0;
  for (const auto& t : j["tensors"]) gptq += t["gptq"].get<bool>();
  EXPECT_EQ(gptq, 5 * 6 + 1);  // every 64-wide matrix of the layers and the output; ffn_down (172 wide) is not q4_0
  ASSERT_EQ(run_cli("quantize " + kModel + " --format q4_0 --quiet -o " + path("plain.gguf")).status, 0);
  const gguf::File a(path("gptq.gguf")), b(path("plain.gguf"));
  const auto* qa = a.find_tensor("blk.1.attn_q.weight");
  const auto* qb = b.find_tensor("blk.1.attn_q.weight");
  ASSERT_TRUE(qa && qb);
  EXPECT_EQ(qa->type, GgmlType::Q4_0);
  EXPECT_EQ(qa->size, qb->size);
  EXPECT_NE(std::vector(a.data(*qa).begin(), a.data(*qa).end()), std::vector(b.data(*qb).begin(), b.data(*qb).end()));
  EXPECT_NE(a.find("quantize.gptq.hessian.file"), nullptr);
  // The standard reader evaluates it.
  EXPECT_EQ(run_cli("eval " + path("gptq.gguf") + " --text " + kText + " --ctx 64 --chunks 2 --quiet").status, 0);
}

// q2_0 has none: GPTQ lost to rounding on it.
TEST_F(GptqCli, NotesTypesWithoutAGptqPath) {
  const auto r = run_cli("quantize " + kModel12M + " --format q2_0 --gptq " + hessian12() + " -o " + path("q2_0.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("note: GPTQ has no path for q2_0"), std::string::npos) << r.out;
}

// A tensor's bytes in a GGUF file.
std::vector<std::byte> tensor_bytes(const std::string& file, const char* tensor) {
  const gguf::File f(file);
  const auto* t = f.find_tensor(tensor);
  EXPECT_NE(t, nullptr) << tensor << " in " << file;
  return t ? std::vector<std::byte>(f.data(*t).begin(), f.data(*t).end()) : std::vector<std::byte>{};
}

// The report's entry for a tensor of `quantize --json --quiet` (--quiet: no notes before the document).
nlohmann::json reported(const std::string& json, const std::string& tensor) {
  const auto report = nlohmann::json::parse(json);
  for (const auto& t : report["tensors"])
    if (t["name"] == tensor) return t;
  ADD_FAILURE() << tensor << " is not in the report";
  return {};
}

// Three of the types ggml quantizes only with importance weights; the rest of the 12M model in q2_0,
// which GPTQ leaves to rounding, so that only these three are swept.
const std::string kIquants =
    " --format q2_0 --tensor-type output.weight=iq2_xxs --tensor-type blk.0.attn_q.weight=iq2_xs --tensor-type blk.0.attn_k.weight=iq1_s";

// The types ggml quantizes only with importance weights (iq2_xxs, iq2_xs, iq1_s) need no --imatrix with
// --gptq: the Hessian's diagonal over the token count is the importance matrix of its text. An
// importance matrix of the same window gives the very same bytes; one of another text still weighs the
// tensors it has entries for.
TEST_F(GptqCli, TakesImportanceWeightsFromTheHessiansDiagonal) {
  auto r = run_cli("quantize " + kModel12M + kIquants + " --gptq " + hessian12() + " --json --quiet -o " + path("iq-hessian.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  for (const char* t : {"output.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight"}) {
    EXPECT_TRUE(reported(r.out, t)["gptq"].get<bool>()) << t;
    EXPECT_FALSE(reported(r.out, t)["imatrix"].get<bool>()) << t;
  }
  const std::string wiki = (test::shared_data_dir() / "wikitext2_test_hf_nonempty_crlf.raw").string();
  ASSERT_EQ(run_cli("imatrix " + kModel12M + " --text " + kText + " --ctx 64 --chunks 1 --quiet -o " + path("im-same.gguf")).status, 0);
  ASSERT_EQ(run_cli("imatrix " + kModel12M + " --text " + wiki + " --ctx 64 --chunks 1 --quiet -o " + path("im-wiki.gguf")).status, 0);
  r = run_cli("quantize " + kModel12M + kIquants + " --imatrix " + path("im-same.gguf") + " --gptq " + hessian12() + " --quiet -o " +
              path("iq-same.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  r = run_cli("quantize " + kModel12M + kIquants + " --imatrix " + path("im-wiki.gguf") + " --gptq " + hessian12() + " --json --quiet -o " +
              path("iq-wiki.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(reported(r.out, "blk.0.attn_q.weight")["imatrix"].get<bool>());
  for (const char* t : {"blk.0.attn_q.weight", "blk.0.attn_k.weight"}) {
    const auto from_hessian = tensor_bytes(path("iq-hessian.gguf"), t);
    EXPECT_EQ(from_hessian, tensor_bytes(path("iq-same.gguf"), t)) << t;
    EXPECT_NE(from_hessian, tensor_bytes(path("iq-wiki.gguf"), t)) << t;
  }
  // The standard reader evaluates it.
  EXPECT_EQ(run_cli("eval " + path("iq-hessian.gguf") + " --text " + kText + " --ctx 64 --chunks 2 --quiet").status, 0);
}

// An importance matrix from llama-imatrix (or lowbit imatrix) has no entry for output.weight, which it
// leaves out unless asked; the Hessian file holds the output layer's input (the final norm's output).
// Without --gptq such an output.weight in iq2_xxs is refused, as llama-quantize refuses it; with --gptq
// (a file or --gptq-text) it is written by GPTQ, weighed by that input's diagonal.
TEST_F(GptqCli, WritesAnOutputLayerTheImportanceMatrixLeavesOut) {
  const std::string im = path("im-layers.gguf");
  ASSERT_EQ(run_cli("imatrix " + kModel12M + " --text " + kText + " --ctx 64 --chunks 1 --quiet -o " + im).status, 0);
  const ImportanceMatrix importance = ImportanceMatrix::load(im);
  ASSERT_NE(importance.find("blk.0.attn_q.weight"), nullptr);
  ASSERT_EQ(importance.find("output.weight"), nullptr);
  ASSERT_NE(HessianFile(hessian12()).find("output.weight"), nullptr);

  auto r = run_cli("quantize " + kModel12M + kIquants + " --imatrix " + im + " -o " + path("out-refused.gguf"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("'output.weight': iq2_xxs needs importance weights"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("out-refused.gguf")));

  r = run_cli("quantize " + kModel12M + kIquants + " --imatrix " + im + " --gptq " + hessian12() + " --json --quiet -o " + path("out-gptq.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(reported(r.out, "output.weight")["gptq"].get<bool>());
  EXPECT_FALSE(reported(r.out, "output.weight")["imatrix"].get<bool>());
  EXPECT_TRUE(reported(r.out, "blk.0.attn_q.weight")["imatrix"].get<bool>());
  EXPECT_EQ(gguf::File(path("out-gptq.gguf")).find_tensor("output.weight")->type, GgmlType::IQ2_XXS);

  r = run_cli("quantize " + kModel12M + kIquants + " --imatrix " + im + " --gptq-text " + kText + " --gptq-chunks 1 --json --quiet -o " +
              path("out-gptq-text.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(reported(r.out, "output.weight")["gptq"].get<bool>());
}

// plan --gptq measures each candidate as quantize --gptq would write it and records the Hessian file;
// quantize --plan then writes the plan with it (the bytes of naming it by hand). Measured on the layer's
// output, GPTQ's error feedback favours the types it writes: q4_0's loss (GPTQ) over bf16's (rounded:
// no grid of blocks to feed errors through) is lower, on average over the tensors, than in the plain plan.
TEST_F(GptqCli, APlanWithGptqMeasuresAndWritesItsCandidatesSo) {
  auto r = run_cli("plan " + kModel + " --bpw 6 --gptq " + hessian() + " --quiet -o " + path("gptq-plan.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  ASSERT_EQ(run_cli("plan " + kModel + " --bpw 6 --quiet -o " + path("plain-plan.json")).status, 0);
  const auto planned = nlohmann::json::parse(std::ifstream(path("gptq-plan.json")));
  const auto plain = nlohmann::json::parse(std::ifstream(path("plain-plan.json")));
  EXPECT_EQ(planned["loss_measure"]["gptq"], "h.gguf");
  EXPECT_FALSE(plain["loss_measure"].contains("gptq"));
  auto q4_0_over_bf16 = [](const nlohmann::json& plan) {
    double sum = 0;
    int n = 0;
    for (const auto& t : plan["tensors"])
      if (t.contains("losses") && t["losses"].contains("q4_0") && t["losses"].contains("bf16") && t["losses"]["bf16"].get<double>() > 0)
        sum += t["losses"]["q4_0"].get<double>() / t["losses"]["bf16"].get<double>(), ++n;
    EXPECT_GT(n, 0);
    return sum / std::max(n, 1);
  };
  EXPECT_LT(q4_0_over_bf16(planned), q4_0_over_bf16(plain));

  r = run_cli("quantize " + kModel + " --plan " + path("gptq-plan.json") + " -o " + path("by-plan.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("with its Hessian file"), std::string::npos) << r.out;
  r = run_cli("quantize " + kModel + " --plan " + path("gptq-plan.json") + " --gptq " + hessian() + " --quiet -o " + path("by-hand.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  std::ifstream a(path("by-plan.gguf"), std::ios::binary), b(path("by-hand.gguf"), std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b), {}));
  EXPECT_NE(gguf::File(path("by-plan.gguf")).find("quantize.gptq.hessian.file"), nullptr);
}

// --gptq-text collects the Hessians inside quantize and plan: the tensors lowbit hessian --ctx 512 and
// --gptq would give, the scratch file gone afterwards; a plan keeps them beside itself for quantize --plan.
TEST_F(GptqCli, CollectsItsHessiansFromATextInsideQuantizeAndPlan) {
  const std::string h512 = path("h512.gguf");
  ASSERT_EQ(run_cli("hessian " + kModel + " --text " + kText + " --ctx 512 --chunks 3 --quiet -o " + h512).status, 0);
  ASSERT_EQ(run_cli("quantize " + kModel + " --format q4_0 --gptq " + h512 + " --quiet -o " + path("named.gguf")).status, 0);
  const std::filesystem::path tmp = dir_->path() / "tmp";
  std::filesystem::create_directories(tmp);
  auto r = run_cli("quantize " + kModel + " --format q4_0 --gptq-text " + kText + " --gptq-chunks 3 --quiet -o " + path("collected.gguf"),
                   "TMPDIR=" + tmp.string());
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_TRUE(std::filesystem::is_empty(tmp));  // the scratch Hessians are gone
  const gguf::File named(path("named.gguf")), collected(path("collected.gguf"));
  ASSERT_EQ(named.tensors().size(), collected.tensors().size());
  for (const auto& t : named.tensors()) {
    const auto* c = collected.find_tensor(t.name);
    ASSERT_TRUE(c) << t.name;
    EXPECT_TRUE(std::ranges::equal(named.data(t), collected.data(*c))) << t.name;
  }
  const auto* label = collected.find("quantize.gptq.hessian.file");
  ASSERT_NE(label, nullptr);
  ASSERT_NE(label->get_if<std::string>(), nullptr);
  EXPECT_EQ(*label->get_if<std::string>(), "collected on tinystories_valid_first1000.txt");

  r = run_cli("plan " + kModel + " --bpw 6 --gptq-text " + kText + " --gptq-chunks 3 -o " + path("collecting-plan.json"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("collecting-plan.hessian.gguf"), std::string::npos) << r.out;
  ASSERT_EQ(run_cli("plan " + kModel + " --bpw 6 --gptq " + h512 + " --quiet -o " + path("named-plan.json")).status, 0);
  const auto collecting = nlohmann::json::parse(std::ifstream(path("collecting-plan.json")));
  const auto named_plan = nlohmann::json::parse(std::ifstream(path("named-plan.json")));
  EXPECT_EQ(collecting["loss_measure"]["gptq"], "collecting-plan.hessian.gguf");
  ASSERT_EQ(collecting["tensors"].size(), named_plan["tensors"].size());
  for (size_t i = 0; i < collecting["tensors"].size(); ++i)
    EXPECT_EQ(collecting["tensors"][i]["format"], named_plan["tensors"][i]["format"]) << collecting["tensors"][i]["name"];
  EXPECT_EQ(HessianFile(path("collecting-plan.hessian.gguf")).tokens(), HessianFile(h512).tokens());
  r = run_cli("quantize " + kModel + " --plan " + path("collecting-plan.json") + " -o " + path("by-collecting-plan.gguf"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_NE(r.out.find("with its Hessian file"), std::string::npos) << r.out;

  r = run_cli("quantize " + kModel + " --format q4_0 --gptq " + h512 + " --gptq-text " + kText + " -o " + path("both.gguf"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not both"), std::string::npos) << r.out;
}

// A bitsandbytes checkpoint written with GPTQ: its nf4 weights whose 64-value blocks lie within rows
// (all but ffn_down's 172 columns) get GPTQ's codes, found in the Hessian file by their llama.cpp names;
// the checkpoint reads back; int8 rows are all written so; a Hessian of another model is refused.
TEST_F(GptqCli, WritesBitsandbytesCheckpointsWithGptq) {
  const std::string hf = path("hf");  // the model as a Hugging Face directory (weights only are read)
  ASSERT_EQ(run_cli("dequantize " + kModel + " -o " + hf + " --quiet").status, 0);
  auto r = run_cli("quantize " + hf + " --format nf4 --gptq " + hessian() + " --json -o " + path("nf4-gptq"));
  ASSERT_EQ(r.status, 0) << r.out;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["quantized"], 5 * 7);
  EXPECT_EQ(j["gptq"], 5 * 6);
  r = run_cli("quantize " + hf + " --format nf4 --json -o " + path("nf4-plain"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["gptq"], 0);
  auto file_text = [](const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), {});
  };
  EXPECT_NE(file_text(path("nf4-gptq") + "/model.safetensors"), file_text(path("nf4-plain") + "/model.safetensors"));
  EXPECT_EQ(run_cli("dequantize " + path("nf4-gptq") + " --quiet -o " + path("nf4-gptq-back")).status, 0);

  // A bitsandbytes plan made with GPTQ measures its 4-bit candidates as GPTQ writes them (4-bit then
  // loses less: it is chosen for more weights) and brings its Hessian file to quantize --plan.
  ASSERT_EQ(run_cli("plan " + hf + " --target bnb --bpw 14 --gptq " + hessian() + " --quiet -o " + path("bnb-gptq-plan.json")).status, 0);
  ASSERT_EQ(run_cli("plan " + hf + " --target bnb --bpw 14 --quiet -o " + path("bnb-plain-plan.json")).status, 0);
  auto four_bit = [](const nlohmann::json& plan) {
    int n = 0;
    for (const auto& t : plan["tensors"]) n += t.value("quantized", false) && t["format"] != "f32";
    return n;
  };
  const auto gptq_plan = nlohmann::json::parse(std::ifstream(path("bnb-gptq-plan.json")));
  EXPECT_EQ(gptq_plan["loss_measure"]["gptq"], "h.gguf");
  EXPECT_GT(four_bit(gptq_plan), four_bit(nlohmann::json::parse(std::ifstream(path("bnb-plain-plan.json")))));
  r = run_cli("quantize " + hf + " --plan " + path("bnb-gptq-plan.json") + " --json -o " + path("nf4-planned"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_GT(nlohmann::json::parse(r.out)["gptq"].get<int>(), 0);

  r = run_cli("quantize " + hf + " --format int8 --gptq " + hessian() + " --json -o " + path("int8-gptq"));
  ASSERT_EQ(r.status, 0) << r.out;
  EXPECT_EQ(nlohmann::json::parse(r.out)["gptq"], 5 * 7);  // int8 rows need no whole blocks
  HessianSums q{"blk.0.attn_qkv", {"blk.0.attn_q.weight"}, 64, std::vector<float>(64 * 64, 0.0f)};
  for (int i = 0; i < 64; ++i) q.xtx[size_t(i * 65)] = 1;
  write_hessians(path("partial-bnb.gguf"), {q}, {"x"}, 1, 64, 64);
  r = run_cli("quantize " + hf + " --format fp4 --gptq " + path("partial-bnb.gguf") + " -o " + path("fp4-partial"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("has no input for this weight"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("fp4-partial")));
}

TEST_F(GptqCli, RefusesAHessianThatMissesAWeightOrHasOtherColumns) {
  HessianSums q{"blk.0.attn_qkv", {"blk.0.attn_q.weight"}, 64, std::vector<float>(64 * 64, 0.0f)};
  for (int i = 0; i < 64; ++i) q.xtx[size_t(i * 65)] = 1;
  write_hessians(path("partial.gguf"), {q}, {"x"}, 1, 64, 64);
  auto r = run_cli("quantize " + kModel + " --format q8_0 --gptq " + path("partial.gguf") + " -o " + path("out1.gguf"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("has no input for this weight"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("blk.0.attn_k.weight"), std::string::npos) << r.out;

  // Every weight's input, but 32 columns wide where the model's rows hold 64 (or 172).
  HessianSums narrow{"narrow", {"output.weight"}, 32, std::vector<float>(32 * 32, 0.0f)};
  for (int l = 0; l < 5; ++l)
    for (const char* w : {"attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"})
      narrow.weights.push_back("blk." + std::to_string(l) + "." + w + ".weight");
  write_hessians(path("narrow.gguf"), {narrow}, {"x"}, 1, 64, 64);
  r = run_cli("quantize " + kModel + " --format q8_0 --gptq " + path("narrow.gguf") + " -o " + path("out2.gguf"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("its input narrow has 32 columns"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(path("out1.gguf")) || std::filesystem::exists(path("out2.gguf")));

  r = run_cli("quantize " + kModel + " --format q8_0 --gptq " + kModel + " -o " + path("out3.gguf"));
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("not a Hessian file"), std::string::npos) << r.out;
}

TEST_F(GptqCli, RefusesOutputsThatAreInputs) {
  auto r = run_cli("hessian " + kModel + " --text " + kText + " -o " + kModel);
  EXPECT_EQ(r.status, 1);
  r = run_cli("quantize " + kModel + " --format q8_0 --gptq " + hessian() + " -o " + hessian());
  EXPECT_EQ(r.status, 1);
  EXPECT_EQ(HessianFile(hessian()).tokens(), 192u);  // untouched
}

}  // namespace
}  // namespace lowbit
