// Which ggml type each tensor gets: llama.cpp's named file types ("mixes": Q4_K_M, Q3_K_S, ...) with
// the per-tensor choices llama-quantize makes for dense models, a uniform type (`--format`, like
// llama-quantize --pure), user overrides (`--tensor-type GLOB=TYPE`, first match wins), and the
// fallback for rows a block type cannot tile. Source: llama.cpp src/llama-quant.cpp
// (llama_tensor_get_type, llama_tensor_get_type_impl, tensor_type_fallback, tensor_requires_imatrix and
// llama_ftype_get_default_type as of llama.cpp 0c1e57098, the copy llama-cpp-python 0.3.36 vendors; its
// IQ2 rules are those of 007dbbf3). Not followed: the arch-specific rules (Falcon, GLM5-next,
// BailingMoE3) and the 70B-only bump of attn_v to q5_K.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "lowbit/core/tensor.h"
#include "lowbit/formats/format.h"

namespace lowbit {

// A llama.cpp file type: its name, the `general.file_type` id it writes, and its default tensor type.
struct LlamaMix {
  std::string_view name;
  uint32_t file_type;
  GgmlType default_type;
};

inline constexpr LlamaMix kLlamaMixes[] = {
    {"Q4_0", 2, GgmlType::Q4_0},     {"Q4_1", 3, GgmlType::Q4_1},     {"Q8_0", 7, GgmlType::Q8_0},
    {"Q5_0", 8, GgmlType::Q5_0},     {"Q5_1", 9, GgmlType::Q5_1},     {"Q2_K", 10, GgmlType::Q2_K},
    {"Q3_K_S", 11, GgmlType::Q3_K},  {"Q3_K_M", 12, GgmlType::Q3_K},  {"Q3_K_L", 13, GgmlType::Q3_K},
    {"Q4_K_S", 14, GgmlType::Q4_K},  {"Q4_K_M", 15, GgmlType::Q4_K},  {"Q5_K_S", 16, GgmlType::Q5_K},
    {"Q5_K_M", 17, GgmlType::Q5_K},  {"Q6_K", 18, GgmlType::Q6_K},    {"IQ4_NL", 25, GgmlType::IQ4_NL},
    {"IQ4_XS", 30, GgmlType::IQ4_XS},
    {"Q2_K_S", 21, GgmlType::Q2_K},
    // The 1-3 bit i-quant mixes. A mix's default tensor type is llama_ftype_get_default_type's: IQ2_S
    // writes iq2_xs, IQ2_M iq2_s, IQ3_XS and IQ3_M iq3_s. All but IQ3_S and IQ3_M need importance
    // weights (--imatrix) for the bulk of their tensors.
    {"IQ2_XXS", 19, GgmlType::IQ2_XXS}, {"IQ2_XS", 20, GgmlType::IQ2_XS}, {"IQ2_S", 28, GgmlType::IQ2_XS},
    {"IQ2_M", 29, GgmlType::IQ2_S},     {"IQ3_XXS", 23, GgmlType::IQ3_XXS}, {"IQ3_S", 26, GgmlType::IQ3_S},
    {"IQ3_XS", 22, GgmlType::IQ3_S},    {"IQ3_M", 27, GgmlType::IQ3_S},     {"IQ1_S", 24, GgmlType::IQ1_S},
    {"IQ1_M", 31, GgmlType::IQ1_M},
    // Ternary, microscaling and 1-2 bit linear types. MXFP4_MOE writes mxfp4 only into expert tensors.
    // (llama-quantize has no NVFP4 file type to write; llama_file_type_of(nvfp4) names gguf-py's 39.)
    {"TQ1_0", 36, GgmlType::TQ1_0},     {"TQ2_0", 37, GgmlType::TQ2_0},     {"MXFP4_MOE", 38, GgmlType::MXFP4},
    {"Q1_0", 40, GgmlType::Q1_0},       {"Q2_0", 41, GgmlType::Q2_0},
};

// Case-insensitive ("q4_k_m" finds Q4_K_M); nullptr if unknown.
const LlamaMix* find_llama_mix(std::string_view name);

// The `general.file_type` llama.cpp writes for a file that is mostly `type` (used for --format).
uint32_t llama_file_type_of(GgmlType type);

// Facts about the model the choices depend on.
struct ModelFacts {
  int n_layer = 0;
  int n_head = 1;
  int n_head_kv = 1;
  int n_expert = 0;
  bool has_output = true;  // false: token_embd doubles as the output layer (tied) and gets its rule
};

struct TypeSelection {
  const LlamaMix* mix = nullptr;             // heuristics of a llama.cpp mix; null for a uniform type
  GgmlType default_type = GgmlType::Q4_K;    // the mix's default, or the --format type
  std::vector<std::pair<std::string, GgmlType>> overrides;  // glob on the tensor name -> type
  bool has_imatrix = false;
};

// True when llama-quantize would quantize the tensor at all (2-D or more, a weight, not a norm or router).
bool tensor_allows_quantization(std::string_view name, const Shape& ne);

// True when llama-quantize refuses to write tensor `name` as `type` without importance weights for it
// (tensor_requires_imatrix): the 1-2 bit i-quants (iq1_s, iq1_m, iq2_xxs, iq2_xs, iq2_s, iq3_xxs) and
// q2_K in a Q2_K_S file (file type 21) — except the token embeddings and the output layer, which the
// imatrix never covers.
bool tensor_requires_imatrix(std::string_view name, GgmlType type, uint32_t file_type);

class TypeSelector {
 public:
  TypeSelector(TypeSelection selection, ModelFacts facts);
  // The type for tensor `name` with GGUF dimensions `ne` (innermost first); nullopt when the tensor
  // is not quantized (it stays float: F32 for norms and 1-D tensors).
  std::optional<GgmlType> choose(std::string_view name, const Shape& ne) const;

 private:
  GgmlType mix_rule(std::string_view name, const Shape& ne, GgmlType type) const;

  TypeSelection selection_;
  ModelFacts facts_;
};

// A glob as the shell matches file names: '*' any run of characters, '?' one, [abc] a set.
bool glob_match(std::string_view pattern, std::string_view text);

}  // namespace lowbit
