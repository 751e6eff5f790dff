// The one registry of formats: every format lowbit reads or writes, ggml's types as GGUF stores them,
// bitsandbytes' nf4 / fp4 / int8, and the plain float and integer types. A format's name, family,
// block layout, on-disk ggml id, whether it needs an importance matrix and which outputs hold it are
// one row of kFormats; every list of formats in the tree derives from it. Adding a format is one row
// here, one family file in src/formats and one line in src/formats/ggml_codecs.cpp's codec table.
//
// Sources: ggml include/ggml.h (enum ggml_type), src/ggml-common.h (block sizes),
// ggml_quantize_requires_imatrix; bitsandbytes functional.py (quantize_4bit, int8_vectorwise_quant).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "lowbit/formats/ggml_types.h"

namespace lowbit {

// Spelled as the reference tools spell the format (ggml's type names, bitsandbytes' quant types).
enum class FormatId : uint8_t {
  f32, f16, bf16, f64, i8, i16, i32, i64,                             // plain values
  q4_0, q4_1, q5_0, q5_1, q8_0, q8_1,                                 // ggml legacy
  q2_K, q3_K, q4_K, q5_K, q6_K, q8_K,                                 // ggml k-quants
  iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs, iq3_s, iq4_nl, iq4_xs,  // ggml i-quants
  tq1_0, tq2_0, mxfp4, nvfp4, q1_0, q2_0,                             // ggml ternary, fp4, 1-2 bit
  nf4, fp4, int8,                                                     // bitsandbytes
};

// One family = one codec file in src/formats (and its header in include/lowbit/formats).
enum class FormatFamily : uint8_t {
  plain,         // stored as values: no codec beyond a conversion
  ggml_legacy,   // ggml_legacy.h
  ggml_kquants,  // ggml_kquants.h
  ggml_iq1, ggml_iq2, ggml_iq3, ggml_iq4,  // ggml_iq1.h ... ggml_iq4.h
  ggml_ternary,  // ggml_ternary.h
  ggml_fp4,      // ggml_fp4.h
  ggml_q1_q2,    // ggml_q1_q2.h
  bnb_4bit,      // bnb_4bit.h
  bnb_int8,      // bnb_int8.h
};

// The outputs that can hold a format (a bit set).
enum class FormatTarget : uint8_t { gguf = 1, bnb = 2 };
constexpr uint8_t operator|(FormatTarget a, FormatTarget b) { return uint8_t(uint8_t(a) | uint8_t(b)); }

struct FormatInfo {
  FormatId id;
  std::string_view name;           // the reference tools' spelling: "q4_K", "iq4_xs", "bf16", "nf4"
  FormatFamily family;
  uint32_t block_elements;         // values per block (1 for plain types; bnb 4-bit: the default blocksize)
  uint32_t block_bytes;            // bytes per block, scales included
  std::optional<GgmlType> ggml;    // the id a GGUF file stores; none for bitsandbytes' formats
  bool quantized;                  // false for plain types
  bool needs_imatrix;              // ggml_quantize_requires_imatrix: refused without importance weights
  uint8_t targets;                 // FormatTarget bits

  constexpr bool held_by(FormatTarget target) const { return (targets & uint8_t(target)) != 0; }
  constexpr double bits_per_weight() const { return 8.0 * block_bytes / block_elements; }
};

namespace format_registry {  // short names for the table's rows
constexpr uint8_t kGguf = uint8_t(FormatTarget::gguf), kBnb = uint8_t(FormatTarget::bnb), kBoth = kGguf | kBnb;
using F = FormatId;
using G = GgmlType;
using Fam = FormatFamily;

// The rows' order is the planner's: among GGUF formats of equal size and equal loss it keeps the
// earlier one (so q4_K before q4_0, q5_0 before q5_K), and lists and messages show them in this order.
inline constexpr FormatInfo kFormats[] = {
    // id, name, family, values and bytes per block, ggml id, quantized, needs imatrix, targets
    {F::q2_K, "q2_K", Fam::ggml_kquants, 256, 84, G::Q2_K, true, false, kGguf},
    {F::q3_K, "q3_K", Fam::ggml_kquants, 256, 110, G::Q3_K, true, false, kGguf},
    {F::iq4_xs, "iq4_xs", Fam::ggml_iq4, 256, 136, G::IQ4_XS, true, false, kGguf},
    {F::q4_K, "q4_K", Fam::ggml_kquants, 256, 144, G::Q4_K, true, false, kGguf},
    {F::q4_0, "q4_0", Fam::ggml_legacy, 32, 18, G::Q4_0, true, false, kGguf},
    {F::iq4_nl, "iq4_nl", Fam::ggml_iq4, 32, 18, G::IQ4_NL, true, false, kGguf},
    {F::q4_1, "q4_1", Fam::ggml_legacy, 32, 20, G::Q4_1, true, false, kGguf},
    {F::q5_0, "q5_0", Fam::ggml_legacy, 32, 22, G::Q5_0, true, false, kGguf},
    {F::q5_K, "q5_K", Fam::ggml_kquants, 256, 176, G::Q5_K, true, false, kGguf},
    {F::q5_1, "q5_1", Fam::ggml_legacy, 32, 24, G::Q5_1, true, false, kGguf},
    {F::q6_K, "q6_K", Fam::ggml_kquants, 256, 210, G::Q6_K, true, false, kGguf},
    {F::q8_0, "q8_0", Fam::ggml_legacy, 32, 34, G::Q8_0, true, false, kGguf},
    {F::f16, "f16", Fam::plain, 1, 2, G::F16, false, false, kBoth},
    {F::bf16, "bf16", Fam::plain, 1, 2, G::BF16, false, false, kBoth},
    {F::f32, "f32", Fam::plain, 1, 4, G::F32, false, false, kBoth},
    {F::iq1_s, "iq1_s", Fam::ggml_iq1, 256, 50, G::IQ1_S, true, true, kGguf},
    {F::iq1_m, "iq1_m", Fam::ggml_iq1, 256, 56, G::IQ1_M, true, false, kGguf},
    {F::iq2_xxs, "iq2_xxs", Fam::ggml_iq2, 256, 66, G::IQ2_XXS, true, true, kGguf},
    {F::iq2_xs, "iq2_xs", Fam::ggml_iq2, 256, 74, G::IQ2_XS, true, true, kGguf},
    {F::iq2_s, "iq2_s", Fam::ggml_iq2, 256, 82, G::IQ2_S, true, false, kGguf},
    {F::iq3_xxs, "iq3_xxs", Fam::ggml_iq3, 256, 98, G::IQ3_XXS, true, false, kGguf},
    {F::iq3_s, "iq3_s", Fam::ggml_iq3, 256, 110, G::IQ3_S, true, false, kGguf},
    {F::tq1_0, "tq1_0", Fam::ggml_ternary, 256, 54, G::TQ1_0, true, false, kGguf},
    {F::tq2_0, "tq2_0", Fam::ggml_ternary, 256, 66, G::TQ2_0, true, false, kGguf},
    {F::q1_0, "q1_0", Fam::ggml_q1_q2, 128, 18, G::Q1_0, true, false, kGguf},
    {F::q2_0, "q2_0", Fam::ggml_q1_q2, 64, 18, G::Q2_0, true, false, kGguf},
    {F::mxfp4, "mxfp4", Fam::ggml_fp4, 32, 17, G::MXFP4, true, false, kGguf},
    {F::nvfp4, "nvfp4", Fam::ggml_fp4, 64, 36, G::NVFP4, true, false, kGguf},
    // ggml types GGUF files may hold that lowbit reads (sizes them) but has no codec for
    {F::q8_1, "q8_1", Fam::ggml_legacy, 32, 36, G::Q8_1, true, false, kGguf},
    {F::q8_K, "q8_K", Fam::ggml_kquants, 256, 292, G::Q8_K, true, false, kGguf},
    {F::f64, "f64", Fam::plain, 1, 8, G::F64, false, false, kGguf},
    {F::i8, "i8", Fam::plain, 1, 1, G::I8, false, false, kGguf},
    {F::i16, "i16", Fam::plain, 1, 2, G::I16, false, false, kGguf},
    {F::i32, "i32", Fam::plain, 1, 4, G::I32, false, false, kGguf},
    {F::i64, "i64", Fam::plain, 1, 8, G::I64, false, false, kGguf},
    // bitsandbytes: 4-bit codes two to a byte plus one f32 absmax per block (blocksize 64 here; a
    // FormatSpec sets it); int8 rows with one f32 scale per row (SCB), not counted in the block.
    {F::nf4, "nf4", Fam::bnb_4bit, 64, 36, std::nullopt, true, false, kBnb},
    {F::fp4, "fp4", Fam::bnb_4bit, 64, 36, std::nullopt, true, false, kBnb},
    {F::int8, "int8", Fam::bnb_int8, 1, 1, std::nullopt, true, false, kBnb},
};
}  // namespace format_registry
using format_registry::kFormats;

// One format as a tensor is stored: the id, and for bitsandbytes' 4-bit formats its blocksize and
// whether the block scales are themselves quantized (double quantization).
struct FormatSpec {
  FormatId id = FormatId::nf4;
  int64_t blocksize = 64;     // bnb 4-bit only
  bool double_quant = false;  // bnb 4-bit only
  friend bool operator==(const FormatSpec&, const FormatSpec&) = default;
};

constexpr const FormatInfo& format_info(FormatId id) {
  for (const auto& info : kFormats)
    if (info.id == id) return info;
  return kFormats[0];  // unreachable: the registry test checks that every id has a row
}
constexpr std::string_view format_name(FormatId id) { return format_info(id).name; }

// The one name parser: a format's name, case-insensitively ("Q4_K", "q4_k" and "q4_K" all match);
// nullopt when no format has it.
std::optional<FormatId> parse_format_id(std::string_view name);

// nf4, fp4 and int8: the quantized formats a bitsandbytes checkpoint holds.
constexpr bool is_bnb_format(FormatId id) { return format_info(id).quantized && format_info(id).held_by(FormatTarget::bnb); }
// The bitsandbytes format of that name, or nullopt.
std::optional<FormatId> parse_bnb_format(std::string_view name);

// ---- ggml's on-disk ids, through the registry ----

// The row of a type id read from a file; null for ids ggml does not (or no longer) define.
constexpr const FormatInfo* ggml_type_info(uint32_t id) {
  for (const auto& info : kFormats)
    if (info.ggml && uint32_t(*info.ggml) == id) return &info;
  return nullptr;
}
constexpr const FormatInfo& ggml_type_info(GgmlType type) { return *ggml_type_info(uint32_t(type)); }
constexpr std::string_view ggml_type_name(GgmlType type) { return ggml_type_info(type).name; }
// The ggml type of that name (case-insensitive), or nullopt (also for nf4, fp4, int8).
std::optional<GgmlType> ggml_type_from_name(std::string_view name);

}  // namespace lowbit
