// lowbit's NaN/Inf policy in every job that writes weights: each class of value a destination cannot
// hold is refused with file, tensor, element and reason (before anything reaches the output path),
// or kept, reported and counted under --allow-nonfinite where the format can store it.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>

#include "lowbit/core/error.h"
#include "lowbit/core/half.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/quantize_gguf.h"
#include "support/paths.h"

namespace lowbit {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr int64_t kCols = 256, kRows = 2;
const char* kWeight = "blk.0.ffn_up.weight";
const char* kNorm = "blk.0.attn_norm.weight";

std::vector<float> smooth(size_t n) {
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = 0.1f * std::sin(0.37f * float(i));
  return x;
}

// A GGUF with one weight (kRows x kCols, stored as `type`) and one f32 norm.
void write_gguf_model(const std::filesystem::path& path, const std::vector<float>& weight, const std::vector<float>& norm,
                      GgmlType type = GgmlType::F32, const std::function<void(std::vector<std::byte>&)>& patch = {}) {
  std::vector<std::byte> bytes(ggml_row_bytes(type, kCols) * kRows);
  quantize_rows(type, weight.data(), kRows, kCols, nullptr, bytes.data());
  if (patch) patch(bytes);
  gguf::Writer w(path);
  w.set("general.architecture", {std::string("llama")});
  w.add_tensor(kNorm, GgmlType::F32, {kCols});
  w.add_tensor(kWeight, type, {kCols, kRows});
  w.write_data(kNorm, std::as_bytes(std::span(norm)));
  w.write_data(kWeight, bytes);
  w.finish();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

GgufQuantizeOptions to(GgmlType type, bool allow = false) {
  GgufQuantizeOptions o;
  o.selection = {.default_type = type};
  o.nonfinite.allow = allow;
  return o;
}

bool only_input_left(const test::TempDir& dir) { return std::distance(std::filesystem::directory_iterator(dir.path()), {}) == 1; }

// A refusal names the file, the tensor and the element, and leaves no output behind.
void expect_refused(const test::TempDir& dir, const std::function<void()>& job, const std::string& tensor,
                    const std::vector<std::string>& phrases) {
  const std::string m = message_of(job);
  EXPECT_NE(m.find("model.gguf"), std::string::npos) << m;
  EXPECT_NE(m.find("tensor '" + tensor + "'"), std::string::npos) << m;
  for (const auto& p : phrases) EXPECT_NE(m.find(p), std::string::npos) << "missing '" << p << "' in: " << m;
  EXPECT_TRUE(only_input_left(dir));
}

TEST(Nonfinite, InfWeightIntoQ4KAndQ8_0IsRefusedAtItsElement) {
  test::TempDir dir;
  auto w = smooth(kRows * kCols);
  w[kCols + 5] = kInf;
  write_gguf_model(dir / "model.gguf", w, smooth(kCols));
  const auto source = ModelSource::open(dir / "model.gguf");
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q8_0})
    expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(type)); }, kWeight,
                   {"Inf at row 1, column 5", std::string(ggml_type_name(type))});
}

TEST(Nonfinite, HugeFiniteWeightNeverWritesAnInfScale) {
  // 3.4e38 is finite: ggml's quantizers turn it into an Inf f16 scale (and 256 NaN weights in q4_K),
  // or overflow inside their search and write a finite scale that zeroes the block (q3_K, q6_K, iq4_xs).
  test::TempDir dir;
  auto w = smooth(kRows * kCols);
  w[7] = 3.4e38f;
  write_gguf_model(dir / "model.gguf", w, smooth(kCols));
  const auto source = ModelSource::open(dir / "model.gguf");
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::Q3_K, GgmlType::IQ4_XS, GgmlType::Q4_0})
    for (bool allow : {false, true})
      expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(type, allow)); }, kWeight,
                     {"block scale", "row 0, column 7", "even with --allow-nonfinite"});
}

TEST(Nonfinite, NaNWeightIsNoLongerAbsorbed) {
  test::TempDir dir;
  auto w = smooth(kRows * kCols);
  w[3] = kNaN;
  write_gguf_model(dir / "model.gguf", w, smooth(kCols));
  const auto source = ModelSource::open(dir / "model.gguf");
  for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::IQ4_XS, GgmlType::F16, GgmlType::BF16})
    expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(type)); }, kWeight, {"NaN at row 0, column 3"});
}

TEST(Nonfinite, F16OutputRefusesValuesBeyondItsRange) {
  test::TempDir dir;
  auto w = smooth(kRows * kCols);
  w[kCols + 9] = -70000.0f;
  w[10] = 65519.0f;  // rounds to 65504: fits
  write_gguf_model(dir / "model.gguf", w, smooth(kCols));
  const auto source = ModelSource::open(dir / "model.gguf");
  expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(GgmlType::F16)); }, kWeight,
                 {"-70000 is beyond the f16 range", "row 1, column 9"});
  // bf16 holds it; f32 too.
  EXPECT_NO_THROW(quantize_to_gguf(*source, dir / "bf16.gguf", to(GgmlType::BF16)));
}

TEST(Nonfinite, NaNNormCopiedAsItIsIsRefused) {
  test::TempDir dir;
  auto norm = smooth(kCols);
  norm[17] = kNaN;
  write_gguf_model(dir / "model.gguf", smooth(kRows * kCols), norm);
  const auto source = ModelSource::open(dir / "model.gguf");
  expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(GgmlType::Q4_K)); }, kNorm, {"NaN at", "column 17"});
  expect_refused(dir, [&] { dequantize_gguf(*source, dir / "out.safetensors", DType::f32); }, kNorm, {"NaN"});
}

TEST(Nonfinite, AllowKeepsCountsAndReportsWhatFloatOutputsHold) {
  test::TempDir dir;
  auto w = smooth(kRows * kCols);
  w[1] = kNaN;
  w[kCols + 2] = 1.0e6f;  // Inf in f16: kept as the format allows
  auto norm = smooth(kCols);
  norm[0] = -kInf;
  write_gguf_model(dir / "model.gguf", w, norm);
  const auto source = ModelSource::open(dir / "model.gguf");
  std::vector<std::string> reports;
  auto options = to(GgmlType::F16, true);
  options.nonfinite.report = [&](const std::string& line) { reports.push_back(line); };
  const auto report = quantize_to_gguf(*source, dir / "out.gguf", options);
  EXPECT_EQ(report.nonfinite.values, 3);
  EXPECT_EQ(report.nonfinite.tensors, 2);
  ASSERT_EQ(reports.size(), 2u);
  EXPECT_NE(reports[1].find(kWeight), std::string::npos) << reports[1];
  EXPECT_NE(reports[1].find("kept 2"), std::string::npos) << reports[1];
  const gguf::File out(dir / "out.gguf");
  const auto* h = reinterpret_cast<const uint16_t*>(out.data(*out.find_tensor(kWeight)).data());
  EXPECT_TRUE(std::isnan(f16_to_f32(h[1])));
  EXPECT_TRUE(std::isinf(f16_to_f32(h[kCols + 2])));

  // A NaN that ggml's q8_0 cannot absorb into a finite scale is still refused: no non-finite scale.
  auto q8 = to(GgmlType::Q8_0, true);
  w.assign(size_t(kRows * kCols), 0.5f);
  w[31] = kInf;
  write_gguf_model(dir / "inf.gguf", w, smooth(kCols));
  const auto inf_source = ModelSource::open(dir / "inf.gguf");
  EXPECT_NE(message_of([&] { quantize_to_gguf(*inf_source, dir / "q8.gguf", q8); }).find("block scale d would be"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(dir / "q8.gguf"));
}

TEST(Nonfinite, NaNScaleOfAQuantizedSourceIsRefusedWhenReadAndKeptAsNaNWhenAllowed) {
  test::TempDir dir;
  const uint16_t nan_bits = 0x7e00;
  write_gguf_model(dir / "model.gguf", smooth(kRows * kCols), smooth(kCols), GgmlType::Q8_0,
                   [&](std::vector<std::byte>& q) { std::memcpy(q.data() + 34 * 9, &nan_bits, 2); });  // block 9: row 1, column 32
  const auto source = ModelSource::open(dir / "model.gguf");
  expect_refused(dir, [&] { dequantize_gguf(*source, dir / "out.safetensors", DType::f32); }, kWeight,
                 {"block scale d = NaN", "row 1, column 32"});
  expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(GgmlType::Q4_K)); }, kWeight, {"block scale d = NaN"});
  expect_refused(dir, [&] { quantize_to_gguf(*source, dir / "out.gguf", to(GgmlType::Q8_0)); }, kWeight, {"block scale d = NaN"});

  const auto r = dequantize_gguf(*source, dir / "out.safetensors", DType::f32, Progress::none(), {.allow = true});
  EXPECT_EQ(r.nonfinite.values, 32);  // the block's 32 values
  const safetensors::File out(dir / "out.safetensors");
  const auto values = out.view(kWeight).as<float>();
  EXPECT_TRUE(std::isnan(values[kCols + 32]));
  EXPECT_FALSE(std::isnan(values[kCols + 31]));
}

// ---- importance matrices ----

void write_imatrix(const std::filesystem::path& path, std::vector<float> sums, float count = 4.0f) {
  write_imatrix_gguf(path, {{kWeight, std::move(sums), {count}}}, {"text"}, 1, 512);
}

TEST(Nonfinite, ImportanceMatrixValuesAreChecked) {
  test::TempDir dir;
  const std::pair<float, std::string> bad[] = {{kInf, "importance inf at column 6"}, {kNaN, "importance nan at column 6"},
                                               {-1.0f, "importance -0.25 at column 6"}};
  for (const auto& [value, phrase] : bad) {
    std::vector<float> sums(kCols, 1.0f);
    sums[6] = value;
    write_imatrix(dir / "imatrix.gguf", sums);
    const std::string m = message_of([&] { ImportanceMatrix::load(dir / "imatrix.gguf"); });
    EXPECT_NE(m.find("imatrix.gguf"), std::string::npos) << m;
    EXPECT_NE(m.find(kWeight), std::string::npos) << m;
    EXPECT_NE(m.find(phrase), std::string::npos) << m;
  }
  write_imatrix(dir / "imatrix.gguf", std::vector<float>(kCols, 0.0f));
  EXPECT_NE(message_of([&] { ImportanceMatrix::load(dir / "imatrix.gguf"); }).find("every importance is 0"), std::string::npos);
  // As llama-quantize: a weight that saw no rows (count 0) gets importances of 1, not zeros.
  write_imatrix(dir / "imatrix.gguf", std::vector<float>(kCols, 0.0f), 0.0f);
  const auto m = ImportanceMatrix::load(dir / "imatrix.gguf");
  EXPECT_EQ(m.find(kWeight)->weights, std::vector<float>(kCols, 1.0f));
}

// ---- bitsandbytes ----

const char* kLinear = "model.layers.0.mlp.up_proj.weight";

void write_plain(const std::filesystem::path& path, const std::vector<float>& weight, const std::vector<float>& norm) {
  safetensors::Writer::write_file(path, {{kLinear, TensorView::make(DType::f32, {4, 64}, std::as_bytes(std::span(weight)))},
                                         {"model.norm.weight", TensorView::make(DType::f32, {64}, std::as_bytes(std::span(norm)))}});
}

std::string bnb_refusal(const test::TempDir& dir, const std::string& format, bool allow = false) {
  const std::string m = message_of([&] {
    BnbQuantizeOptions o{.format = {.id = *parse_bnb_format(format)}};
    o.nonfinite.allow = allow;
    quantize_to_bnb(dir / "model.safetensors", dir / "out.safetensors", o);
  });
  EXPECT_NE(m.find("model.safetensors"), std::string::npos) << m;
  EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
  return m;
}

TEST(Nonfinite, BnbQuantizeNamesFileTensorElementAndTheRealReason) {
  test::TempDir dir;
  auto w = smooth(4 * 64);
  w[2 * 64 + 3] = kNaN;
  write_plain(dir / "model.safetensors", w, smooth(64));
  for (bool allow : {false, true}) {  // NF4 and int8 hold no NaN under any policy
    EXPECT_NE(bnb_refusal(dir, "nf4", allow).find("NaN at row 2, column 3"), std::string::npos);
    EXPECT_NE(bnb_refusal(dir, "int8", allow).find("NaN at row 2, column 3"), std::string::npos);
  }
  // A finite 99840 is not "NaN or Inf": it is beyond the float16 that bitsandbytes casts to.
  w[2 * 64 + 3] = 99840.0f;
  write_plain(dir / "model.safetensors", w, smooth(64));
  const std::string int8 = bnb_refusal(dir, "int8");
  EXPECT_NE(int8.find("99840 is beyond the f16 range"), std::string::npos) << int8;
  EXPECT_EQ(int8.find("NaN"), std::string::npos) << int8;
  EXPECT_NO_THROW(quantize_to_bnb(dir / "model.safetensors", dir / "nf4.safetensors", {.format = {.id = FormatId::nf4}}));  // nf4 scales are f32
  w[2 * 64 + 3] = -kInf;
  write_plain(dir / "model.safetensors", w, smooth(64));
  EXPECT_NE(bnb_refusal(dir, "nf4").find("-Inf at row 2, column 3"), std::string::npos);
}

TEST(Nonfinite, BnbNaNNormIsRefusedOrCountedWhenAllowed) {
  test::TempDir dir;
  auto norm = smooth(64);
  norm[5] = kNaN;
  write_plain(dir / "model.safetensors", smooth(4 * 64), norm);
  EXPECT_NE(bnb_refusal(dir, "nf4").find("model.norm.weight"), std::string::npos);
  BnbQuantizeOptions o{.format = {.id = FormatId::nf4}};
  o.nonfinite.allow = true;
  const auto r = quantize_to_bnb(dir / "model.safetensors", dir / "out.safetensors", o);
  EXPECT_EQ(r.nonfinite.values, 1);
  EXPECT_EQ(r.nonfinite.tensors, 1);
}

// A bitsandbytes file with one companion tensor's values changed by `patch`.
void patch_tensor(const std::filesystem::path& in, const std::filesystem::path& out, const std::string& name,
                  const std::function<void(std::vector<float>&)>& patch) {
  const safetensors::File file(in);
  std::vector<std::pair<std::string, TensorView>> tensors;
  std::vector<float> patched;
  for (const auto& t : file.tensors()) {
    TensorView v = file.view(t);
    if (t.name == name) {
      patched.assign(v.as<float>().begin(), v.as<float>().end());
      patch(patched);
      v = TensorView::make(v.dtype, v.shape, std::as_bytes(std::span(patched)));
    }
    tensors.emplace_back(t.name, v);
  }
  safetensors::Writer::write_file(out, tensors, file.metadata());
}

TEST(Nonfinite, BnbCheckpointStatisticsAreChecked) {
  test::TempDir dir;
  write_plain(dir / "model.safetensors", smooth(4 * 64), smooth(64));
  quantize_to_bnb(dir / "model.safetensors", dir / "nf4.safetensors", {.format = {.id = FormatId::nf4}});
  quantize_to_bnb(dir / "model.safetensors", dir / "dq.safetensors", {.format = {.id = FormatId::nf4, .double_quant = true}});
  quantize_to_bnb(dir / "model.safetensors", dir / "int8.safetensors", {.format = {.id = FormatId::int8}});
  const std::string absmax = std::string(kLinear) + ".absmax", nested = std::string(kLinear) + ".nested_absmax";
  const std::string scb = "model.layers.0.mlp.up_proj.SCB";
  struct Case { std::string from, tensor; float value; std::string phrase; };
  const Case cases[] = {{"nf4", absmax, kNaN, "absmax NaN at element 1"},
                        {"dq", nested, kInf, "nested_absmax Inf at element 0"},
                        {"int8", scb, kNaN, "SCB NaN at element 1"},
                        {"int8", scb, 1.0e6f, "1e+06 is beyond the f16 range"}};
  for (const auto& c : cases) {
    patch_tensor(dir / (c.from + ".safetensors"), dir / "bad.safetensors", c.tensor,
                 [&](std::vector<float>& v) { v[std::min<size_t>(1, v.size() - 1)] = c.value; });
    const std::string m = message_of([&] { dequantize_bnb(dir / "bad.safetensors", dir / "out.safetensors", std::nullopt); });
    EXPECT_NE(m.find("bad.safetensors"), std::string::npos) << m;
    EXPECT_NE(m.find(c.phrase), std::string::npos) << c.phrase << " in: " << m;
    EXPECT_FALSE(std::filesystem::exists(dir / "out.safetensors"));
    const auto r = dequantize_bnb(dir / "bad.safetensors", dir / "out.safetensors", std::nullopt, Progress::none(), {.allow = true});
    EXPECT_GE(r.nonfinite.values, 1) << c.phrase;
    std::filesystem::remove(dir / "out.safetensors");
  }
}

}  // namespace
}  // namespace lowbit
