// RoPE frequencies and rotation, following ggml's rope_yarn / ggml_rope_cache_init (ggml-cpu ops.cpp)
// for the variants llama.cpp runs Llama, Mistral and Qwen with.
#include "lowbit/model/rope.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "lowbit/core/error.h"

namespace lowbit {
namespace {

// The dimension at which a pair makes `rotations` full turns over the original context (ggml's
// ggml_rope_yarn_corr_dim).
float yarn_correction_dim(int n_rot, int original_context, float rotations, float base) {
  return float(n_rot) * std::log(float(original_context) / (rotations * 2.0f * std::numbers::pi_v<float>)) / (2.0f * std::log(base));
}

}  // namespace

RopeTable rope_table(const RopeParams& p) {
  if (p.n_rot <= 0 || p.n_rot % 2 != 0) throw Error(fmt::format("rope dimension count {} is not a positive even number", p.n_rot));
  const int pairs = p.n_rot / 2;
  if (!p.freq_factors.empty() && int(p.freq_factors.size()) != pairs)
    throw Error(fmt::format("rope_freqs.weight has {} values", p.freq_factors.size()), {.tensor = "rope_freqs.weight", .expected = fmt::format("{}", pairs)});
  if (p.scaling != RopeScaling::none && !(p.factor > 0)) throw Error(fmt::format("rope scaling factor {} is not positive", p.factor));
  RopeTable t{p.n_rot, std::vector<float>(size_t(pairs)), p.attn_factor};
  const float freq_scale = p.scaling == RopeScaling::none ? 1.0f : 1.0f / p.factor;
  float low = 0, high = 0;
  const bool yarn = p.scaling == RopeScaling::yarn && p.yarn_ext_factor != 0.0f;
  if (yarn) {
    if (p.original_context <= 0) throw Error("YaRN scaling needs rope.scaling.original_context_length");
    low = std::max(0.0f, std::floor(yarn_correction_dim(p.n_rot, p.original_context, p.yarn_beta_fast, p.freq_base)));
    high = std::min(float(p.n_rot - 1), std::ceil(yarn_correction_dim(p.n_rot, p.original_context, p.yarn_beta_slow, p.freq_base)));
    t.mscale *= 1.0f + 0.1f * std::log(1.0f / freq_scale);
  }
  for (int i = 0; i < pairs; ++i) {
    const float extrapolated = std::pow(p.freq_base, -2.0f * float(i) / float(p.n_rot)) / (p.freq_factors.empty() ? 1.0f : p.freq_factors[size_t(i)]);
    float scale = freq_scale;
    if (yarn) {  // pairs that turn often keep their frequency; slow ones are interpolated; a ramp between
      const float ramp = 1.0f - std::clamp((float(i) - low) / std::max(0.001f, high - low), 0.0f, 1.0f);
      const float mix = ramp * p.yarn_ext_factor;
      scale = freq_scale * (1.0f - mix) + mix;
    }
    t.inv_freq[size_t(i)] = extrapolated * scale;
  }
  return t;
}

void apply_rope(float* x, int64_t tokens, int heads, int head_dim, const RopeTable& table, bool neox, int64_t first_position) {
  const int pairs = table.n_rot / 2;
  std::vector<float> cos_sin(size_t(2 * pairs));
  for (int64_t t = 0; t < tokens; ++t) {
    const float position = float(first_position + t);
    for (int i = 0; i < pairs; ++i) {
      const float angle = position * table.inv_freq[size_t(i)];
      cos_sin[size_t(2 * i)] = std::cos(angle) * table.mscale;
      cos_sin[size_t(2 * i + 1)] = std::sin(angle) * table.mscale;
    }
    for (int h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int i = 0; i < pairs; ++i) {
        float& a = neox ? v[i] : v[2 * i];
        float& b = neox ? v[i + pairs] : v[2 * i + 1];
        const float a0 = a, b0 = b, c = cos_sin[size_t(2 * i)], s = cos_sin[size_t(2 * i + 1)];
        a = a0 * c - b0 * s;
        b = a0 * s + b0 * c;
      }
    }
  }
}

}  // namespace lowbit
