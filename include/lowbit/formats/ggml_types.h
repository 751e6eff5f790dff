// ggml's tensor types as GGUF stores them: the on-disk id, the name, and the block layout
// (elements per block, bytes per block). Known for every type, so a GGUF reader can size any tensor
// before a codec for it exists. Source: ggml include/ggml.h (enum ggml_type) and src/ggml-common.h.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace lowbit {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41, Q2_0 = 42,
};
inline constexpr uint32_t kGgmlTypeCount = 43;  // ids 4, 5, 31-33, 36-38 were removed from ggml

struct GgmlTypeInfo {
  GgmlType type;
  std::string_view name;   // ggml's spelling: "q4_K", "iq4_xs", "bf16"
  uint32_t block_elements; // values per block (1 for plain types)
  uint32_t block_bytes;    // bytes per block
  bool quantized;
};

inline constexpr GgmlTypeInfo kGgmlTypes[] = {
    {GgmlType::F32, "f32", 1, 4, false},          {GgmlType::F16, "f16", 1, 2, false},
    {GgmlType::Q4_0, "q4_0", 32, 18, true},       {GgmlType::Q4_1, "q4_1", 32, 20, true},
    {GgmlType::Q5_0, "q5_0", 32, 22, true},       {GgmlType::Q5_1, "q5_1", 32, 24, true},
    {GgmlType::Q8_0, "q8_0", 32, 34, true},       {GgmlType::Q8_1, "q8_1", 32, 36, true},
    {GgmlType::Q2_K, "q2_K", 256, 84, true},      {GgmlType::Q3_K, "q3_K", 256, 110, true},
    {GgmlType::Q4_K, "q4_K", 256, 144, true},     {GgmlType::Q5_K, "q5_K", 256, 176, true},
    {GgmlType::Q6_K, "q6_K", 256, 210, true},     {GgmlType::Q8_K, "q8_K", 256, 292, true},
    {GgmlType::IQ2_XXS, "iq2_xxs", 256, 66, true}, {GgmlType::IQ2_XS, "iq2_xs", 256, 74, true},
    {GgmlType::IQ3_XXS, "iq3_xxs", 256, 98, true}, {GgmlType::IQ1_S, "iq1_s", 256, 50, true},
    {GgmlType::IQ4_NL, "iq4_nl", 32, 18, true},   {GgmlType::IQ3_S, "iq3_s", 256, 110, true},
    {GgmlType::IQ2_S, "iq2_s", 256, 82, true},    {GgmlType::IQ4_XS, "iq4_xs", 256, 136, true},
    {GgmlType::I8, "i8", 1, 1, false},            {GgmlType::I16, "i16", 1, 2, false},
    {GgmlType::I32, "i32", 1, 4, false},          {GgmlType::I64, "i64", 1, 8, false},
    {GgmlType::F64, "f64", 1, 8, false},          {GgmlType::IQ1_M, "iq1_m", 256, 56, true},
    {GgmlType::BF16, "bf16", 1, 2, false},        {GgmlType::TQ1_0, "tq1_0", 256, 54, true},
    {GgmlType::TQ2_0, "tq2_0", 256, 66, true},    {GgmlType::MXFP4, "mxfp4", 32, 17, true},
    {GgmlType::NVFP4, "nvfp4", 64, 36, true},     {GgmlType::Q1_0, "q1_0", 128, 18, true},
    {GgmlType::Q2_0, "q2_0", 64, 18, true},
};

// The layout of a type id read from a file; nullopt for ids ggml does not (or no longer) define.
constexpr const GgmlTypeInfo* ggml_type_info(uint32_t id) {
  for (const auto& info : kGgmlTypes)
    if (uint32_t(info.type) == id) return &info;
  return nullptr;
}
constexpr const GgmlTypeInfo& ggml_type_info(GgmlType type) { return *ggml_type_info(uint32_t(type)); }
constexpr std::string_view ggml_type_name(GgmlType type) { return ggml_type_info(type).name; }

// Case-insensitive lookup by name ("Q4_K", "q4_k" and "q4_K" all match).
std::optional<GgmlType> ggml_type_from_name(std::string_view name);

}  // namespace lowbit
