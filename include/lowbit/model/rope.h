// Rotary position embeddings as llama.cpp applies them (ggml_rope_ext): for each rotated pair i of a
// head, the angle pos · inv_freq[i] and the rotated values scaled by mscale. Every variant lowbit
// handles is a per-pair frequency and one magnitude, computed once from the model's config:
//   plain:   inv_freq[i] = base^(-2i / n_rot)
//   Llama 3: divided by rope_freqs.weight[i] (the factors llama.cpp's converter computes)
//   linear:  times 1 / factor (position interpolation)
//   YaRN:    interpolated (1/factor) for long wavelengths, kept for short ones, a linear ramp between
//            (ggml's correction dimensions from beta_fast / beta_slow), mscale = 1 + 0.1 ln(factor)
// Both the CPU forward pass and a GPU one take a RopeTable and apply the same rotation.
#pragma once

#include <cstdint>
#include <vector>

namespace lowbit {

enum class RopeScaling { none, linear, yarn };

// What the GGUF metadata (and rope_freqs.weight) say about the rotation.
struct RopeParams {
  int n_rot = 0;               // rotated dimensions per head (<arch>.rope.dimension_count)
  float freq_base = 10000.0f;  // <arch>.rope.freq_base
  RopeScaling scaling = RopeScaling::none;
  float factor = 1.0f;         // <arch>.rope.scaling.factor (linear, yarn)
  int original_context = 0;    // <arch>.rope.scaling.original_context_length (yarn)
  float yarn_ext_factor = 1.0f, yarn_beta_fast = 32.0f, yarn_beta_slow = 1.0f;
  float attn_factor = 1.0f;    // <arch>.rope.scaling.attn_factor: an extra magnitude
  std::vector<float> freq_factors;  // rope_freqs.weight (n_rot / 2 values), empty if absent
};

struct RopeTable {
  int n_rot = 0;
  std::vector<float> inv_freq;  // n_rot / 2 angles per position
  float mscale = 1.0f;          // cos and sin are multiplied by it
};

// Throws lowbit::Error for inconsistent parameters (odd n_rot, wrong number of freq_factors, a YaRN
// scaling without its original context length).
RopeTable rope_table(const RopeParams& params);

// Rotates the first n_rot values of each of `heads` heads of `head_dim` values, for `tokens` rows at
// positions first_position, first_position + 1, ... neox pairs (i, i + n_rot/2) (Qwen and HF's
// rotate-half); otherwise adjacent pairs (2i, 2i+1) (llama.cpp's "normal" mode, Llama).
void apply_rope(float* x, int64_t tokens, int heads, int head_dim, const RopeTable& table, bool neox, int64_t first_position = 0);

}  // namespace lowbit
