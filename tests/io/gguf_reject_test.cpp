// One forged file per rejection rule of the GGUF reader: each must fail with a lowbit::Error naming the
// file and the problem, never crash or allocate what the input merely claims.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "io/gguf_test_util.h"
#include "lowbit/io/gguf.h"

namespace lowbit::gguf {
namespace {

using test::expect_gguf_rejected;
using test::GgufBytes;
using T = GgmlType;

constexpr uint32_t kString = uint32_t(ValueType::string), kArray = uint32_t(ValueType::array),
                   kU32 = uint32_t(ValueType::u32), kBool = uint32_t(ValueType::boolean);

// One KV, then the given tensors (each F32 [8] = 32 bytes, at the offsets given), padding and data.
GgufBytes with_tensors(std::vector<std::pair<std::string, uint64_t>> tensors, size_t data_bytes) {
  GgufBytes b;
  b.header(int64_t(tensors.size()), 1).kv_u32("k", 1);
  for (const auto& [name, offset] : tensors) b.tensor_info(name, {8}, T::F32, offset);
  return std::move(b.pad_to(32).zeros(data_bytes));
}

// A file whose only content is one KV built by `value` (key "key", type tag already written).
template <class Fill>
std::vector<std::byte> one_kv(uint32_t type, Fill fill) {
  GgufBytes b;
  b.header(0, 1).str("key").u32(type);
  fill(b);
  return b.bytes();
}

// One tensor whose info is written by `fill` after its name.
template <class Fill>
std::vector<std::byte> one_tensor(std::string_view name, Fill fill, size_t data_bytes = 32) {
  GgufBytes b;
  b.header(1, 0).str(name);
  fill(b);
  return b.pad_to(32).zeros(data_bytes).bytes();
}

TEST(GgufReject, ValidForgedFilesParse) {
  const File two = File::parse(with_tensors({{"a", 0}, {"b", 32}}, 64).bytes(), "forged.gguf");
  EXPECT_EQ(two.tensors().size(), 2u);
  EXPECT_EQ(two.data_offset(), 128u);  // 24 header + 17 KV + 2 × 33 infos = 107, padded to 32
  // Version 2 has the same layout and is still accepted, as ggml does.
  GgufBytes v2;
  v2.header(0, 1, 2).kv_u32("k", 1);
  EXPECT_EQ(File::parse(v2.bytes(), "v2").version(), 2u);
  // A tensor-less file may end right after its metadata (ggml pads only when there are tensors).
  EXPECT_EQ(File::parse(v2.bytes(), "v2").metadata().size(), 1u);
  // The last tensor's trailing padding may be absent: only its bytes must be in the file.
  GgufBytes short_pad;
  short_pad.header(1, 0).tensor_info("a", {3}, T::F32, 0).pad_to(32).zeros(12);
  EXPECT_EQ(File::parse(short_pad.bytes(), "short-pad").tensors().size(), 1u);
  // 256-byte names and 8-deep arrays are the limits, and are accepted.
  EXPECT_NO_THROW(File::parse(one_tensor(std::string(256, 'n'), [](GgufBytes& b) { b.u32(1).i64(8).u32(0).u64(0); }), "long"));
  auto nested = one_kv(kArray, [](GgufBytes& b) {
    for (int i = 0; i < 7; ++i) b.u32(kArray).u64(1);
    b.u32(kU32).u64(1).u32(5);
  });
  EXPECT_NO_THROW(File::parse(nested, "deep"));
}

TEST(GgufReject, Header) {
  expect_gguf_rejected({std::byte('G'), std::byte('G')}, {"magic runs past the end of the file"});
  auto bad_magic = with_tensors({}, 0).bytes();
  bad_magic[3] = std::byte('X');
  expect_gguf_rejected(bad_magic, {"not a GGUF file", "magic \"GGUF\""});
  GgufBytes truncated;
  truncated.header(0, 0);
  auto cut = truncated.bytes();
  cut.resize(20);
  expect_gguf_rejected(cut, {"metadata count runs past the end", "at byte 16"});
}

TEST(GgufReject, Version) {
  for (uint32_t version : {0x1u, 0x4u, 0x10001u}) {
    GgufBytes b;
    b.header(0, 0, version);
    expect_gguf_rejected(b.bytes(), {fmt::format("GGUF version {} is not supported", version), "version 2 or 3"});
  }
  GgufBytes swapped;
  swapped.header(0, 0, 0x03000000);  // version 3 written big-endian
  expect_gguf_rejected(swapped.bytes(), {"byte-swapped", "big-endian"});
}

TEST(GgufReject, Counts) {
  GgufBytes negative_tensors, negative_kv, absurd_kv, absurd_tensors;
  expect_gguf_rejected(negative_tensors.header(-1, 0).bytes(), {"tensor count -1 is negative"});
  expect_gguf_rejected(negative_kv.header(0, -5).bytes(), {"metadata count -5 is negative"});
  expect_gguf_rejected(absurd_kv.header(0, int64_t(1) << 40).zeros(100).bytes(), {"metadata count 1099511627776 cannot fit"});
  expect_gguf_rejected(absurd_tensors.header(INT64_MAX, 0).zeros(100).bytes(), {"tensor count", "cannot fit"});
}

TEST(GgufReject, Keys) {
  GgufBytes empty, duplicate, past_eof;
  expect_gguf_rejected(empty.header(0, 1).str("").u32(kU32).u32(1).bytes(), {"metadata key is empty", "at byte 24"});
  expect_gguf_rejected(duplicate.header(0, 2).kv_u32("k", 1).kv_u32("k", 2).bytes(), {"tensor 'k'", "duplicate metadata key"});
  expect_gguf_rejected(past_eof.header(0, 1).u64(uint64_t(1) << 62).zeros(16).bytes(), {"key of 4611686018427387904 bytes runs past"});
}

TEST(GgufReject, ValueTypes) {
  expect_gguf_rejected(one_kv(13, [](GgufBytes& b) { b.u32(0); }), {"'key'", "value type 13 is not a GGUF value type"});
  expect_gguf_rejected(one_kv(kArray, [](GgufBytes& b) { b.u32(99).u64(0); }), {"array element type 99 is not"});
  expect_gguf_rejected(one_kv(kBool, [](GgufBytes& b) { b.u8(2); }), {"bool value is 2", "0 or 1"});
  expect_gguf_rejected(one_kv(kU32, [](GgufBytes& b) { b.u8(1); }), {"u32 value runs past the end"});
}

TEST(GgufReject, StringsAndArraysPastTheEnd) {
  expect_gguf_rejected(one_kv(kString, [](GgufBytes& b) { b.u64(uint64_t(1) << 62).zeros(8); }),
                       {"'key'", "string value of 4611686018427387904 bytes runs past"});
  expect_gguf_rejected(one_kv(kString, [](GgufBytes& b) { b.u64(9).zeros(8); }), {"string value of 9 bytes runs past"});
  expect_gguf_rejected(one_kv(kArray, [](GgufBytes& b) { b.u32(kU32).u64(uint64_t(1) << 60).zeros(64); }),
                       {"array length 1152921504606846976 cannot fit"});
  // Strings take at least their 8-byte length each, so 9 cannot fit in 64 bytes.
  expect_gguf_rejected(one_kv(kArray, [](GgufBytes& b) { b.u32(kString).u64(9).zeros(64); }), {"array length 9 cannot fit"});
  expect_gguf_rejected(one_kv(kArray, [](GgufBytes& b) { b.u32(kArray).u64(UINT64_MAX).zeros(64); }), {"array length", "cannot fit"});
}

TEST(GgufReject, ArraysNestedTooDeep) {
  auto nine_deep = one_kv(kArray, [](GgufBytes& b) {
    for (int i = 0; i < 8; ++i) b.u32(kArray).u64(1);
    b.u32(kU32).u64(1).u32(5);
  });
  expect_gguf_rejected(nine_deep, {"'key'", "arrays nest deeper than 8 levels"});
}

TEST(GgufReject, Alignment) {
  GgufBytes wrong_type, not_power, zero;
  wrong_type.header(0, 1).str("general.alignment").u32(uint32_t(ValueType::u64)).u64(32);
  expect_gguf_rejected(wrong_type.bytes(), {"general.alignment", "alignment is of type u64", "expected u32"});
  expect_gguf_rejected(not_power.header(0, 1).kv_u32("general.alignment", 48).bytes(), {"alignment 48 is not a power of two"});
  expect_gguf_rejected(zero.header(0, 1).kv_u32("general.alignment", 0).bytes(), {"alignment 0 is not a power of two"});
  // With alignment 64 a tensor at offset 32 is misaligned, although 32 would do by default.
  GgufBytes b;
  b.header(2, 1).kv_u32("general.alignment", 64).tensor_info("a", {8}, T::F32, 0).tensor_info("b", {8}, T::F32, 32);
  expect_gguf_rejected(b.pad_to(64).zeros(128).bytes(), {"tensor 'b'", "data offset 32 is not aligned to 64", "offset 64"});
}

TEST(GgufReject, TensorNames) {
  auto info = [](GgufBytes& b) { b.u32(1).i64(8).u32(0).u64(0); };
  expect_gguf_rejected(one_tensor("", info), {"tensor '#0'", "tensor name is empty"});
  expect_gguf_rejected(one_tensor(std::string(257, 'n'), info), {"tensor name is 257 bytes long", "at most 256"});
  expect_gguf_rejected(with_tensors({{"a", 0}, {"a", 32}}, 64).bytes(), {"tensor 'a'", "duplicate tensor name"});
  GgufBytes past_eof;
  past_eof.header(1, 0).u64(1000).zeros(40);
  expect_gguf_rejected(past_eof.bytes(), {"tensor name of 1000 bytes runs past"});
}

TEST(GgufReject, TensorShapes) {
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(0).u32(0).u64(0); }), {"tensor 't'", "n_dims is 0", "1 to 4"});
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(5).i64(1).i64(1).i64(1).i64(1).i64(1).u32(0).u64(0); }),
                       {"n_dims is 5"});
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(2).i64(8).i64(-2).u32(0).u64(0); }), {"ne[1] = -2 is negative"});
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(3).i64(int64_t(1) << 32).i64(int64_t(1) << 31).i64(4).u32(0).u64(0); }),
                       {"tensor 't'", "overflows"});
  // Fits int64 elements but not a byte count: 2^62 f64 values.
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(1).i64(int64_t(1) << 62).u32(28).u64(0); }), {"overflows"});
}

TEST(GgufReject, TensorTypes) {
  for (uint32_t id : {4u, 31u, 43u, 0xffffffffu}) {
    expect_gguf_rejected(one_tensor("t", [&](GgufBytes& b) { b.u32(1).i64(256).u32(id).u64(0); }),
                         {fmt::format("ggml type id {} is not defined", id)});
  }
  expect_gguf_rejected(one_tensor("t", [](GgufBytes& b) { b.u32(2).i64(33).i64(2).u32(uint32_t(T::Q4_0)).u64(0); }),
                       {"tensor 't'", "not a whole number of q4_0 blocks", "a multiple of 32"});
  GgufBytes cut;  // a name long enough that the tensor count passes the size check
  cut.header(1, 0).str("a-name-of-twenty-five-byte").u32(1).i64(1);
  expect_gguf_rejected(cut.bytes(), {"ggml type runs past the end"});
}

TEST(GgufReject, TensorOffsets) {
  expect_gguf_rejected(with_tensors({{"a", 0}, {"b", 16}}, 64).bytes(), {"tensor 'b'", "data offset 16 is not aligned to 32"});
  expect_gguf_rejected(with_tensors({{"a", 0}, {"b", 64}}, 128).bytes(), {"tensor 'b'", "leaves a gap", "offset 32"});
  expect_gguf_rejected(with_tensors({{"a", 0}, {"b", 0}}, 64).bytes(), {"tensor 'b'", "overlaps", "offset 32"});
  expect_gguf_rejected(with_tensors({{"a", 32}, {"b", 0}}, 64).bytes(), {"tensor 'a'", "data offset 32"});
  expect_gguf_rejected(with_tensors({{"a", 0}}, 0).bytes(), {"tensor 'a'", "32 data bytes run past the end of the file"});
  expect_gguf_rejected(with_tensors({{"a", 0}, {"b", 32}}, 40).bytes(), {"tensor 'b'", "run past the end of the file"});
  // The file ends at the last tensor info, before the padding that starts the data section.
  GgufBytes unpadded;
  unpadded.header(1, 0).tensor_info("a", {0}, T::F32, 0);
  expect_gguf_rejected(unpadded.bytes(), {"data section starts past the end of the file"});
}

TEST(GgufReject, BytesAfterTheLastTensor) {
  // Padding up to the alignment after the last tensor is what ggml and gguf-py write.
  GgufBytes padded;
  padded.header(1, 0).tensor_info("a", {3}, T::F32, 0).pad_to(32).zeros(32);
  EXPECT_EQ(File::parse(padded.bytes(), "padded").tensors().size(), 1u);
  expect_gguf_rejected(with_tensors({{"a", 0}, {"b", 32}}, 65).bytes(), {"1 bytes follow the last tensor's data", "at most 192 bytes"});
  // A tensor count one short read the last tensor info as data, 32 bytes off, and exited 0.
  GgufBytes one_short;
  one_short.header(1, 1).kv_u32("k", 1).tensor_info("a", {8}, T::F32, 0).tensor_info("b", {8}, T::F32, 32).pad_to(32).zeros(64);
  expect_gguf_rejected(one_short.bytes(), {"bytes follow the last tensor's data"});
  // Metadata-only files may be padded to the alignment, no further.
  GgufBytes meta;
  meta.header(0, 1).kv_u32("k", 1).pad_to(32);
  EXPECT_NO_THROW(File::parse(meta.bytes(), "meta"));
  meta.zeros(1);
  expect_gguf_rejected(meta.bytes(), {"1 bytes follow the last tensor's data"});
}

TEST(GgufReject, MissingFileNamesThePath) {
  try {
    File file("/nonexistent/dir/model.gguf");
    ADD_FAILURE();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/dir/model.gguf"), std::string::npos);
  }
}

}  // namespace
}  // namespace lowbit::gguf
