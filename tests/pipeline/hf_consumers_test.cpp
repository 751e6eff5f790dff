// What lowbit hands to Hugging Face tools, loaded there on the CPU (the consumers scripts/test.sh
// installs from PyPI into build/venv):
//   - `lowbit dequantize MODEL.gguf -o DIR`: transformers' AutoModelForCausalLM and AutoTokenizer load
//     DIR; its logits equal lowbit's forward pass on the GGUF, generate() runs, the tokenizer gives
//     lowbit's ids;
//   - `lowbit quantize DIR -o OUT --format nf4|fp4`: bitsandbytes' own CPU dequantize_4bit of the
//     stored bytes equals lowbit's dequantization, and transformers loads OUT and runs it.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <fstream>
#include <nlohmann/json.hpp>

#include "lowbit/model/llama.h"
#include "lowbit/model/tokenizer.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/python.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

template <class T>
void write_binary(const std::filesystem::path& path, const std::vector<T>& values) {
  std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(values.data()), std::streamsize(values.size() * sizeof(T)));
}

constexpr const char* kSample = "Once upon a time, a little dog named Max found a red ball in the park.";

// Exports `gguf` to a HF directory, runs lowbit's forward pass on the GGUF and transformers on the
// directory, and compares.
void expect_export_matches_transformers(const std::filesystem::path& gguf) {
  test::TempDir dir;
  export_gguf_to_hf(*ModelSource::open(gguf), dir / "hf", DType::f32);
  const auto model = LlamaModel::load(gguf);
  const auto tokenizer = Tokenizer::from_gguf_metadata(model->weights().metadata());
  std::vector<int32_t> tokens = tokenizer.encode(kSample, true);
  ASSERT_GE(tokens.size(), 8u);
  const auto logits = model->forward(tokens);
  write_binary(dir / "tokens.i32", tokens);
  write_binary(dir / "logits.f32", logits);
  const auto r = test::run_interop_json("hf_logits_check.py", (dir / "hf").string() + " " + (dir / "tokens.i32").string() + " " +
                                                                  (dir / "logits.f32").string() + " --generate --text '" + kSample + "'");
  ASSERT_FALSE(r.is_null());
  // Both in float32 over the same float32 weights: only summation order differs.
  EXPECT_LE(r["max_abs_diff"].get<double>(), 1e-3 * std::max(1.0, r["max_abs_logit"].get<double>())) << r.dump();
  EXPECT_EQ(r["argmax_agreement"].get<double>(), 1.0) << r.dump();
  EXPECT_EQ(r["generated"].size(), 12u) << r.dump();
  EXPECT_EQ(r["text_ids"].get<std::vector<int32_t>>(), tokenizer.encode(kSample, false)) << r.dump();
  std::cout << "[ consumer ] " << gguf.filename().string() << " -> " << r["class"].get<std::string>() << " (transformers "
            << r["transformers"].get<std::string>() << ", torch " << r["torch"].get<std::string>() << "): max |Δlogit| "
            << r["max_abs_diff"] << " of max |logit| " << r["max_abs_logit"] << "\n";
}

TEST(HfConsumers, ExportedByteLevelModelRunsInTransformers) {
  REQUIRE_PYTHON_MODULES("transformers, tokenizers, torch");
  expect_export_matches_transformers(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf");
}

TEST(HfConsumers, ExportedSentencePieceModelRunsInTransformers) {
  REQUIRE_PYTHON_MODULES("transformers, tokenizers, torch");
  expect_export_matches_transformers(test::shared_data_dir() / "stories260K.gguf");
}

TEST(HfConsumers, BitsandbytesCpuDequantizesLowbitsBytes) {
  REQUIRE_PYTHON_MODULES("bitsandbytes, transformers, torch");
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "model");
  for (const char* format : {"nf4", "fp4"}) {
    for (const bool double_quant : {false, true}) {
      const auto out = dir / fmt::format("{}-{}", format, double_quant);
      quantize_to_bnb(dir / "model", out, {.format = {.id = *parse_bnb_format(format), .blocksize = 64, .double_quant = double_quant}});
      // A checkpoint directory dequantizes to a directory (model.safetensors inside).
      const auto plain = dir / fmt::format("{}-{}-plain", format, double_quant);
      dequantize_bnb(out, plain, DType::f32);
      const auto r = test::run_interop_json("bnb_cpu_check.py", out.string() + " " + (plain / "model.safetensors").string());
      ASSERT_FALSE(r.is_null());
      EXPECT_EQ(r["weights"].get<int>(), 14) << r.dump();
      EXPECT_EQ(r["max_abs_diff"].get<double>(), 0.0) << format << " double_quant " << double_quant << ": " << r.dump();
      EXPECT_EQ(r["loaded_as"], "Linear4bit") << r.dump();
      EXPECT_TRUE(r["forward_finite"].get<bool>()) << r.dump();
      std::cout << "[ consumer ] " << format << (double_quant ? "+dq" : "") << " -> bitsandbytes " << r["bitsandbytes"].get<std::string>()
                << " CPU dequantize_4bit: max |Δ| " << r["max_abs_diff"] << " over " << r["weights"] << " weights; transformers "
                << r["loaded_as"].get<std::string>() << "\n";
    }
  }
}

}  // namespace
}  // namespace lowbit
