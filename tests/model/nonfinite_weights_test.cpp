// A model holding a NaN or Inf weight (or block scale) is refused when loaded for evaluation, naming
// file, tensor and element, instead of evaluating to "perplexity nan".
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <limits>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"
#include "lowbit/model/llama.h"
#include "support/paths.h"

namespace lowbit {
namespace {

// `in` rewritten to `out` with tensor `name` stored as `type` and its bytes changed by `patch`.
void copy_patched(const std::filesystem::path& in, const std::filesystem::path& out, const std::string& name, GgmlType type,
                  const std::function<void(std::vector<std::byte>&)>& patch) {
  const gguf::File file(in);
  gguf::Writer w(out);
  for (const auto& kv : file.metadata())
    if (kv.key != "general.alignment") w.set(kv.key, kv.value);
  for (const auto& t : file.tensors()) w.add_tensor(t.name, t.name == name ? type : t.type, t.ne);
  for (const auto& t : file.tensors()) {
    const auto bytes = file.data(t);
    if (t.name != name) {
      w.write_data(t.name, bytes);
      continue;
    }
    std::vector<std::byte> data(bytes.begin(), bytes.end());
    if (type != t.type) {  // f32 -> a block type
      const auto* x = reinterpret_cast<const float*>(bytes.data());
      data.assign(gguf::tensor_bytes(type, t.ne), std::byte{0});
      quantize_rows(type, x, t.elements() / t.ne[0], t.ne[0], nullptr, data.data());
    }
    patch(data);
    w.write_data(t.name, data);
  }
  w.finish();
}

std::string load_error(const std::filesystem::path& path) {
  try {
    LlamaModel::load(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "(loaded)";
}

TEST(NonfiniteWeights, NaNNormIsRefusedWhenLoaded) {
  test::TempDir dir;
  const auto tiny = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  ASSERT_NO_THROW(LlamaModel::load(tiny));
  copy_patched(tiny, dir / "nan.gguf", "blk.0.attn_norm.weight", GgmlType::F32, [](std::vector<std::byte>& b) {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    std::memcpy(b.data() + 4 * 3, &nan, 4);
  });
  const std::string m = load_error(dir / "nan.gguf");
  EXPECT_NE(m.find("nan.gguf: tensor 'blk.0.attn_norm.weight': NaN at row 0, column 3"), std::string::npos) << m;
}

TEST(NonfiniteWeights, NaNBlockScaleIsRefusedWhenLoaded) {
  test::TempDir dir;
  const auto tiny = test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf";
  copy_patched(tiny, dir / "q8.gguf", "blk.1.ffn_up.weight", GgmlType::Q8_0, [](std::vector<std::byte>&) {});
  ASSERT_NO_THROW(LlamaModel::load(dir / "q8.gguf"));
  copy_patched(tiny, dir / "nan.gguf", "blk.1.ffn_up.weight", GgmlType::Q8_0, [](std::vector<std::byte>& b) {
    const uint16_t inf = 0x7c00;
    std::memcpy(b.data() + 34, &inf, 2);  // block 1's d
  });
  const std::string m = load_error(dir / "nan.gguf");
  EXPECT_NE(m.find("tensor 'blk.1.ffn_up.weight': block scale d = Inf (the q8_0 block at row 0, column 32)"), std::string::npos) << m;
}

}  // namespace
}  // namespace lowbit
