// The format a plan gives one tensor, for either kind of output: a ggml type for a GGUF file, or
// bitsandbytes' 4-bit storage (NF4 or FP4, its blocksize, with or without double quantization) for a
// checkpoint that transformers loads. ggml's float types (f32, f16, bf16) also name a tensor kept in
// plain floats, whichever the output.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/format.h"

namespace lowbit {

struct Bnb4bitFormat {
  bnb::QuantType quant_type = bnb::QuantType::nf4;
  int64_t blocksize = 64;
  bool double_quant = false;
  friend bool operator==(const Bnb4bitFormat&, const Bnb4bitFormat&) = default;
};

using TensorFormat = std::variant<GgmlType, Bnb4bitFormat>;

// The plan format of a registry format: its ggml type, or bitsandbytes 4-bit at blocksize 64 without
// double quantization; nullopt for int8 (a plan does not choose it).
std::optional<TensorFormat> tensor_format_of(FormatId id);
// The reference tools' own name of the format: "q4_K", "bf16", "nf4", "fp4".
std::string_view format_name(const TensorFormat& format);
// A name that tells every variant apart: "q4_K", "nf4-b64", "fp4-b128-dq".
std::string format_label(const TensorFormat& format);
// format_label's form back; nullopt when it names no format ("nf4" alone is NF4 at blocksize 64).
std::optional<TensorFormat> parse_format_label(std::string_view label);
// True for ggml's plain float types: the tensor is stored unquantized.
bool is_float_format(const TensorFormat& format);

}  // namespace lowbit
