// The names and bytes of bitsandbytes checkpoints, as transformers saves and loads them, and the one
// reader of such a checkpoint (BnbReader), which hands each weight to the codecs to dequantize.
//
// A 4-bit Linear weight W (module <m>, W = "<m>.weight") is stored as:
//   W                                  U8 [ceil(n/2), 1]  packed codes, first element in the high nibble
//   W.absmax                           F32 [blocks] (U8 [blocks] with double quant: 8-bit codes)
//   W.quant_map                        F32 [16]          the NF4 or FP4 codebook
//   W.nested_absmax, W.nested_quant_map  (double quant) F32 [ceil(blocks/256)], F32 [256]
//   W.quant_state.bitsandbytes__nf4    U8 [len]          json.dumps of the quant state (below)
// An LLM.int8 weight: W as I8 [out, in] (CB), "<m>.SCB" F32 [out], "<m>.weight_format" U8 scalar 0 ("row").
#pragma once

#include <array>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "lowbit/core/dtype.h"
#include "lowbit/core/error.h"
#include "lowbit/core/tensor.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_4bit_packed.h"
#include "lowbit/formats/format.h"
#include "lowbit/io/checkpoint.h"

namespace lowbit::bnb {

// The non-tensor part of a 4-bit quant state (QuantState.as_dict(packed=True)).
struct QuantStateJson {
  std::string quant_type;           // "nf4" or "fp4"
  int blocksize = 64;
  DType dtype = DType::bf16;        // the weight's original dtype, which dequantization returns
  Shape shape;                      // the weight's logical shape
  std::optional<float> nested_offset;  // set with double quant
  int nested_blocksize = 256;
};

// Exactly the bytes bitsandbytes writes: Python's json.dumps with ", " and ": " separators, keys in
// insertion order, floats as Python's repr. Throws for a dtype bitsandbytes cannot name.
std::string pack_quant_state(const QuantStateJson& state);
// Reads a quant state; `where` names the file and tensor in errors.
QuantStateJson parse_quant_state(std::string_view json, const ErrorContext& where);

// Python's repr of a float: the shortest digits that round-trip, in fixed notation for
// 1e-4 <= |x| < 1e16 and scientific ("1e-05", "1.5e+16") otherwise.
std::string python_float_repr(double x);

// PyTorch's name for a dtype as bitsandbytes and transformers write it ("bfloat16").
std::string_view torch_dtype_name(DType dtype);

// "<m>.weight" -> "<m>": the module whose SCB and weight_format sit beside an int8 weight.
inline std::string module_of(std::string_view weight) {
  return std::string(weight.ends_with(".weight") ? weight.substr(0, weight.size() - 7) : weight);
}

// Key suffixes of the companions of a 4-bit weight.
inline constexpr std::string_view kAbsmax = ".absmax";
inline constexpr std::string_view kQuantMap = ".quant_map";
inline constexpr std::string_view kNestedAbsmax = ".nested_absmax";
inline constexpr std::string_view kNestedQuantMap = ".nested_quant_map";
inline std::string quant_state_key(std::string_view quant_type) { return std::string(".quant_state.bitsandbytes__") + std::string(quant_type); }

// config.json's "quantization_config" for a pre-quantized bitsandbytes model.
struct QuantizationConfig {
  FormatId format = FormatId::nf4;  // nf4, fp4 or int8
  bool double_quant = false;
  DType compute_dtype = DType::bf16;
  std::vector<std::string> skip_modules;  // llm_int8_skip_modules
  double int8_threshold = 6.0;
};
nlohmann::ordered_json quantization_config(const QuantizationConfig& config);

}  // namespace lowbit::bnb

namespace lowbit {

class ValueGuard;

// The one reader of a bitsandbytes checkpoint's weights: the checkpoint's tensors by name, what each
// bitsandbytes weight is made of, and its values in its recorded dtype. `inspect`, `dequantize` and
// a ModelSource over the checkpoint all read it through this class.
class BnbReader {
 public:
  explicit BnbReader(const Checkpoint& ckpt);
  // Whether a checkpoint holds bitsandbytes weights at all: a 4-bit quant state or an int8 SCB.
  static bool holds_quantized_weights(const Checkpoint& ckpt);

  const Checkpoint::Entry* find(const std::string& name) const {
    auto it = by_name_.find(name);
    return it == by_name_.end() ? nullptr : it->second;
  }
  TensorView view(const Checkpoint::Entry& e) const { return e.shard->view(*e.info); }

  // The quant state tensor of a 4-bit weight, or null.
  const Checkpoint::Entry* quant_state(const std::string& weight) const;
  // The SCB of an int8 weight, or null.
  const Checkpoint::Entry* scb(const std::string& weight) const;

  // Names of the companion tensors: they disappear from the output.
  std::vector<std::string> companions(const std::string& weight) const;

  // Whether `weight` is a 4-bit or an LLM.int8 weight (not a float tensor or a companion).
  bool quantized(const std::string& weight) const;
  // The registry's format of a quantized weight (nf4, fp4 or int8), nullopt for any other tensor.
  std::optional<FormatId> format(const std::string& weight) const;
  // A quantized weight's logical shape and the dtype it dequantizes to: a 4-bit weight's recorded one;
  // for int8, which records none, the model's own (config.json), else float16 as bitsandbytes computes in.
  Shape logical_shape(const std::string& weight) const;
  DType recorded_dtype(const std::string& weight) const;
  // A quantized weight dequantized to `to` (its recorded dtype by default), its statistics checked by
  // `guard` first; the file is named in every error.
  Tensor dequantize(const std::string& weight, std::optional<DType> to, ValueGuard& guard) const;

  // The JSON part of a 4-bit weight's quant state (a uint8 tensor holding bitsandbytes' json.dumps).
  bnb::QuantStateJson quant_state_json(const std::string& weight) const;
  // Rebuilds bitsandbytes' QuantState from the companions of a 4-bit weight.
  bnb::Bnb4bitState state_4bit(const std::string& weight) const;
  // A 4-bit weight's stored bytes, viewed in the checkpoint: nullopt for any other tensor, and for
  // double quantization over another nested map or grouping than bitsandbytes' own (which the GPU's
  // kernels assume). Throws, naming the file and tensor, when the parts' sizes disagree with the quant state.
  std::optional<bnb::Packed4bitView> packed_4bit(const std::string& weight) const;

 private:
  const Checkpoint::Entry* require(const std::string& name) const;
  std::vector<float> float_vector(const std::string& name) const;
  template <size_t N>
  std::array<float, N> floats(const std::string& name) const;

  const Checkpoint& ckpt_;
  DType int8_dtype_;
  std::unordered_map<std::string, const Checkpoint::Entry*> by_name_;
};

}  // namespace lowbit
