// What a tensor is for, read from its GGUF name: the planner's rules and reports speak in roles.
// Covers dense Llama-family models and the MoE layouts of Qwen-MoE, Mixtral and DeepSeek as llama.cpp
// names them: experts "ffn_*_exps" (all experts of a layer in one 3-D tensor), shared experts
// "ffn_*_shexp", routers "ffn_gate_inp" (Qwen2-MoE's shared-expert gate "ffn_gate_inp_shexp" too) and
// DeepSeek's routing bias "exp_probs_b". Hugging Face names reach these roles through the pipeline's
// name mapping (lowbit/io/hf_names.h).
#pragma once

#include <string_view>

namespace lowbit {

enum class TensorRole {
  Embedding, Output, AttnQ, AttnK, AttnV, AttnKV, AttnOutput, FfnGate, FfnUp, FfnDown,
  ExpertGate, ExpertUp, ExpertDown, SharedExpertGate, SharedExpertUp, SharedExpertDown,
  Router, Norm, Bias, Other,
};

struct RoleOf {
  TensorRole role;
  int layer;  // -1 outside the blocks
};

RoleOf classify_tensor(std::string_view gguf_name);
std::string_view role_name(TensorRole role);  // "attn_q", "ffn_down_exps", "router" ...

}  // namespace lowbit
