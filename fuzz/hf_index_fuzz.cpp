// libFuzzer target: model.safetensors.index.json of a sharded Hugging Face checkpoint. The two shards
// beside it are fixed and valid; the index must be checked against them, never trusted.
#include "fuzz_support.h"
#include "lowbit/core/error.h"
#include "lowbit/io/checkpoint.h"

namespace {

// A safetensors file holding one F32 [2] tensor named `name`.
std::string shard(const std::string& name) {
  const std::string header = R"({")" + name + R"(":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string st(8, '\0');
  for (int i = 0; i < 8; ++i) st[size_t(i)] = char((header.size() >> (8 * i)) & 0xff);
  return st + header + std::string(8, '\0');
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace lowbit;
  static const auto dir = [] {
    const auto d = lowbit::fuzz::scratch_dir() / "sharded";
    std::filesystem::create_directories(d);
    lowbit::fuzz::write_file(d / "model-00001-of-00002.safetensors", shard("a.weight"));
    lowbit::fuzz::write_file(d / "model-00002-of-00002.safetensors", shard("b.weight"));
    return d;
  }();
  fuzz::write_file(dir / "model.safetensors.index.json", data, size);
  try {
    const Checkpoint ckpt(dir);
    for (const auto& e : ckpt.tensors()) (void)ckpt.view(e.info->name);
  } catch (const Error&) {
  }
  return 0;
}
