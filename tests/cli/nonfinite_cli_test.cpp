// The NaN/Inf policy through the real CLI: a refusal is one line naming file, tensor and element with
// exit status 1 and no output; --allow-nonfinite reports on stderr and counts in --json.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <sys/wait.h>

#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"
#include "support/paths.h"

namespace lowbit {
namespace {

struct Run {
  int status;
  std::string out, err;
};

// Runs the built CLI with `args`; stdout and stderr captured apart.
Run run(const std::string& args, const test::TempDir& dir) {
  const auto err_path = dir / "stderr.txt";
  const std::string cmd = std::string(LOWBIT_CLI_PATH) + " " + args + " 2>" + err_path.string();
  FILE* pipe = popen(cmd.c_str(), "r");
  std::string out;
  std::array<char, 4096> buf{};
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) out.append(buf.data(), n);
  const int status = pclose(pipe);
  std::ifstream in(err_path);
  std::string err((std::istreambuf_iterator<char>(in)), {});
  std::filesystem::remove(err_path);
  return {WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status), out, err};
}

// A GGUF with blk.0.ffn_up.weight (2 x 256, stored as `type`, value 3 set to `first`) and an f32 norm.
void write_model(const std::filesystem::path& path, float first, GgmlType type, bool nan_scale = false) {
  std::vector<float> w(512), norm(256, 1.0f);
  for (size_t i = 0; i < w.size(); ++i) w[i] = 0.1f * std::sin(0.37f * float(i));
  w[3] = first;
  std::vector<std::byte> bytes(ggml_row_bytes(type, 256) * 2);
  quantize_rows(type, w.data(), 2, 256, nullptr, bytes.data());
  if (nan_scale) {
    const uint16_t nan = 0x7e00;
    std::memcpy(bytes.data(), &nan, 2);  // q8_0 block 0's d
  }
  gguf::Writer g(path);
  g.set("general.architecture", {std::string("llama")});
  g.add_tensor("blk.0.attn_norm.weight", GgmlType::F32, {256});
  g.add_tensor("blk.0.ffn_up.weight", type, {256, 2});
  g.write_data("blk.0.attn_norm.weight", std::as_bytes(std::span(norm)));
  g.write_data("blk.0.ffn_up.weight", bytes);
  g.finish();
}

TEST(CliNonfinite, NaNWeightIsAOneLineErrorAndNoOutput) {
  test::TempDir dir;
  write_model(dir / "model.gguf", std::numeric_limits<float>::quiet_NaN(), GgmlType::F32);
  for (const char* format : {"f16", "q4_K"}) {
    const auto r = run("quantize " + (dir / "model.gguf").string() + " -o " + (dir / "out.gguf").string() + " --format " + format, dir);
    EXPECT_EQ(r.status, 1) << format;
    EXPECT_NE(r.err.find("lowbit: error: " + (dir / "model.gguf").string() + ": tensor 'blk.0.ffn_up.weight': NaN at row 0, column 3"),
              std::string::npos)
        << r.err;
    EXPECT_NE(r.err.find("--allow-nonfinite"), std::string::npos) << r.err;
    EXPECT_FALSE(std::filesystem::exists(dir / "out.gguf"));
  }
}

TEST(CliNonfinite, AllowReportsOnStderrAndCountsInJson) {
  test::TempDir dir;
  write_model(dir / "model.gguf", 1.0e5f, GgmlType::F32);  // beyond f16: Inf in the output
  const auto r = run("quantize " + (dir / "model.gguf").string() + " -o " + (dir / "out.gguf").string() +
                         " --format f16 --allow-nonfinite --json --quiet", dir);
  ASSERT_EQ(r.status, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["nonfinite"]["values"], 1);
  EXPECT_EQ(j["nonfinite"]["tensors"], 1);
  EXPECT_NE(r.err.find("warning"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("100000 is beyond the f16 range"), std::string::npos) << r.err;
  EXPECT_TRUE(std::filesystem::exists(dir / "out.gguf"));
}

TEST(CliNonfinite, NaNScaleOfAQuantizedSourceWhenDequantizing) {
  test::TempDir dir;
  write_model(dir / "model.gguf", 0.5f, GgmlType::Q8_0, true);
  const std::string base = "dequantize " + (dir / "model.gguf").string() + " -o " + (dir / "out.safetensors").string();
  const auto refused = run(base, dir);
  EXPECT_EQ(refused.status, 1);
  EXPECT_NE(refused.err.find("block scale d = NaN"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
  const auto allowed = run(base + " --allow-nonfinite --json", dir);
  ASSERT_EQ(allowed.status, 0) << allowed.err;
  EXPECT_EQ(nlohmann::json::parse(allowed.out)["nonfinite"]["values"], 32);
}

TEST(CliNonfinite, WritingCommandsDocumentTheFlag) {
  test::TempDir dir;
  for (const char* cmd : {"quantize", "dequantize", "merge"}) EXPECT_NE(run(std::string(cmd) + " --help", dir).out.find("--allow-nonfinite"), std::string::npos);
}

}  // namespace
}  // namespace lowbit
