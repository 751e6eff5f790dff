#include "lowbit/plan/llama_cpp_mix.h"

#include <fnmatch.h>

#include <algorithm>
#include <cctype>
#include <charconv>

namespace lowbit {
namespace {

bool contains(std::string_view s, std::string_view part) { return s.find(part) != std::string_view::npos; }

// llama.cpp's coarse tensor categories (tensor_get_category).
enum class Category { TokenEmbd, AttnQ, AttnV, AttnK, AttnQkv, AttnKvB, AttnOutput, FfnUp, FfnGate, FfnDown, Output, Other };

Category category_of(std::string_view name) {
  if (name == "output.weight") return Category::Output;
  if (name == "token_embd.weight" || name == "per_layer_token_embd.weight") return Category::TokenEmbd;
  if (contains(name, "attn_qkv.weight")) return Category::AttnQkv;
  if (contains(name, "attn_kv_b.weight")) return Category::AttnKvB;
  if (contains(name, "attn_v.weight")) return Category::AttnV;
  if (contains(name, "attn_k.weight")) return Category::AttnK;
  if (contains(name, "attn_q.weight")) return Category::AttnQ;
  if (contains(name, "attn_output.weight")) return Category::AttnOutput;
  if (contains(name, "ffn_up")) return Category::FfnUp;
  if (contains(name, "ffn_gate")) return Category::FfnGate;
  if (contains(name, "ffn_down")) return Category::FfnDown;
  return Category::Other;
}

constexpr uint32_t kQ2KSFileType = 21;  // LLAMA_FTYPE_MOSTLY_Q2_K_S

bool is_low_bit_iq_mix(std::string_view mix) {
  for (std::string_view m : {"IQ2_XXS", "IQ2_XS", "IQ1_S", "IQ2_S", "IQ2_M", "IQ1_M"})
    if (mix == m) return true;
  return false;
}

bool is_attn_v_like(Category c) { return c == Category::AttnV || c == Category::AttnQkv || c == Category::AttnKvB; }

// The layer of "blk.N....", or -1.
int layer_of(std::string_view name) {
  if (!name.starts_with("blk.")) return -1;
  int layer = -1;
  std::from_chars(name.data() + 4, name.data() + name.size(), layer);
  return layer;
}

// Half the layers, front- and back-loaded: the ones llama.cpp gives more bits in *_M mixes.
bool use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

bool row_fits(GgmlType type, const Shape& ne) { return !ne.empty() && ne[0] % ggml_type_info(type).block_elements == 0; }

// Rows a block type cannot tile get the nearest type that can (tensor_type_fallback).
GgmlType fallback_for_shape(GgmlType type, const Shape& ne) {
  if (row_fits(type, ne)) return type;
  GgmlType next = GgmlType::F16;
  switch (type) {
    case GgmlType::IQ1_S: case GgmlType::IQ1_M: case GgmlType::IQ2_XXS: case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S: case GgmlType::IQ3_XXS: case GgmlType::IQ3_S: case GgmlType::IQ4_XS:
      next = GgmlType::IQ4_NL; break;
    case GgmlType::Q2_0: case GgmlType::Q2_K: case GgmlType::Q3_K: case GgmlType::TQ1_0: case GgmlType::TQ2_0:
      next = GgmlType::Q4_0; break;
    case GgmlType::Q4_K: next = GgmlType::Q5_0; break;
    case GgmlType::Q5_K: next = GgmlType::Q5_1; break;
    case GgmlType::Q6_K: next = GgmlType::Q8_0; break;
    default: break;
  }
  return row_fits(next, ne) ? next : GgmlType::F16;
}

// The 1-2 bit i-quant mixes (llama_tensor_get_type_impl's branch for them): the tensors most sensitive to
// quantization get 2-4 bit k-quants, or iq3_s in IQ2_S / IQ2_M.
GgmlType low_bit_iq_rule(std::string_view mix, Category category, int i, int n, int n_gqa, const ModelFacts& facts,
                         GgmlType type) {
  const bool iq2_s_or_m = mix == "IQ2_S" || mix == "IQ2_M";
  const GgmlType sensitive = iq2_s_or_m ? GgmlType::IQ3_S : GgmlType::Q2_K;
  if (is_attn_v_like(category)) return n_gqa >= 4 || facts.n_expert >= 4 ? GgmlType::Q4_K : sensitive;
  if (category == Category::AttnK && facts.n_expert == 8) return GgmlType::Q4_K;
  if (category == Category::FfnDown) return i < n / 8 ? sensitive : type;
  if (category == Category::AttnOutput) {
    if (facts.n_expert == 8) return GgmlType::Q5_K;
    if (mix == "IQ1_S" || mix == "IQ1_M") return GgmlType::IQ2_XXS;
    if (iq2_s_or_m) return GgmlType::IQ3_S;
  }
  return type;
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return std::ranges::equal(a, b, [](char x, char y) { return std::tolower(x) == std::tolower(y); });
}

}  // namespace

const LlamaMix* find_llama_mix(std::string_view name) {
  for (const auto& mix : kLlamaMixes)
    if (equal_ignoring_case(mix.name, name)) return &mix;
  return nullptr;
}

uint32_t llama_file_type_of(GgmlType type) {
  switch (type) {
    case GgmlType::F32: return 0;
    case GgmlType::F16: return 1;
    case GgmlType::BF16: return 32;
    case GgmlType::Q3_K: return 11;  // Q3_K_S is the uniform Q3_K file
    case GgmlType::Q4_K: return 14;
    case GgmlType::Q5_K: return 16;
    case GgmlType::IQ2_S: return 28;  // LLAMA_FTYPE_MOSTLY_IQ2_S (whose mix defaults to iq2_xs)
    case GgmlType::IQ3_S: return 26;  // not IQ3_XS or IQ3_M, mixes of iq3_s
    case GgmlType::NVFP4: return 39;  // LLAMA_FTYPE_MOSTLY_NVFP4, which llama-quantize does not offer
    default:
      for (const auto& mix : kLlamaMixes)
        if (mix.default_type == type) return mix.file_type;
      return 0;
  }
}

bool glob_match(std::string_view pattern, std::string_view text) {
  return ::fnmatch(std::string(pattern).c_str(), std::string(text).c_str(), 0) == 0;
}

bool tensor_allows_quantization(std::string_view name, const Shape& ne) {
  // ggml_n_dims: trailing dimensions of 1 do not count (Qwen2-MoE's shared-expert gate, ne {n_embd, 1},
  // is a vector to llama-quantize).
  size_t dims = ne.size();
  while (dims > 1 && ne[dims - 1] == 1) --dims;
  if (dims < 2) return false;
  if (!name.ends_with("weight")) return false;
  for (std::string_view keep : {"_norm.weight", "ffn_gate_inp.weight", "ffn_gate_tid2eid.weight", "altup", "laurel",
                                "per_layer_model_proj", "ssm_conv1d", "shortconv.conv.weight", "time_mix_", "attn_rel_b.weight",
                                ".position_embd", ".rel_pos", ".patch_embd", ".patch_merger"})
    if (contains(name, keep)) return false;
  return name != "position_embd.weight" && name != "token_types.weight";
}

bool tensor_requires_imatrix(std::string_view name, GgmlType type, uint32_t file_type) {
  const Category category = category_of(name);
  if (category == Category::TokenEmbd || category == Category::Output) return false;
  switch (type) {
    case GgmlType::IQ1_S: case GgmlType::IQ1_M: case GgmlType::IQ2_XXS: case GgmlType::IQ2_XS:
    case GgmlType::IQ2_S: case GgmlType::IQ3_XXS:
      return true;
    case GgmlType::Q2_K: return file_type == kQ2KSFileType;
    default: return false;
  }
}

TypeSelector::TypeSelector(TypeSelection selection, ModelFacts facts) : selection_(std::move(selection)), facts_(facts) {}

std::optional<GgmlType> TypeSelector::choose(std::string_view name, const Shape& ne) const {
  if (!tensor_allows_quantization(name, ne)) return std::nullopt;
  GgmlType type = selection_.default_type;
  if (!ggml_type_info(type).quantized) return type;
  bool manual = false;
  for (const auto& [pattern, forced] : selection_.overrides)
    if (glob_match(pattern, name)) {
      type = forced;
      manual = true;
      break;
    }
  if (!manual && selection_.mix) type = mix_rule(name, ne, type);
  return fallback_for_shape(type, ne);
}

// llama_tensor_get_type_impl for the mixes lowbit names (dense and MoE llama-family models).
GgmlType TypeSelector::mix_rule(std::string_view name, const Shape& ne, GgmlType type) const {
  const std::string_view mix = selection_.mix->name;
  const Category category = category_of(name);
  const int n = facts_.n_layer;
  const int i = std::max(0, layer_of(name));
  const int n_gqa = facts_.n_head_kv > 0 ? facts_.n_head / facts_.n_head_kv : 1;
  auto is = [&](std::string_view m) { return mix == m; };

  // The output layer, and the embedding when it doubles as the output layer.
  if (category == Category::Output || (!facts_.has_output && category == Category::TokenEmbd)) {
    if (is("MXFP4_MOE") || !row_fits(type, ne)) return GgmlType::Q8_0;
    if (is_low_bit_iq_mix(mix) || is("IQ3_XXS")) return GgmlType::Q5_K;
    return type == GgmlType::Q8_0 ? type : GgmlType::Q6_K;
  }
  // MXFP4_MOE: the experts (3-D: one matrix per expert) in mxfp4, every other tensor in q8_0.
  if (is("MXFP4_MOE")) return ne.size() > 2 && ne[2] > 1 ? GgmlType::MXFP4 : GgmlType::Q8_0;
  if (category == Category::TokenEmbd) {
    if (is("IQ2_XXS") || is("IQ2_XS") || is("IQ1_S") || is("IQ1_M")) return GgmlType::Q2_K;
    if (is("IQ2_S") || is("IQ2_M") || is("IQ3_XXS")) return GgmlType::IQ3_S;
    if (is("TQ1_0") || is("TQ2_0") || is("Q2_0")) return GgmlType::Q4_K;
    return type;
  }
  if (is_low_bit_iq_mix(mix)) return low_bit_iq_rule(mix, category, i, n, n_gqa, facts_, type);
  if (is_attn_v_like(category)) {
    if (is("Q2_K")) type = n_gqa >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K;
    else if (is("Q2_K_S") && n_gqa >= 4) type = GgmlType::Q4_K;
    else if (is("IQ3_XXS")) type = n_gqa >= 4 ? GgmlType::Q4_K : selection_.has_imatrix ? GgmlType::IQ3_XXS : GgmlType::IQ3_S;
    else if ((is("IQ3_XS") || is("IQ3_S")) && n_gqa >= 4) type = GgmlType::Q4_K;
    else if (is("IQ3_M")) type = GgmlType::Q4_K;
    else if (is("Q3_K_M")) type = i < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
    else if (is("Q3_K_L")) type = GgmlType::Q5_K;
    else if ((is("IQ4_NL") || is("IQ4_XS")) && n_gqa >= 4) type = GgmlType::Q5_K;
    else if ((is("Q4_K_M") || is("Q5_K_M")) && use_more_bits(i, n)) type = GgmlType::Q6_K;
    else if (is("Q4_K_S") && i < 4) type = GgmlType::Q5_K;
    if (facts_.n_expert == 8) type = GgmlType::Q8_0;
    return type;
  }
  // The 3-bit mixes take bits from attn_q and attn_k (a third of attention's weights, the least sensitive).
  if (category == Category::AttnK && facts_.n_expert == 8) return GgmlType::Q8_0;
  if (category == Category::AttnK || category == Category::AttnQ) {
    if (is("IQ3_XS")) return GgmlType::IQ3_XXS;
    if (is("IQ3_XXS")) return GgmlType::IQ2_S;
    return type;
  }
  if (category == Category::FfnDown) {
    if (is("Q2_K")) return GgmlType::Q3_K;
    if (is("Q2_K_S")) return i < n / 8 ? GgmlType::Q4_K : type;
    if (is("IQ3_XXS") && !selection_.has_imatrix) return i < n / 8 ? GgmlType::Q4_K : GgmlType::Q3_K;
    if (is("Q3_K_M")) return i < n / 16 ? GgmlType::Q5_K : GgmlType::Q4_K;
    if (is("IQ3_M")) return i < n / 8 || (facts_.n_expert == 8 && use_more_bits(i, n)) ? GgmlType::Q4_K : type;
    if (is("Q3_K_L")) return GgmlType::Q5_K;
    if (is("Q4_K_M")) return use_more_bits(i, n) ? GgmlType::Q6_K : type;
    if (i < n / 8 && (is("IQ4_NL") || is("IQ4_XS")) && !selection_.has_imatrix) return GgmlType::Q5_K;
    if (is("Q5_K_M")) return use_more_bits(i, n) ? GgmlType::Q6_K : type;
    if (is("Q4_K_S")) return i < n / 8 ? GgmlType::Q5_K : type;
    if ((is("Q4_0") || is("Q5_0")) && selection_.has_imatrix && i < n / 8) return is("Q4_0") ? GgmlType::Q4_1 : GgmlType::Q5_1;
    return type;
  }
  if (category == Category::AttnOutput) {
    if (facts_.n_expert == 8)
      return (is("Q2_K") || is("IQ3_XS") || is("IQ3_XXS") || is("Q3_K_S") || is("Q3_K_M") || is("IQ4_NL") || is("Q4_K_S") ||
              is("Q4_K_M") || is("IQ3_S") || is("IQ3_M") || is("IQ4_XS"))
                 ? GgmlType::Q5_K : type;
    if (is("Q2_K")) return GgmlType::Q3_K;
    if (is("IQ3_XXS")) return GgmlType::IQ3_S;
    if (is("Q3_K_M") || is("IQ3_M")) return GgmlType::Q4_K;
    if (is("Q3_K_L")) return GgmlType::Q5_K;
    return type;
  }
  // IQ3_XS: the middle three quarters of the layers' ffn_gate and ffn_up in iq3_xxs.
  if ((category == Category::FfnGate || category == Category::FfnUp) && is("IQ3_XS") && i >= n / 8 && i < 7 * n / 8)
    return GgmlType::IQ3_XXS;
  return type;
}

}  // namespace lowbit
