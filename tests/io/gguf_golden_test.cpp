// Every GGUF file the team shares (golden quantizer vectors, the tiny model, real models in data/)
// parses, matches what manifest.json and the READMEs say, and re-writes byte for byte through Writer.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/gguf_test_util.h"
#include "lowbit/io/gguf.h"
#include "support/paths.h"

namespace lowbit::gguf {
namespace {

using nlohmann::ordered_json;

ordered_json load_manifest() {
  std::ifstream in(test::golden_ggml_dir() / "manifest.json");
  return ordered_json::parse(in);
}

std::vector<std::byte> read_all(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), {});
  std::vector<std::byte> out(raw.size());
  std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

std::vector<std::filesystem::path> every_shared_gguf() {
  std::vector<std::filesystem::path> paths;
  for (const auto& dir : {test::golden_ggml_dir(), test::golden_ggml_dir() / "model", test::shared_data_dir()})
    for (const auto& entry : std::filesystem::directory_iterator(dir))
      if (entry.path().extension() == ".gguf") paths.push_back(entry.path());
  std::sort(paths.begin(), paths.end());
  return paths;
}

const TensorInfo& tensor_named(const File& file, std::string_view name) {
  const TensorInfo* t = file.find_tensor(name);
  if (!t) throw std::runtime_error(fmt::format("{}: no tensor '{}'", file.label(), name));
  return *t;
}

TEST(GgufGolden, CaseFilesMatchTheManifest) {
  const ordered_json manifest = load_manifest();
  ASSERT_EQ(manifest["files"].size(), manifest["count"].get<size_t>());
  for (const auto& entry : manifest["files"]) {
    const auto path = test::golden_ggml_dir() / entry["file"].get<std::string>();
    SCOPED_TRACE(path.string());
    const File file(path);
    EXPECT_EQ(std::filesystem::file_size(path), entry["file_bytes"].get<uint64_t>());
    EXPECT_EQ(file.version(), 3u);
    EXPECT_EQ(file.alignment(), 32u);

    // Keys in README order, with their types.
    const auto& md = file.metadata();
    const std::vector<std::string> keys = {"golden.type", "golden.seed", "golden.rows", "golden.cols",
                                           "golden.imatrix", "golden.input", "golden.case", "golden.generator"};
    ASSERT_EQ(md.size(), keys.size());
    for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(md[i].key, keys[i]);
    EXPECT_EQ(*md[0].value.get_if<std::string>(), entry["type"].get<std::string>());
    EXPECT_EQ(*md[1].value.get_if<uint64_t>(), entry["seed"].get<uint64_t>());
    EXPECT_EQ(*md[2].value.get_if<uint32_t>(), entry["rows"].get<uint32_t>());
    EXPECT_EQ(*md[3].value.get_if<uint32_t>(), entry["cols"].get<uint32_t>());
    EXPECT_EQ(*md[4].value.get_if<bool>(), entry["imatrix"].get<bool>());
    EXPECT_EQ(*md[5].value.get_if<std::string>(), entry["input"].get<std::string>());
    EXPECT_EQ(*md[6].value.get_if<std::string>(), entry["case"].get<std::string>());
    EXPECT_NE(md[7].value.get_if<std::string>(), nullptr);

    // Tensors: input, [imatrix], quantized, dequantized; a rows × cols matrix has ne = [cols, rows].
    const int64_t rows = entry["rows"], cols = entry["cols"];
    const bool imatrix = entry["imatrix"];
    const auto type = ggml_type_from_name(entry["type"].get<std::string>());
    ASSERT_TRUE(type.has_value());
    std::vector<std::string> names = {"input", "quantized", "dequantized"};
    if (imatrix) names.insert(names.begin() + 1, "imatrix");
    ASSERT_EQ(file.tensors().size(), names.size());
    for (size_t i = 0; i < names.size(); ++i) EXPECT_EQ(file.tensors()[i].name, names[i]);

    const TensorInfo& input = tensor_named(file, "input");
    EXPECT_EQ(input.type, GgmlType::F32);
    EXPECT_EQ(input.ne, (Shape{cols, rows}));
    EXPECT_EQ(input.size, uint64_t(rows * cols * 4));
    if (imatrix) {
      const TensorInfo& weights = tensor_named(file, "imatrix");
      EXPECT_EQ(weights.type, GgmlType::F32);
      EXPECT_EQ(weights.ne, (Shape{cols}));
    }
    const TensorInfo& quantized = tensor_named(file, "quantized");
    EXPECT_EQ(quantized.type, *type);
    EXPECT_EQ(quantized.ne, (Shape{cols, rows}));
    EXPECT_EQ(quantized.size, entry["quantized_bytes"].get<uint64_t>());
    EXPECT_EQ(test::sha256_hex(file.data(quantized)), entry["quantized_sha256"].get<std::string>());
    const TensorInfo& dequantized = tensor_named(file, "dequantized");
    EXPECT_EQ(dequantized.type, GgmlType::F32);
    EXPECT_EQ(dequantized.ne, (Shape{cols, rows}));
    EXPECT_EQ(test::sha256_hex(file.data(dequantized)), entry["dequantized_sha256"].get<std::string>());
  }
}

TEST(GgufGolden, ModelFilesMatchTheManifest) {
  const ordered_json manifest = load_manifest();
  int checked = 0;
  for (const auto& entry : manifest["model"]) {
    if (!entry.contains("tensors")) continue;  // text.txt
    const auto path = test::golden_ggml_dir() / entry["file"].get<std::string>();
    SCOPED_TRACE(path.string());
    const File file(path);
    EXPECT_EQ(std::filesystem::file_size(path), entry["file_bytes"].get<uint64_t>());
    EXPECT_EQ(*file.find("general.architecture")->get_if<std::string>(), "llama");
    ASSERT_EQ(file.tensors().size(), entry["tensors"].size());
    size_t i = 0;
    for (const auto& [name, want] : entry["tensors"].items()) {  // manifest lists them in file order
      const TensorInfo& t = file.tensors()[i++];
      EXPECT_EQ(t.name, name);
      EXPECT_EQ(t.type, *ggml_type_from_name(want["type"].get<std::string>()));
      EXPECT_EQ(t.ne, want["ne"].get<Shape>());
      EXPECT_EQ(test::sha256_hex(file.data(t)), want["sha256"].get<std::string>()) << name;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 2);
  // README: the Q4_K_M file ends with quantization_version 2 and file_type 15, both u32.
  const File q4km(test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf");
  const auto& md = q4km.metadata();
  ASSERT_GE(md.size(), 2u);
  EXPECT_EQ(md[md.size() - 2].key, "general.quantization_version");
  EXPECT_EQ(*md[md.size() - 2].value.get_if<uint32_t>(), 2u);
  EXPECT_EQ(md.back().key, "general.file_type");
  EXPECT_EQ(*md.back().value.get_if<uint32_t>(), 15u);
}

TEST(GgufGolden, SharedDataModelsMatchTheirReadme) {
  const File stories(test::shared_data_dir() / "stories260K.gguf");
  EXPECT_EQ(stories.version(), 3u);
  EXPECT_EQ(stories.tensors().size(), 48u);
  for (const auto& t : stories.tensors()) EXPECT_EQ(t.type, GgmlType::F32) << t.name;
  EXPECT_EQ(*stories.find("general.architecture")->get_if<std::string>(), "llama");
  EXPECT_EQ(*stories.find("tokenizer.ggml.model")->get_if<std::string>(), "llama");
  EXPECT_EQ(stories.find("tokenizer.ggml.tokens")->get_if<Array>()->items.size(), 512u);

  const File bytes_model(test::shared_data_dir() / "lowbit-bytes-12M-bf16.gguf");
  EXPECT_EQ(bytes_model.find("general.file_type")->as_int(), 32);
  EXPECT_EQ(bytes_model.find("tokenizer.ggml.tokens")->get_if<Array>()->items.size(), 259u);
  int64_t parameters = 0;
  for (const auto& t : bytes_model.tensors()) {
    EXPECT_EQ(t.type, t.ne.size() == 1 ? GgmlType::F32 : GgmlType::BF16) << t.name;
    parameters += t.elements();
  }
  EXPECT_EQ(parameters, 12'852'736);
}

// ggml wrote these files; declaring the same keys and tensors in the same order must give the same bytes.
TEST(GgufGolden, RewritingReproducesEveryFileByteForByte) {
  const auto paths = every_shared_gguf();
  EXPECT_GE(paths.size(), 94u);  // 92 case files and 2 model files, plus the real models in data/
  test::TempDir dir;
  for (const auto& path : paths) {
    SCOPED_TRACE(path.string());
    const File original(path);
    const auto copy_path = dir / "copy.gguf";
    {
      Writer writer(copy_path);
      for (const auto& kv : original.metadata()) writer.set(kv.key, kv.value);
      for (const auto& t : original.tensors()) writer.add_tensor(t.name, t.type, t.ne);
      for (const auto& t : original.tensors()) writer.write_data(t.name, original.data(t));
      writer.finish();
    }
    const auto want = read_all(path);
    const auto got = read_all(copy_path);
    ASSERT_EQ(got.size(), want.size());
    const auto mismatch = std::ranges::mismatch(got, want);
    EXPECT_TRUE(mismatch.in1 == got.end()) << "first difference at byte " << (mismatch.in1 - got.begin());
  }
}

}  // namespace
}  // namespace lowbit::gguf
