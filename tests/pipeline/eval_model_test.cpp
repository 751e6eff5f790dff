// Evaluating a Hugging Face directory or a bitsandbytes checkpoint reads it in place: the logits are
// those of the GGUF the directory was made from (float32 weights, Q/K rows permuted back exactly),
// and those of the checkpoint's own dequantized copy; nothing is written anywhere.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <cstring>
#include <fstream>
#include <iterator>

#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_4bit_packed.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/eval_model.h"
#include "lowbit/io/model_source.h"
#include "support/paths.h"
#include "support/tiny_hf_model.h"

namespace lowbit {
namespace {

const std::vector<int32_t> kTokens = {1, 72, 101, 108, 108, 111, 32, 119, 111, 114, 108, 100, 33, 10};

size_t entries(const std::filesystem::path& dir) {
  return size_t(std::distance(std::filesystem::directory_iterator(dir), std::filesystem::directory_iterator()));
}

TEST(EvalModel, HfDirectoryGivesTheLogitsOfItsGguf) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "hf");
  const auto want = LlamaModel::load(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf")->forward(kTokens);
  const size_t before = entries(dir.path());
  const EvalModel model(dir / "hf");
  EXPECT_EQ(model.model().forward(kTokens), want);
  EXPECT_EQ(entries(dir.path()), before);
  EXPECT_EQ(model.model().weights().label(), (dir / "hf").string());
}

TEST(EvalModel, BitsandbytesCheckpointGivesTheLogitsOfItsDequantizedCopy) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "hf");
  for (const FormatId format : {FormatId::nf4, FormatId::int8}) {
    const std::string name(format_name(format));
    SCOPED_TRACE(name);
    const auto q = dir / ("q-" + name), plain = dir / ("plain-" + name);
    quantize_to_bnb(dir / "hf", q, {.format = {.id = format, .double_quant = true}});
    dequantize_bnb(q, plain, std::nullopt);
    const auto want = EvalModel(plain).model().forward(kTokens);
    const auto got = EvalModel(q).model().forward(kTokens);
    EXPECT_EQ(got, want);
    // and not the unquantized model's
    EXPECT_NE(got, EvalModel(dir / "hf").model().forward(kTokens));
  }
}

// A bitsandbytes checkpoint's 4-bit weights keep a view of their stored bytes beside the dequantized
// ones the CPU multiplies by, and the view dequantizes to exactly those: Q and K, whose rows llama.cpp
// orders otherwise, row by row in the view's order. The embedding and the output layer, which
// bitsandbytes leaves unquantized, have none.
TEST(EvalModel, BitsandbytesWeightsKeepTheirStoredBytes) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "hf");
  for (const bool double_quant : {true, false}) {
    const FormatId format = double_quant ? FormatId::nf4 : FormatId::fp4;
    SCOPED_TRACE(std::string(format_name(format)));
    const auto q = dir / fmt::format("q-{}", format_name(format));
    quantize_to_bnb(dir / "hf", q, {.format = {.id = format, .blocksize = 64, .double_quant = double_quant}});
    const EvalModel model(q);
    int packed = 0;
    for (const auto& [name, m] : model.model().matrices()) {
      if (name == "token_embd.weight" || name == "output.weight") {
        EXPECT_FALSE(m.packed_4bit) << name;
        continue;
      }
      ASSERT_TRUE(m.packed_4bit) << name;
      const bnb::Packed4bitView& v = *m.packed_4bit;
      EXPECT_EQ(v.format, format) << name;
      EXPECT_EQ(v.double_quant(), double_quant) << name;
      EXPECT_EQ(v.packed.size(), size_t(m.rows * m.cols / 2)) << name;
      const bool permuted = name.ends_with("attn_q.weight") || name.ends_with("attn_k.weight");
      EXPECT_EQ(v.row_order.size(), permuted ? size_t(m.rows) : 0) << name;
      bnb::Bnb4bitState state{.quant_type = *bnb::quant_type_of(v.format), .blocksize = v.blocksize, .dtype = v.dtype,
                              .shape = {m.rows, m.cols}, .absmax = bnb::block_scales(v)};
      state.code = bnb::code_map(state.quant_type);
      const Tensor stored = bnb::dequantize_4bit(std::span(reinterpret_cast<const uint8_t*>(v.packed.data()), v.packed.size()), state);
      ASSERT_EQ(stored.buffer.size(), m.data.size()) << name;
      const size_t row_bytes = m.data.size() / size_t(m.rows);
      for (int64_t r = 0; r < m.rows; ++r) {
        const int64_t from = permuted ? v.row_order[size_t(r)] : r;
        ASSERT_EQ(std::memcmp(m.data.data() + size_t(r) * row_bytes, stored.buffer.data() + size_t(from) * row_bytes, row_bytes), 0)
            << name << " row " << r;
      }
      ++packed;
    }
    EXPECT_EQ(packed, 2 * 7) << "q, k, v, o, gate, up and down in both layers";
  }
}

// Every writer that reads a ModelSource takes a bitsandbytes checkpoint as it takes its dequantized
// copy: the same tensors (companions not listed), shapes, recorded types and values.
TEST(ModelSource, BitsandbytesCheckpointServesItsDequantizedWeights) {
  test::TempDir dir;
  test::write_tiny_hf_model(dir / "hf");
  quantize_to_bnb(dir / "hf", dir / "q", {.format = {.id = FormatId::nf4, .blocksize = 32}});
  dequantize_bnb(dir / "q", dir / "plain", std::nullopt);
  const auto q = ModelSource::open(dir / "q"), plain = ModelSource::open(dir / "plain");
  ASSERT_EQ(q->tensors().size(), plain->tensors().size());
  int quantized = 0;
  for (size_t i = 0; i < q->tensors().size(); ++i) {
    const auto &a = q->tensors()[i], &b = plain->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.ne, b.ne) << a.name;
    EXPECT_EQ(a.stored_type, b.stored_type) << a.name;
    EXPECT_EQ(q->load_f32(a), plain->load_f32(b)) << a.name;
    quantized += q->raw(a).empty() && !plain->raw(b).empty();
  }
  EXPECT_GT(quantized, 0);
}

// `--device auto` on a machine without NVIDIA's driver (CI) is the CPU, decided without loading the
// CUDA module and its libraries (about 200 MB resident).
TEST(EvalModel, AutoDeviceWithoutDriverLoadsNoCudaModule) {
  if (nvidia_driver_present()) GTEST_SKIP() << "an NVIDIA driver is installed here";
  EXPECT_EQ(resolve_device("auto"), Device::cpu);
  std::ifstream maps("/proc/self/maps");
  const std::string mapped((std::istreambuf_iterator<char>(maps)), std::istreambuf_iterator<char>());
  for (const char* library : {"lowbit_cuda", "cublas", "cudart"}) EXPECT_EQ(mapped.find(library), std::string::npos) << library;
}

}  // namespace
}  // namespace lowbit
