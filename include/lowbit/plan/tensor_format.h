// The format a plan gives one tensor, for either kind of output, as the registry's FormatSpec
// (lowbit/formats/format.h): a ggml type for a GGUF file (blocksize and double quant left at their
// defaults), or bitsandbytes' 4-bit storage (nf4 or fp4, its blocksize, with or without double
// quantization) for a checkpoint that transformers loads. ggml's float types (f32, f16, bf16) also name
// a tensor kept in plain floats, whichever the output.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "lowbit/formats/format.h"

namespace lowbit {

// A plan's format of a ggml type.
constexpr FormatSpec format_spec(GgmlType type) { return {.id = ggml_type_info(type).id}; }
// The plan format of a registry format: its ggml type, or bitsandbytes 4-bit at blocksize 64 without
// double quantization; nullopt for int8 (a plan does not choose it).
std::optional<FormatSpec> plan_format_of(FormatId id);
// bitsandbytes' 4-bit storage (nf4, fp4), as opposed to a ggml type.
constexpr bool is_bnb_4bit(const FormatSpec& format) { return format_info(format.id).family == FormatFamily::bnb_4bit; }
// A name that tells every variant apart: "q4_K", "nf4-b64", "fp4-b128-dq" (plan.json's losses, merge --trained-on).
std::string format_label(const FormatSpec& format);
// format_label's form back; nullopt when it names no plan format ("nf4" alone is NF4 at blocksize 64).
std::optional<FormatSpec> parse_format_label(std::string_view label);
// True for ggml's plain float types: the tensor is stored unquantized.
bool is_float_format(const FormatSpec& format);

}  // namespace lowbit
