// Which tensors of a Hugging Face checkpoint bitsandbytes quantizes: `lowbit quantize --format
// nf4|fp4|int8` and the bitsandbytes planner decide the same way.
#pragma once

#include <string>
#include <string_view>

#include "lowbit/core/tensor.h"

namespace lowbit {

// A Linear layer's weight in a transformers model: 2-D, float, "*.weight", and not an embedding, the
// output head, a norm or an MoE router (Qwen-MoE, Mixtral and DeepSeek "*.gate", Qwen2-MoE's
// "shared_expert_gate"). In a bare .safetensors file (`directory` false) every 2-D float tensor.
inline bool is_bnb_linear_weight(const std::string& name, const TensorView& t, bool directory) {
  if (t.shape.size() != 2 || !dtype_is_float(t.dtype)) return false;
  if (!directory) return true;
  if (!name.ends_with(".weight")) return false;
  for (std::string_view keep : {"embed", "lm_head", "norm", "router", "wte", "wpe", "shared_expert_gate"})
    if (name.find(keep) != std::string::npos) return false;
  return !name.ends_with(".gate.weight");
}

}  // namespace lowbit
