#include "lowbit/plan/roles.h"

#include <charconv>

namespace lowbit {
namespace {

struct Pattern {
  std::string_view part;  // found anywhere in the name
  TensorRole role;
};
// Order matters: the more specific names come first ("ffn_gate_inp" before "ffn_gate"; DeepSeek's
// routing bias "exp_probs_b.bias" is the router's, not a plain bias).
constexpr Pattern kPatterns[] = {
    {"_norm.", TensorRole::Norm},           {"exp_probs_b", TensorRole::Router},
    {".bias", TensorRole::Bias},            {"ffn_gate_inp", TensorRole::Router},
    {"ffn_gate_exps", TensorRole::ExpertGate}, {"ffn_up_exps", TensorRole::ExpertUp}, {"ffn_down_exps", TensorRole::ExpertDown},
    {"ffn_gate_shexp", TensorRole::SharedExpertGate}, {"ffn_up_shexp", TensorRole::SharedExpertUp},
    {"ffn_down_shexp", TensorRole::SharedExpertDown},
    {"attn_q.", TensorRole::AttnQ},         {"attn_k.", TensorRole::AttnK},   {"attn_v.", TensorRole::AttnV},
    // DeepSeek's multi-head latent attention: Q through a low-rank pair, K and V from one latent.
    {"attn_q_a.", TensorRole::AttnQ},       {"attn_q_b.", TensorRole::AttnQ},
    {"attn_kv_a_mqa.", TensorRole::AttnKV}, {"attn_kv_b.", TensorRole::AttnKV},
    {"attn_output.", TensorRole::AttnOutput}, {"ffn_gate.", TensorRole::FfnGate}, {"ffn_up.", TensorRole::FfnUp},
    {"ffn_down.", TensorRole::FfnDown},
};

}  // namespace

RoleOf classify_tensor(std::string_view name) {
  int layer = -1;
  if (name.starts_with("blk.")) std::from_chars(name.data() + 4, name.data() + name.size(), layer);
  if (name == "token_embd.weight") return {TensorRole::Embedding, layer};
  if (name == "output.weight") return {TensorRole::Output, layer};
  if (name == "output_norm.weight") return {TensorRole::Norm, layer};
  for (const auto& p : kPatterns)
    if (name.find(p.part) != std::string_view::npos) return {p.role, layer};
  return {TensorRole::Other, layer};
}

std::string_view role_name(TensorRole role) {
  switch (role) {
    case TensorRole::Embedding: return "embedding";
    case TensorRole::Output: return "output";
    case TensorRole::AttnQ: return "attn_q";
    case TensorRole::AttnK: return "attn_k";
    case TensorRole::AttnV: return "attn_v";
    case TensorRole::AttnKV: return "attn_kv";
    case TensorRole::AttnOutput: return "attn_output";
    case TensorRole::FfnGate: return "ffn_gate";
    case TensorRole::FfnUp: return "ffn_up";
    case TensorRole::FfnDown: return "ffn_down";
    case TensorRole::ExpertGate: return "ffn_gate_exps";
    case TensorRole::ExpertUp: return "ffn_up_exps";
    case TensorRole::ExpertDown: return "ffn_down_exps";
    case TensorRole::SharedExpertGate: return "ffn_gate_shexp";
    case TensorRole::SharedExpertUp: return "ffn_up_shexp";
    case TensorRole::SharedExpertDown: return "ffn_down_shexp";
    case TensorRole::Router: return "router";
    case TensorRole::Norm: return "norm";
    case TensorRole::Bias: return "bias";
    case TensorRole::Other: return "other";
  }
  return "other";
}

}  // namespace lowbit
