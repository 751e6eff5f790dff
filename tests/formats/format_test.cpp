// The format registry: one row per FormatId, names that parse back, ggml ids that map both ways, and
// the columns that other code trusts (targets, importance matrices) agreeing with the codecs. The block
// sizes themselves are checked against ggml's bytes by the golden tests (ggml_codecs_test, gguf_golden_test).
#include <gtest/gtest.h>

#include <set>
#include <string>
#include <vector>

#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/format.h"
#include "lowbit/formats/ggml_codecs.h"

namespace lowbit {
namespace {

TEST(FormatRegistry, EveryIdHasOneRowAndItsNameParsesBack) {
  std::set<FormatId> ids;
  std::set<std::string_view> names;
  for (const FormatInfo& f : kFormats) {
    EXPECT_TRUE(ids.insert(f.id).second) << f.name;
    EXPECT_TRUE(names.insert(f.name).second) << f.name;
    EXPECT_EQ(&format_info(f.id), &f) << f.name;
    EXPECT_EQ(parse_format_id(f.name), f.id) << f.name;
    std::string upper(f.name);
    for (char& c : upper) c = char(std::toupper(c));
    EXPECT_EQ(parse_format_id(upper), f.id) << upper;  // "Q4_K" as llama.cpp's tools print it
    EXPECT_GT(f.block_elements, 0u);
    EXPECT_GT(f.block_bytes, 0u);
  }
  EXPECT_EQ(ids.size(), size_t(FormatId::int8) + 1);  // int8 is the last enumerator
  EXPECT_EQ(parse_format_id("q4_k_m"), std::nullopt);
  EXPECT_EQ(parse_format_id(""), std::nullopt);
}

TEST(FormatRegistry, GgmlIdsMapBothWays) {
  int defined = 0;
  for (uint32_t id = 0; id < kGgmlTypeCount + 8; ++id) {
    const FormatInfo* f = ggml_type_info(id);
    if (!f) continue;
    ++defined;
    EXPECT_EQ(uint32_t(*f->ggml), id);
    EXPECT_EQ(ggml_type_from_name(f->name), *f->ggml);
  }
  EXPECT_EQ(defined, 35);  // ggml's enum ggml_type less the 8 ids it removed
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u}) EXPECT_EQ(ggml_type_info(removed), nullptr) << removed;
  EXPECT_EQ(ggml_type_from_name("nf4"), std::nullopt);  // a registry name, but no ggml type
}

TEST(FormatRegistry, TargetsFollowTheFamily) {
  for (const FormatInfo& f : kFormats) {
    const bool bnb_family = f.family == FormatFamily::bnb_4bit || f.family == FormatFamily::bnb_int8;
    EXPECT_EQ(f.held_by(FormatTarget::gguf), f.ggml.has_value()) << f.name;
    EXPECT_EQ(bnb_family, !f.ggml.has_value()) << f.name;
    EXPECT_EQ(f.quantized, f.family != FormatFamily::plain) << f.name;
    // bitsandbytes checkpoints hold its own formats and the weights kept in f32, f16 or bf16
    const bool bnb_float = f.id == FormatId::f32 || f.id == FormatId::f16 || f.id == FormatId::bf16;
    EXPECT_EQ(f.held_by(FormatTarget::bnb), bnb_family || bnb_float) << f.name;
    EXPECT_EQ(is_bnb_format(f.id), bnb_family) << f.name;
    EXPECT_EQ(parse_bnb_format(f.name), bnb_family ? std::optional(f.id) : std::nullopt) << f.name;
  }
  for (const bnb::QuantType type : bnb::kQuantTypes) {
    EXPECT_EQ(format_info(bnb::format_id(type)).family, FormatFamily::bnb_4bit);
    EXPECT_EQ(bnb::quant_type_of(bnb::format_id(type)), type);
  }
  EXPECT_EQ(bnb::quant_type_of(FormatId::int8), std::nullopt);
}

TEST(FormatRegistry, ImportanceMatrixColumnMatchesTheQuantizers) {
  std::vector<float> x(256, 0.5f);
  x[3] = -1.0f;
  for (const FormatInfo& f : kFormats) {
    if (!f.ggml || !ggml_codec(*f.ggml)) continue;
    const GgmlType type = *f.ggml;
    EXPECT_EQ(ggml_requires_imatrix(type), f.needs_imatrix) << f.name;
    std::vector<std::byte> blocks(ggml_row_bytes(type, 256));
    if (f.needs_imatrix) {
      EXPECT_TRUE(ggml_codec(type)->uses_weights) << f.name;
      EXPECT_THROW(quantize_rows(type, x.data(), 1, 256, nullptr, blocks.data()), Error) << f.name;
    } else {
      EXPECT_NO_THROW(quantize_rows(type, x.data(), 1, 256, nullptr, blocks.data())) << f.name;
    }
  }
}

TEST(FormatRegistry, BitsPerWeightComeFromTheBlock) {
  EXPECT_DOUBLE_EQ(format_info(FormatId::q4_K).bits_per_weight(), 4.5);   // 144 bytes per 256 values
  EXPECT_DOUBLE_EQ(format_info(FormatId::iq1_s).bits_per_weight(), 1.5625);
  EXPECT_DOUBLE_EQ(format_info(FormatId::nf4).bits_per_weight(), 4.5);    // blocksize 64, f32 absmax
  EXPECT_DOUBLE_EQ(format_info(FormatId::bf16).bits_per_weight(), 16.0);
}

TEST(FormatRegistry, NamesAreTheReferenceToolsSpelling) {
  EXPECT_EQ(format_name(FormatId::q4_K), "q4_K");
  EXPECT_EQ(format_name(FormatId::iq2_xxs), "iq2_xxs");
  EXPECT_EQ(format_name(FormatId::nf4), "nf4");
  EXPECT_EQ(format_name(FormatId::int8), "int8");
  EXPECT_EQ(ggml_type_name(GgmlType::BF16), "bf16");
  EXPECT_EQ(bnb::quant_type_name(bnb::QuantType::fp4), "fp4");
}

}  // namespace
}  // namespace lowbit
