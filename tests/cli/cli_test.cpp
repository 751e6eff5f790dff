// The lowbit executable: its JSON contract, --help on every command, and errors on bad input.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

#include "lowbit/io/gguf.h"
#include "lowbit/io/imatrix.h"
#include "support/gguf_edit.h"
#include "support/paths.h"
#include "support/tiny_moe_model.h"

namespace lowbit {
namespace {

struct Run {
  int status;
  std::string out;
};

// Runs the built CLI with `args`; stdout (and stderr when asked) captured.
Run run_cli(const std::string& args, bool merge_stderr = false) {
  const std::string cmd = std::string(LOWBIT_CLI_PATH) + " " + args + (merge_stderr ? " 2>&1" : " 2>/dev/null");
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  return {WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), out};
}

TEST(Cli, InspectJsonContract) {
  const auto path = test::golden_ggml_dir() / "rows4096_q4_K_3x4096.gguf";
  const auto r = run_cli("inspect --json " + path.string());
  ASSERT_EQ(r.status, 0);
  const auto j = nlohmann::json::parse(r.out);
  for (const auto& t : j["tensors"])
    for (const char* key : {"name", "format", "shape", "params", "stored_elements", "bytes", "bpw"}) EXPECT_TRUE(t.contains(key)) << key;
  for (const char* key : {"params", "stored_elements", "bytes", "bpw"}) EXPECT_TRUE(j["total"].contains(key)) << key;
  const auto& q = j["tensors"][1];
  EXPECT_EQ(q["name"], "quantized");
  EXPECT_EQ(q["format"], "q4_K");
  EXPECT_EQ(q["shape"], nlohmann::json::array({3, 4096}));
  EXPECT_EQ(q["params"], 3 * 4096);
  EXPECT_EQ(q["bytes"], 3 * 16 * 144);
  EXPECT_DOUBLE_EQ(q["bpw"].get<double>(), 4.5);
}

TEST(Cli, InspectTextSaysWhenStoredElementsAreFewer) {
  const auto r = run_cli("inspect " + (test::golden_ggml_dir() / "mat512_q2_K_32x512.gguf").string());
  ASSERT_EQ(r.status, 0);
  EXPECT_NE(r.out.find("bits per weight"), std::string::npos);
  EXPECT_NE(r.out.find("numel()"), std::string::npos);
}

TEST(Cli, EveryCommandHasHelp) {
  const auto top = run_cli("--help");
  EXPECT_EQ(top.status, 0);
  for (const char* cmd : {"inspect", "quantize", "dequantize", "eval", "imatrix", "hessian", "plan", "bench"}) {
    const auto r = run_cli(std::string(cmd) + " --help");
    EXPECT_EQ(r.status, 0) << cmd;
    EXPECT_NE(r.out.find("--quiet"), std::string::npos) << cmd;
  }
}

TEST(Cli, BadInputIsAClearErrorNamingTheFile) {
  test::TempDir dir;
  const auto bad = dir / "broken.gguf";
  std::FILE* f = std::fopen(bad.c_str(), "wb");
  std::fputs("GGUF\x03\x00\x00\x00garbage", f);
  std::fclose(f);
  const auto r = run_cli("inspect " + bad.string(), true);
  EXPECT_EQ(r.status, 1);
  EXPECT_NE(r.out.find("broken.gguf"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("error"), std::string::npos) << r.out;
  EXPECT_EQ(run_cli("inspect /nonexistent/model.gguf").status, 1);
  EXPECT_NE(run_cli("frobnicate").status, 0);
}

TEST(Cli, QuantizeAndDequantizeGgufWithJson) {
  test::TempDir dir;
  const auto model = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  const auto q = run_cli("quantize " + model.string() + " -o " + (dir / "q.gguf").string() + " --mix q3_k_m --tensor-type 'blk.0.*=q8_0' --json");
  ASSERT_EQ(q.status, 0) << q.out;
  const auto j = nlohmann::json::parse(q.out);
  for (const auto& t : j["tensors"])
    if (t["name"].get<std::string>().starts_with("blk.0.") && !t["name"].get<std::string>().ends_with("norm.weight")) {
      EXPECT_EQ(t["format"], "q8_0");
    }
  EXPECT_GT(j["total"]["bpw"].get<double>(), 3.0);
  const auto d = run_cli("dequantize " + (dir / "q.gguf").string() + " -o " + (dir / "d.safetensors").string() + " --dtype bf16 --json");
  ASSERT_EQ(d.status, 0) << d.out;
  EXPECT_EQ(nlohmann::json::parse(d.out)["tensors"], 21);
  const auto inspect = nlohmann::json::parse(run_cli("inspect --json " + (dir / "d.safetensors").string()).out);
  EXPECT_EQ(inspect["total"]["params"], j["total"]["params"]);
}

TEST(Cli, QuantizeErrorsAreClear) {
  test::TempDir dir;
  const auto model = (test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf").string();
  const auto out = (dir / "x.gguf").string();
  auto expect_error = [&](const std::string& args, const std::string& needle) {
    const auto r = run_cli(args, true);
    EXPECT_EQ(r.status, 1) << args;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
    EXPECT_FALSE(std::filesystem::exists(out));
  };
  expect_error("quantize " + model + " -o " + out + " --format q9_9", "unknown ggml type 'q9_9'");
  expect_error("quantize " + model + " -o " + out + " --mix Q7_K_XL", "unknown mix");
  expect_error("quantize " + model + " -o " + out + " --format q4_K --mix Q4_K_M", "exactly one");
  expect_error("quantize " + model + " -o " + out + " --format iq2_xxs", "iq2_xxs needs importance weights");
  expect_error("quantize " + model + " -o " + (dir / "x.bin").string() + " --format q4_0", "must end in .gguf");
  expect_error("quantize /nonexistent/model.gguf -o " + out + " --format q4_0", "/nonexistent/model.gguf");
  expect_error("dequantize " + model + " -o " + out + " --dtype i8", "not f32, f16 or bf16");
}

// A model whose metadata is out of range is refused before any work, naming the file and the key:
// block_count 0xFFFFFFFF ran 0 layers and printed a perplexity with exit 0; head_count 0 was a SIGFPE.
TEST(Cli, EvalRefusesOutOfRangeModelMetadata) {
  test::TempDir dir;
  const auto golden = test::golden_ggml_dir() / "model";
  for (const auto& [key, value] : {std::pair{"llama.block_count", uint32_t(0xFFFFFFFF)}, {"llama.attention.head_count", uint32_t(0)}}) {
    const auto edited = dir / "edited.gguf";
    test::copy_gguf_with(golden / "tiny-llama-f32.gguf", edited, {{key, gguf::Value{value}}});
    const auto r = run_cli("eval " + edited.string() + " --text " + (golden / "text.txt").string() + " --ctx 64", true);
    EXPECT_EQ(r.status, 1) << r.out;
    EXPECT_NE(r.out.find(edited.string() + ": key '" + key + "': "), std::string::npos) << r.out;
  }
}

// llama-perplexity (llama.cpp c392e509) on the golden tiny model, text.txt, -c 64: 90 chunks, F32
// PPL = 288.6422 and Q4_K_M 303.4983. llama.cpp keeps keys and values in f16 and, for Q4_K_M, rounds
// activations to 8 bits inside its dot products: the F32 figure must agree closely, Q4_K_M within 0.5%.
TEST(Cli, EvalReproducesLlamaPerplexity) {
  const auto dir = test::golden_ggml_dir() / "model";
  const std::string text = " --text " + (dir / "text.txt").string() + " --ctx 64 --json";
  const auto f32 = run_cli("eval " + (dir / "tiny-llama-f32.gguf").string() + text);
  ASSERT_EQ(f32.status, 0) << f32.out;
  const auto base = nlohmann::json::parse(f32.out);
  EXPECT_NEAR(base["ppl"].get<double>(), 288.6422, 288.6422 * 2e-4);
  EXPECT_EQ(base["chunks"], 90);
  EXPECT_EQ(base["tokens"], 90 * 31);
  EXPECT_FALSE(base.contains("kld"));
  const auto q = run_cli("eval " + (dir / "tiny-llama-q4_k_m.gguf").string() + text + " --base " + (dir / "tiny-llama-f32.gguf").string());
  ASSERT_EQ(q.status, 0) << q.out;
  const auto j = nlohmann::json::parse(q.out);
  EXPECT_NEAR(j["ppl"].get<double>(), 303.4983, 303.4983 * 5e-3);
  for (const char* key : {"mean", "median", "p99", "max"}) EXPECT_GT(j["kld"][key].get<double>(), 0.0) << key;
  EXPECT_GT(j["top1"].get<double>(), 0.3);
  // A base model's perplexity is its own run's, exactly (not read back from uint16 log-probabilities,
  // which llama.cpp's logits format clamps at 16 nats below the best token).
  EXPECT_DOUBLE_EQ(j["base_ppl"].get<double>(), base["ppl"].get<double>());
}

TEST(Cli, ImatrixFeedsQuantize) {
  test::TempDir dir;
  const auto model = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  const auto imatrix = dir / "imatrix.gguf";
  const auto r = run_cli("imatrix " + model.string() + " --text " + (test::golden_ggml_dir() / "model" / "text.txt").string() +
                         " --ctx 64 --chunks 8 -o " + imatrix.string() + " --quiet");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto q = run_cli("quantize " + model.string() + " -o " + (dir / "q.gguf").string() + " --format q4_K --imatrix " + imatrix.string() + " --json");
  ASSERT_EQ(q.status, 0) << q.out;
  const auto report = nlohmann::json::parse(q.out);
  int with_imatrix = 0;
  for (const auto& t : report["tensors"]) with_imatrix += t["imatrix"].get<bool>();
  EXPECT_EQ(with_imatrix, 14);  // 7 matrices in each of 2 layers; token_embd and output have none

  // The legacy .dat form (chosen by the extension) holds the same means (to float rounding) and quantizes.
  const auto dat = dir / "imatrix.dat";
  const auto d = run_cli("imatrix " + model.string() + " --text " + (test::golden_ggml_dir() / "model" / "text.txt").string() +
                         " --ctx 64 --chunks 8 -o " + dat.string() + " --quiet");
  ASSERT_EQ(d.status, 0) << d.out;
  const auto from_gguf = ImportanceMatrix::load(imatrix), from_dat = ImportanceMatrix::load(dat);
  ASSERT_EQ(from_dat.entries().size(), from_gguf.entries().size());
  for (const auto& e : from_gguf.entries()) {
    ASSERT_NE(from_dat.find(e.name), nullptr) << e.name;
    const auto& w = from_dat.find(e.name)->weights;
    ASSERT_EQ(w.size(), e.weights.size());
    for (size_t i = 0; i < w.size(); ++i) EXPECT_NEAR(w[i], e.weights[i], 1e-6f * std::abs(e.weights[i])) << e.name << " " << i;
  }
  EXPECT_EQ(from_dat.chunk_count(), 8);
  const auto qd = run_cli("quantize " + model.string() + " -o " + (dir / "qd.gguf").string() + " --format q4_K --imatrix " + dat.string() + " --quiet");
  ASSERT_EQ(qd.status, 0) << qd.out;
  const auto gguf_form = run_cli("imatrix " + model.string() + " --text " + (test::golden_ggml_dir() / "model" / "text.txt").string() +
                                 " --ctx 64 --chunks 8 -o " + (dir / "forced").string() + " --output-format dat --quiet");
  ASSERT_EQ(gguf_form.status, 0) << gguf_form.out;
  EXPECT_NO_THROW(ImportanceMatrix::load(dir / "forced"));

  // The IQ2_XXS mix: refused without the importance matrix, written with it (token_embd q2_K, output q5_K).
  const auto refused = run_cli("quantize " + model.string() + " -o " + (dir / "iq2.gguf").string() + " --mix IQ2_XXS", true);
  EXPECT_NE(refused.status, 0);
  EXPECT_NE(refused.out.find("lowbit imatrix"), std::string::npos) << refused.out;
  const auto iq2 = run_cli("quantize " + model.string() + " -o " + (dir / "iq2.gguf").string() + " --mix IQ2_XXS --imatrix " +
                           imatrix.string() + " --json");
  ASSERT_EQ(iq2.status, 0) << iq2.out;
  const gguf::File out(dir / "iq2.gguf");
  EXPECT_EQ(out.find_tensor("blk.0.attn_q.weight")->type, GgmlType::IQ2_XXS);
  EXPECT_EQ(out.find_tensor("blk.1.attn_v.weight")->type, GgmlType::Q2_K);  // n_gqa 2
  EXPECT_EQ(out.find_tensor("token_embd.weight")->type, GgmlType::Q2_K);
  EXPECT_EQ(out.find_tensor("output.weight")->type, GgmlType::Q5_K);
  EXPECT_EQ(out.find("general.file_type")->as_int(), 19);
}

TEST(Cli, PlanWritesPlanReportAndQuantizes) {
  test::TempDir dir;
  const auto model = (test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf").string();
  const auto plan = run_cli("plan " + model + " --bpw 4.25 -o " + (dir / "plan.json").string() + " --json");
  ASSERT_EQ(plan.status, 0) << plan.out;
  const auto j = nlohmann::json::parse(plan.out);
  EXPECT_LE(j["achieved_bpw"].get<double>(), 4.25);
  EXPECT_GT(j["achieved_bpw"].get<double>(), 4.2);
  EXPECT_TRUE(std::filesystem::exists(dir / "plan.svg"));
  EXPECT_TRUE(std::filesystem::exists(dir / "plan.html"));
  const auto text = run_cli("plan " + model + " --bpw 4.25 -o " + (dir / "plan2.json").string());
  EXPECT_NE(text.out.find("ffn_down"), std::string::npos);
  EXPECT_NE(text.out.find("achieved"), std::string::npos);
  const auto q = run_cli("quantize " + model + " --plan " + (dir / "plan.json").string() + " -o " + (dir / "p.gguf").string() + " --json");
  ASSERT_EQ(q.status, 0) << q.out;
  EXPECT_NEAR(nlohmann::json::parse(q.out)["total"]["bpw"].get<double>(), j["achieved_bpw"].get<double>(), 1e-9);
  EXPECT_EQ(run_cli("plan " + model + " --bpw 1.0 -o " + (dir / "p3.json").string()).status, 1);
  EXPECT_NE(text.out.find("losses: relative reconstruction error"), std::string::npos);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(dir / "plan.json"))["loss_measure"]["reason"], "no --text or --probe-text to probe on");
  // An edited plan naming a tensor the model lacks is refused, naming it, and writes nothing.
  auto edited = nlohmann::json::parse(std::ifstream(dir / "plan.json"));
  for (auto& t : edited["tensors"])
    if (t["quantized"].get<bool>()) {
      t["name"] = "blk.99.attn_q.weight";
      break;
    }
  std::ofstream(dir / "edited.json") << edited.dump();
  const auto refused = run_cli("quantize " + model + " --plan " + (dir / "edited.json").string() + " -o " + (dir / "e.gguf").string(), true);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.out.find("blk.99.attn_q.weight"), std::string::npos) << refused.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "e.gguf"));
  // The output KL-divergence probe: GGUF plans only, quantize takes it with --bpw only, and a text too
  // short for its windows is an error.
  const auto gpl = std::string("/usr/share/common-licenses/GPL-3");
  EXPECT_EQ(run_cli("quantize " + model + " --format q8_0 --probe-text " + gpl + " -o " + (dir / "q.gguf").string()).status, 1);
  EXPECT_EQ(run_cli("plan " + model + " --bpw 4 --probe-text " + gpl + " --probe-chunks 1000 -o " + (dir / "p4.json").string()).status, 1);
  EXPECT_EQ(run_cli("plan " + model + " --bpw 4 --probe-text " + gpl + " --target bnb -o " + (dir / "p5.json").string()).status, 1);
}

// A plan measured on a text keeps its importance matrix beside plan.json and quantize --plan rounds with
// it: the bytes are those of naming the matrix by hand, and the types ggml quantizes only with an
// importance matrix (which the planner may choose once it has one) need no second step. A plan whose
// matrix is gone is refused, naming the file, and writes nothing.
TEST(Cli, APlanMeasuredOnATextQuantizesWithItsImportanceMatrix) {
  test::TempDir dir;
  const auto model = (test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf").string();
  const auto text = std::string("/usr/share/common-licenses/GPL-3");
  const auto plan = run_cli("plan " + model + " --bpw 2.3 --text " + text + " --device cpu -o " + (dir / "plan.json").string() + " --json");
  ASSERT_EQ(plan.status, 0) << plan.out;
  const auto kept = dir / "plan.imatrix.gguf";
  EXPECT_EQ(nlohmann::json::parse(plan.out)["imatrix"], kept.string());
  ASSERT_TRUE(std::filesystem::exists(kept));
  const auto j = nlohmann::json::parse(std::ifstream(dir / "plan.json"));
  EXPECT_EQ(j["loss_measure"]["imatrix"], "plan.imatrix.gguf");
  EXPECT_TRUE(j["loss_measure"]["imatrix_weighted"].get<bool>());
  int needs_imatrix = 0;
  for (const auto& t : j["tensors"]) {
    const auto format = t["format"].get<std::string>();
    needs_imatrix += format == "iq1_s" || format == "iq2_xxs" || format == "iq2_xs";
  }
  EXPECT_GT(needs_imatrix, 0) << "at 2.3 bits the plan was expected to choose a type that needs an importance matrix";

  const auto by_plan = run_cli("quantize " + model + " --plan " + (dir / "plan.json").string() + " -o " + (dir / "a.gguf").string(), true);
  ASSERT_EQ(by_plan.status, 0) << by_plan.out;
  EXPECT_NE(by_plan.out.find("quantizing with the plan's importance matrix"), std::string::npos) << by_plan.out;
  const auto by_hand = run_cli("quantize " + model + " --plan " + (dir / "plan.json").string() + " --imatrix " + kept.string() + " -o " +
                               (dir / "b.gguf").string() + " --quiet");
  ASSERT_EQ(by_hand.status, 0) << by_hand.out;
  std::ifstream a(dir / "a.gguf", std::ios::binary), b(dir / "b.gguf", std::ios::binary);
  EXPECT_TRUE(std::equal(std::istreambuf_iterator<char>(a), {}, std::istreambuf_iterator<char>(b), {}));

  std::filesystem::create_directory(dir / "moved");
  std::filesystem::copy_file(dir / "plan.json", dir / "moved" / "plan.json");
  const auto refused = run_cli("quantize " + model + " --plan " + (dir / "moved" / "plan.json").string() + " -o " + (dir / "c.gguf").string(), true);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.out.find((dir / "moved" / "plan.imatrix.gguf").string()), std::string::npos) << refused.out;
  EXPECT_FALSE(std::filesystem::exists(dir / "c.gguf"));
}

// The default loss: with a text, the probe on a GPU and the relative error on the CPU; plan.json says
// which and why (the same test on the device machine takes the GPU branch under --device auto).
TEST(Cli, PlanSaysWhichLossItUsedAndWhy) {
  test::TempDir dir;
  const auto model = (test::shared_data_dir() / "stories260K.gguf").string();
  const auto text = (test::shared_data_dir() / "tinystories_valid_first1000.txt").string();
  auto loss_of = [&](const std::string& flags, const std::string& name) {
    const auto r = run_cli("plan " + model + " --bpw 6 --text " + text + " --probe-chunks 1 " + flags + " -o " + (dir / name).string() + " --quiet");
    EXPECT_EQ(r.status, 0) << r.out;
    return nlohmann::json::parse(std::ifstream(dir / name))["loss_measure"];
  };
  const auto cpu = loss_of("--device cpu", "cpu.json");
  EXPECT_EQ(cpu["kind"], "relative_error");
  EXPECT_NE(cpu["reason"].get<std::string>().find("no GPU"), std::string::npos) << cpu;
  EXPECT_FALSE(cpu.contains("whole_kld"));  // no probe to measure the planned model with
  const auto probed = loss_of("--device cpu --probe-text " + text, "probed.json");
  EXPECT_EQ(probed["kind"], "output_kld");
  EXPECT_GT(probed["whole_kld"].get<double>(), 0.0) << probed;
  const auto refused = loss_of("--device auto --no-probe", "no-probe.json");
  EXPECT_EQ(refused["kind"], "relative_error");
  EXPECT_EQ(refused["reason"], "--no-probe");
  const auto by_default = loss_of("--device auto", "auto.json");
  const bool gpu = by_default["reason"].get<std::string>().find("a GPU is present") != std::string::npos;
  EXPECT_EQ(by_default["kind"], gpu ? "output_kld" : "relative_error") << by_default;
  if (gpu) {
    EXPECT_EQ(by_default["calibration"], "tinystories_valid_first1000.txt");
  }
}

// A synthetic Qwen2-MoE: the plan's per-role table lists experts, shared experts and routers; a
// bitsandbytes plan of its Hugging Face directory becomes a checkpoint (quantize --plan, and --bpw inline).
TEST(Cli, PlanMoeForGgufAndBitsandbytes) {
  test::TempDir dir;
  const test::TinyMoe model{.style = test::MoeStyle::qwen2_moe};
  test::write_tiny_moe_gguf(dir / "moe.gguf", model);
  const auto gguf_plan = run_cli("plan " + (dir / "moe.gguf").string() + " --bpw 3.5 -o " + (dir / "g.json").string());
  ASSERT_EQ(gguf_plan.status, 0) << gguf_plan.out;
  for (const char* role : {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps", "ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp", "router"})
    EXPECT_NE(gguf_plan.out.find(role), std::string::npos) << role << "\n" << gguf_plan.out;

  test::write_tiny_moe_hf(dir / "hf", model);
  const auto plan = run_cli("plan " + (dir / "hf").string() + " --target bnb --bpw 4.4 -o " + (dir / "b.json").string() + " --json");
  ASSERT_EQ(plan.status, 0) << plan.out;
  const auto j = nlohmann::json::parse(plan.out);
  EXPECT_EQ(j["target"], "bnb");
  EXPECT_LE(j["achieved_bpw"].get<double>(), 4.4);
  std::ifstream plan_file(dir / "b.json");
  const auto written = nlohmann::json::parse(plan_file);
  EXPECT_EQ(written["target"], "bnb");
  const auto expert = std::ranges::find_if(written["tensors"], [](const auto& t) { return t["name"] == "model.layers.0.mlp.experts.0.up_proj.weight"; });
  ASSERT_NE(expert, written["tensors"].end());
  EXPECT_EQ((*expert)["role"], "ffn_up_exps");
  EXPECT_TRUE((*expert)["format"] == "nf4" || (*expert)["format"] == "fp4" || (*expert)["format"] == "bf16") << *expert;
  const auto q = run_cli("quantize " + (dir / "hf").string() + " --plan " + (dir / "b.json").string() + " -o " + (dir / "out").string() + " --json");
  ASSERT_EQ(q.status, 0) << q.out;
  EXPECT_EQ(nlohmann::json::parse(q.out)["bytes_out"], j["bytes"]);
  EXPECT_TRUE(std::filesystem::exists(dir / "out" / "config.json"));
  const auto inline_plan = run_cli("quantize " + (dir / "hf").string() + " --bpw 4.4 --target bnb -o " + (dir / "out2").string() + " --json");
  ASSERT_EQ(inline_plan.status, 0) << inline_plan.out;
  EXPECT_EQ(nlohmann::json::parse(inline_plan.out)["bytes_out"], j["bytes"]);
  // A bitsandbytes plan cannot reach 2.5 bits, nor does a GGUF plan write a checkpoint directory.
  EXPECT_EQ(run_cli("plan " + (dir / "hf").string() + " --target bnb --bpw 2.5 -o " + (dir / "x.json").string()).status, 1);
  EXPECT_EQ(run_cli("quantize " + (dir / "moe.gguf").string() + " --plan " + (dir / "g.json").string() + " -o " + (dir / "dir").string()).status, 1);
  const auto gguf_to_bnb = run_cli("plan " + (dir / "moe.gguf").string() + " --target bnb --bpw 4.4 -o " + (dir / "x.json").string(), true);
  EXPECT_EQ(gguf_to_bnb.status, 1);
  EXPECT_NE(gguf_to_bnb.out.find("Hugging Face directory"), std::string::npos) << gguf_to_bnb.out;
}

TEST(Cli, BenchReportsEveryFormatBesideMemcpy) {
  const auto r = run_cli("bench --rows 64 --cols 512 --repeats 1 --format nf4 --format int8 --format q4_K --json");
  ASSERT_EQ(r.status, 0) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_GT(j["memcpy_gbs"].get<double>(), 0.0);
  ASSERT_EQ(j["formats"].size(), 3u);
  for (const auto& f : j["formats"]) {
    EXPECT_GT(f["quantize_gbs"].get<double>(), 0.0) << f["format"];
    EXPECT_GT(f["dequantize_gbs"].get<double>(), 0.0) << f["format"];
  }
  EXPECT_EQ(run_cli("bench --format q9_K --rows 8 --cols 256").status, 1);
}

// On a GPU: every row beside its reference from the same run; without one (CI), a clear error.
TEST(Cli, BenchOnCudaReportsRowsOrSaysWhyNot) {
  const auto r = run_cli("bench --device cuda --quick --json", true);
  if (r.status != 0) {
    EXPECT_EQ(r.status, 1);
    EXPECT_TRUE(r.out.find("no CUDA device") != std::string::npos || r.out.find("built without CUDA") != std::string::npos)
        << r.out;
    return;
  }
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_FALSE(j["device"].get<std::string>().empty());
  bool copy = false, cublas = false;
  for (const auto& row : j["rows"]) {
    EXPECT_GT(row["us"].get<double>(), 0.0) << row["kernel"];
    EXPECT_GT(row["ratio"].get<double>(), 0.0) << row["kernel"];
    copy |= row["reference"] == "copy";
    cublas |= row["reference"].get<std::string>().starts_with("cuBLAS");
  }
  EXPECT_TRUE(copy && cublas) << r.out;
}

// A GGUF exported as a Hugging Face directory converts back to the same GGUF tensors and vocabulary.
TEST(Cli, ExportToHuggingFaceRoundTrips) {
  const char* model = std::getenv("LOWBIT_DEFAULT_MODEL");
  if (!model) GTEST_SKIP() << "set LOWBIT_DEFAULT_MODEL (scripts/test.sh does)";
  test::TempDir dir;
  ASSERT_EQ(run_cli(std::string("dequantize ") + model + " -o " + (dir / "f32.gguf").string() + " --quiet").status, 0);
  ASSERT_EQ(run_cli("dequantize " + (dir / "f32.gguf").string() + " -o " + (dir / "hf").string() + " --quiet").status, 0);
  ASSERT_EQ(run_cli("quantize " + (dir / "hf").string() + " -o " + (dir / "back.gguf").string() + " --format f32 --quiet").status, 0);
  const gguf::File a(dir / "f32.gguf"), b(dir / "back.gguf");
  ASSERT_EQ(a.tensors().size(), b.tensors().size());
  for (const auto& t : a.tensors()) {
    const auto* u = b.find_tensor(t.name);
    ASSERT_NE(u, nullptr) << t.name;
    const auto x = a.data(t), y = b.data(*u);
    EXPECT_TRUE(std::equal(x.begin(), x.end(), y.begin(), y.end())) << t.name;
  }
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type"}) {
    const auto& xs = a.find(key)->get_if<gguf::Array>()->items;
    const auto& ys = b.find(key)->get_if<gguf::Array>()->items;
    ASSERT_EQ(xs.size(), ys.size()) << key;
    EXPECT_TRUE(std::equal(xs.begin(), xs.end(), ys.begin(), [](const gguf::Value& p, const gguf::Value& q) {
      if (p.get_if<std::string>()) return q.get_if<std::string>() && *p.get_if<std::string>() == *q.get_if<std::string>();
      return p.as_int() == q.as_int();
    })) << key;
  }
  for (const char* key : {"tokenizer.ggml.pre", "tokenizer.chat_template"})
    EXPECT_EQ(*a.find(key)->get_if<std::string>(), *b.find(key)->get_if<std::string>()) << key;
  EXPECT_EQ(a.find("tokenizer.ggml.eos_token_id")->as_int(), b.find("tokenizer.ggml.eos_token_id")->as_int());
}

}  // namespace
}  // namespace lowbit
