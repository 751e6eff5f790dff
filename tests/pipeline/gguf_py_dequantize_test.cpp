// lowbit's GGUF files read by llama.cpp's gguf-py: its own numpy dequantizers must give exactly the
// values lowbit's dequantizers give, for every type gguf-py supports.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"
#include "support/python.h"

namespace lowbit {
namespace {

TEST(GgufPyDequantize, AgreesWithLowbitOnEveryType) {
  REQUIRE_GGUF_PY();
  test::TempDir dir;
  const auto model = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  int supported = 0;
  for (const char* type : {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "iq4_nl", "iq4_xs", "f16", "bf16"}) {
    const auto quantized = dir / (std::string(type) + ".gguf");
    const auto plain = dir / (std::string(type) + ".safetensors");
    GgufQuantizeOptions options;
    options.selection = {.default_type = *ggml_type_from_name(type)};
    quantize_to_gguf(*ModelSource::open(model), quantized, options);
    dequantize_gguf(*ModelSource::open(quantized), plain, DType::f32);
    int status = 0;
    const auto out = test::run_command(test::python() + " " + test::interop_script("gguf_py_dequantize.py") + " " + quantized.string() +
                                           " " + plain.string() + " 2>&1",
                                       &status);
    ASSERT_EQ(status, 0) << out;
    for (const auto& t : nlohmann::json::parse(out)) {
      if (!t["supported"].get<bool>()) continue;
      EXPECT_EQ(t["max_abs_diff"].get<double>(), 0.0) << type << " " << t["name"] << " " << t["type"];
      ++supported;
    }
  }
  EXPECT_GT(supported, 200);  // 14 files × 21 tensors, less any type gguf-py cannot dequantize
}

}  // namespace
}  // namespace lowbit
