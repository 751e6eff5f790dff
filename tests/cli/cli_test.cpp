// The lowbit executable: its JSON contract, --help on every command, and errors on bad input.
#include <gtest/gtest.h>

#include <array>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <string>

#include "support/paths.h"

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
  return {WEXITSTATUS(status), out};
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
  for (const char* cmd : {"inspect", "quantize", "dequantize"}) {
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
    if (t["name"].get<std::string>().starts_with("blk.0.") && !t["name"].get<std::string>().ends_with("norm.weight")) EXPECT_EQ(t["format"], "q8_0");
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
  expect_error("quantize " + model + " -o " + out + " --format iq2_xxs", "cannot write iq2_xxs");
  expect_error("quantize " + model + " -o " + (dir / "x.bin").string() + " --format q4_0", "must end in .gguf");
  expect_error("quantize /nonexistent/model.gguf -o " + out + " --format q4_0", "/nonexistent/model.gguf");
  expect_error("dequantize " + model + " -o " + out + " --dtype i8", "not f32, f16 or bf16");
}

}  // namespace
}  // namespace lowbit
