// The per-tensor type choices of llama.cpp's mixes, checked against llama-quantize's own output.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <tuple>

#include "lowbit/io/gguf.h"
#include "lowbit/plan/llama_cpp_mix.h"
#include "support/paths.h"

namespace lowbit {
namespace {

// llama-quantize (llama.cpp c392e509) made tiny-llama-q4_k_m.gguf from tiny-llama-f32.gguf: every
// tensor's type must be the one lowbit chooses for Q4_K_M.
TEST(LlamaCppMix, ReproducesLlamaQuantizeQ4KM) {
  const gguf::File source(test::golden_ggml_dir() / "model" / "tiny-llama-f32.gguf");
  const gguf::File quantized(test::golden_ggml_dir() / "model" / "tiny-llama-q4_k_m.gguf");
  const TypeSelector selector({.mix = find_llama_mix("Q4_K_M"), .default_type = GgmlType::Q4_K},
                              {.n_layer = 2, .n_head = 4, .n_head_kv = 2, .has_output = true});
  int checked = 0;
  for (const auto& t : source.tensors()) {
    const auto* q = quantized.find_tensor(t.name);
    ASSERT_NE(q, nullptr) << t.name;
    const GgmlType chosen = selector.choose(t.name, t.ne).value_or(t.type);
    EXPECT_EQ(ggml_type_name(chosen), ggml_type_name(q->type)) << t.name;
    ++checked;
  }
  EXPECT_EQ(checked, 21);
  EXPECT_EQ(quantized.find("general.file_type")->as_int(), int64_t(find_llama_mix("Q4_K_M")->file_type));
}

TEST(LlamaCppMix, UseMoreBitsLayersForThirtyTwoLayers) {
  const TypeSelector selector({.mix = find_llama_mix("q4_k_m"), .default_type = GgmlType::Q4_K},
                              {.n_layer = 32, .n_head = 32, .n_head_kv = 8});
  std::vector<int> more;
  for (int i = 0; i < 32; ++i)
    if (selector.choose("blk." + std::to_string(i) + ".ffn_down.weight", {14336, 4096}) == GgmlType::Q6_K) more.push_back(i);
  EXPECT_EQ(more, (std::vector<int>{0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31}));
}

TEST(LlamaCppMix, FallbacksOverridesAndTiedEmbeddings) {
  const TypeSelector q2k({.mix = find_llama_mix("Q2_K"), .default_type = GgmlType::Q2_K},
                         {.n_layer = 30, .n_head = 9, .n_head_kv = 3, .has_output = false});
  // SmolLM2-135M's rows are 576 wide: no k-quant fits.
  EXPECT_EQ(q2k.choose("blk.3.attn_q.weight", {576, 576}), GgmlType::Q4_0);
  EXPECT_EQ(q2k.choose("blk.3.attn_v.weight", {576, 192}), GgmlType::Q4_0);  // Q3_K (n_gqa 3) -> Q4_0
  EXPECT_EQ(q2k.choose("blk.3.ffn_down.weight", {1536, 576}), GgmlType::Q3_K);
  EXPECT_EQ(q2k.choose("token_embd.weight", {576, 49152}), GgmlType::Q8_0);  // tied: output rule, 576 % 256
  EXPECT_EQ(q2k.choose("blk.3.attn_norm.weight", {576}), std::nullopt);
  EXPECT_EQ(q2k.choose("blk.3.ffn_gate_inp.weight", {576, 8}), std::nullopt);
  // Qwen2-MoE's shared-expert gate is stored {n_embd, 1}: one dimension to ggml_n_dims, so never quantized.
  EXPECT_EQ(q2k.choose("blk.3.ffn_gate_inp_shexp.weight", {576, 1}), std::nullopt);
  EXPECT_FALSE(tensor_allows_quantization("blk.3.ffn_gate_inp_shexp.weight", {256, 1, 1}));
  EXPECT_TRUE(tensor_allows_quantization("blk.3.ffn_up_exps.weight", {256, 512, 8}));
  EXPECT_TRUE(tensor_allows_quantization("blk.3.ffn_up_exps.weight", {256, 1, 8}));  // an expert of one row is still 3-D

  const TypeSelector pure({.default_type = GgmlType::Q4_K, .overrides = {{"*attn_v*", GgmlType::Q8_0}, {"*ffn_down*", GgmlType::Q6_K}}},
                          {.n_layer = 2});
  EXPECT_EQ(pure.choose("output.weight", {256, 259}), GgmlType::Q4_K);  // no heuristics: no Q6_K for output
  EXPECT_EQ(pure.choose("blk.0.attn_v.weight", {256, 128}), GgmlType::Q8_0);
  EXPECT_EQ(pure.choose("blk.0.ffn_down.weight", {172, 64}), GgmlType::F16);  // Q6_K -> Q8_0 -> neither tiles 172
  EXPECT_EQ(pure.choose("blk.0.ffn_up.weight", {64, 172}), GgmlType::Q5_0);  // Q4_K falls back to Q5_0
}

// llama.cpp's llama_tensor_get_type_impl (unchanged from 007dbbf3 to 0c1e57098) for the IQ2 mixes, on a 32-layer GQA-8 model
// (Llama-3-8B's shapes) and on a model with n_gqa 2.
TEST(LlamaCppMix, Iq2MixesFollowLlamaQuantize) {
  const ModelFacts gqa4{.n_layer = 32, .n_head = 32, .n_head_kv = 8};
  const ModelFacts gqa2{.n_layer = 32, .n_head = 32, .n_head_kv = 16};
  struct Expect {
    const char* mix;
    GgmlType body, token_embd, attn_v_gqa2, ffn_down_early, attn_output;
  };
  const Expect cases[] = {
      {"IQ2_XXS", GgmlType::IQ2_XXS, GgmlType::Q2_K, GgmlType::Q2_K, GgmlType::Q2_K, GgmlType::IQ2_XXS},
      {"IQ2_XS", GgmlType::IQ2_XS, GgmlType::Q2_K, GgmlType::Q2_K, GgmlType::Q2_K, GgmlType::IQ2_XS},
      {"IQ2_S", GgmlType::IQ2_XS, GgmlType::IQ3_S, GgmlType::IQ3_S, GgmlType::IQ3_S, GgmlType::IQ3_S},
      {"IQ2_M", GgmlType::IQ2_S, GgmlType::IQ3_S, GgmlType::IQ3_S, GgmlType::IQ3_S, GgmlType::IQ3_S},
  };
  for (const Expect& c : cases) {
    SCOPED_TRACE(c.mix);
    const LlamaMix* mix = find_llama_mix(c.mix);
    ASSERT_NE(mix, nullptr);
    const TypeSelector s({.mix = mix, .default_type = mix->default_type, .has_imatrix = true}, gqa4);
    const TypeSelector s2({.mix = mix, .default_type = mix->default_type, .has_imatrix = true}, gqa2);
    EXPECT_EQ(s.choose("blk.5.attn_q.weight", {4096, 4096}), c.body);
    EXPECT_EQ(s.choose("blk.5.attn_k.weight", {4096, 1024}), c.body);
    EXPECT_EQ(s.choose("blk.5.ffn_up.weight", {4096, 14336}), c.body);
    EXPECT_EQ(s.choose("blk.5.ffn_gate.weight", {4096, 14336}), c.body);
    EXPECT_EQ(s.choose("blk.5.ffn_down.weight", {14336, 4096}), c.body);
    EXPECT_EQ(s.choose("blk.3.ffn_down.weight", {14336, 4096}), c.ffn_down_early);  // layers below 32/8
    EXPECT_EQ(s.choose("blk.4.ffn_down.weight", {14336, 4096}), c.body);
    EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);  // n_gqa >= 4
    EXPECT_EQ(s2.choose("blk.5.attn_v.weight", {4096, 2048}), c.attn_v_gqa2);
    EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), c.attn_output);
    EXPECT_EQ(s.choose("token_embd.weight", {4096, 128256}), c.token_embd);
    EXPECT_EQ(s.choose("output.weight", {4096, 128256}), GgmlType::Q5_K);
    // Rows iq2 cannot tile fall back to iq4_nl (tensor_type_fallback).
    EXPECT_EQ(s.choose("blk.5.attn_q.weight", {576, 576}), c.body == GgmlType::IQ2_S || c.body == GgmlType::IQ2_XS ||
                                                                   c.body == GgmlType::IQ2_XXS
                                                               ? GgmlType::IQ4_NL
                                                               : c.body);
  }
  EXPECT_EQ(find_llama_mix("iq2_m")->file_type, 29u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ2_XXS), 19u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ2_XS), 20u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ2_S), 28u);
}

// MoE models with 8 experts: attn_k and attn_output get k-quants in the IQ2 mixes.
TEST(LlamaCppMix, Iq2MixesOnEightExperts) {
  const TypeSelector s({.mix = find_llama_mix("IQ2_XXS"), .default_type = GgmlType::IQ2_XXS, .has_imatrix = true},
                       {.n_layer = 32, .n_head = 32, .n_head_kv = 8, .n_expert = 8});
  EXPECT_EQ(s.choose("blk.5.attn_k.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q5_K);
  EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(s.choose("blk.5.ffn_up_exps.weight", {4096, 14336, 8}), GgmlType::IQ2_XXS);
}

// The 3-bit i-quant mixes (llama.cpp 0c1e57098's rules read off llama_tensor_get_type_impl) on Llama-3-8B's
// shapes: 32 layers, GQA 8, so n_layer/8 = 4 and 7*n_layer/8 = 28.
TEST(LlamaCppMix, Iq3MixesFollowLlamaQuantize) {
  const ModelFacts gqa4{.n_layer = 32, .n_head = 32, .n_head_kv = 8};
  const ModelFacts gqa2{.n_layer = 32, .n_head = 32, .n_head_kv = 16};
  auto selector = [](const char* name, const ModelFacts& facts, bool imatrix = true) {
    const LlamaMix* mix = find_llama_mix(name);
    EXPECT_NE(mix, nullptr) << name;
    return TypeSelector({.mix = mix, .default_type = mix->default_type, .has_imatrix = imatrix}, facts);
  };
  const Shape q{4096, 4096}, kv{4096, 1024}, kv2{4096, 2048}, up{4096, 14336}, down{14336, 4096}, vocab{4096, 128256};

  // IQ3_XXS: attn_q/attn_k one step down (iq2_s), attn_output and the embeddings one up (iq3_s).
  const auto xxs = selector("IQ3_XXS", gqa4);
  EXPECT_EQ(xxs.choose("blk.5.attn_q.weight", q), GgmlType::IQ2_S);
  EXPECT_EQ(xxs.choose("blk.5.attn_k.weight", kv), GgmlType::IQ2_S);
  EXPECT_EQ(xxs.choose("blk.5.attn_v.weight", kv), GgmlType::Q4_K);
  EXPECT_EQ(xxs.choose("blk.5.attn_output.weight", q), GgmlType::IQ3_S);
  EXPECT_EQ(xxs.choose("blk.0.ffn_down.weight", down), GgmlType::IQ3_XXS);  // with an imatrix: no early-layer bump
  EXPECT_EQ(xxs.choose("blk.5.ffn_up.weight", up), GgmlType::IQ3_XXS);
  EXPECT_EQ(xxs.choose("token_embd.weight", vocab), GgmlType::IQ3_S);
  EXPECT_EQ(xxs.choose("output.weight", vocab), GgmlType::Q5_K);
  EXPECT_EQ(selector("IQ3_XXS", gqa2).choose("blk.5.attn_v.weight", kv2), GgmlType::IQ3_XXS);
  const auto xxs_plain = selector("IQ3_XXS", gqa2, false);
  EXPECT_EQ(xxs_plain.choose("blk.5.attn_v.weight", kv2), GgmlType::IQ3_S);
  EXPECT_EQ(xxs_plain.choose("blk.3.ffn_down.weight", down), GgmlType::Q4_K);
  EXPECT_EQ(xxs_plain.choose("blk.4.ffn_down.weight", down), GgmlType::Q3_K);

  // IQ3_XS: iq3_s by default; attn_q/attn_k and the middle layers' ffn_gate/ffn_up in iq3_xxs.
  const auto xs = selector("IQ3_XS", gqa4);
  EXPECT_EQ(xs.choose("blk.5.attn_q.weight", q), GgmlType::IQ3_XXS);
  EXPECT_EQ(xs.choose("blk.5.attn_k.weight", kv), GgmlType::IQ3_XXS);
  EXPECT_EQ(xs.choose("blk.5.attn_v.weight", kv), GgmlType::Q4_K);
  EXPECT_EQ(selector("IQ3_XS", gqa2).choose("blk.5.attn_v.weight", kv2), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("blk.3.ffn_up.weight", up), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("blk.4.ffn_up.weight", up), GgmlType::IQ3_XXS);
  EXPECT_EQ(xs.choose("blk.27.ffn_gate.weight", up), GgmlType::IQ3_XXS);
  EXPECT_EQ(xs.choose("blk.28.ffn_gate.weight", up), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("blk.5.ffn_down.weight", down), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("blk.5.attn_output.weight", q), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("token_embd.weight", vocab), GgmlType::IQ3_S);
  EXPECT_EQ(xs.choose("output.weight", vocab), GgmlType::Q6_K);

  // IQ3_S: iq3_s everywhere but attn_v under GQA >= 4 and the output layer.
  const auto s3 = selector("IQ3_S", gqa4);
  EXPECT_EQ(s3.choose("blk.5.attn_q.weight", q), GgmlType::IQ3_S);
  EXPECT_EQ(s3.choose("blk.5.attn_v.weight", kv), GgmlType::Q4_K);
  EXPECT_EQ(selector("IQ3_S", gqa2).choose("blk.5.attn_v.weight", kv2), GgmlType::IQ3_S);
  EXPECT_EQ(s3.choose("blk.0.ffn_down.weight", down), GgmlType::IQ3_S);
  EXPECT_EQ(s3.choose("blk.5.attn_output.weight", q), GgmlType::IQ3_S);
  EXPECT_EQ(s3.choose("output.weight", vocab), GgmlType::Q6_K);

  // IQ3_M: q4_K for every attn_v, attn_output and the first eighth of ffn_down.
  const auto m = selector("IQ3_M", gqa2);
  EXPECT_EQ(m.choose("blk.5.attn_v.weight", kv2), GgmlType::Q4_K);
  EXPECT_EQ(m.choose("blk.5.attn_output.weight", q), GgmlType::Q4_K);
  EXPECT_EQ(m.choose("blk.3.ffn_down.weight", down), GgmlType::Q4_K);
  EXPECT_EQ(m.choose("blk.4.ffn_down.weight", down), GgmlType::IQ3_S);
  EXPECT_EQ(m.choose("blk.31.ffn_down.weight", down), GgmlType::IQ3_S);  // use_more_bits only with 8 experts
  EXPECT_EQ(m.choose("blk.5.attn_q.weight", q), GgmlType::IQ3_S);
  EXPECT_EQ(m.choose("token_embd.weight", vocab), GgmlType::IQ3_S);

  EXPECT_EQ(find_llama_mix("iq3_xxs")->file_type, 23u);
  EXPECT_EQ(find_llama_mix("IQ3_XS")->file_type, 22u);
  EXPECT_EQ(find_llama_mix("IQ3_M")->file_type, 27u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ3_XXS), 23u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ3_S), 26u);  // the uniform file, not IQ3_XS or IQ3_M
}

// IQ1_S and IQ1_M share the IQ2 mixes' branch: q2_K embeddings, attn_output one type up (iq2_xxs).
TEST(LlamaCppMix, Iq1MixesFollowLlamaQuantize) {
  for (const auto& [name, body] : {std::pair{"IQ1_S", GgmlType::IQ1_S}, std::pair{"IQ1_M", GgmlType::IQ1_M}}) {
    SCOPED_TRACE(name);
    const LlamaMix* mix = find_llama_mix(name);
    ASSERT_NE(mix, nullptr);
    EXPECT_EQ(mix->default_type, body);
    const TypeSelector s({.mix = mix, .default_type = body, .has_imatrix = true}, {.n_layer = 32, .n_head = 32, .n_head_kv = 8});
    const TypeSelector s2({.mix = mix, .default_type = body, .has_imatrix = true}, {.n_layer = 32, .n_head = 32, .n_head_kv = 16});
    EXPECT_EQ(s.choose("blk.5.attn_q.weight", {4096, 4096}), body);
    EXPECT_EQ(s.choose("blk.5.ffn_gate.weight", {4096, 14336}), body);
    EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
    EXPECT_EQ(s2.choose("blk.5.attn_v.weight", {4096, 2048}), GgmlType::Q2_K);
    EXPECT_EQ(s.choose("blk.3.ffn_down.weight", {14336, 4096}), GgmlType::Q2_K);
    EXPECT_EQ(s.choose("blk.4.ffn_down.weight", {14336, 4096}), body);
    EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), GgmlType::IQ2_XXS);
    EXPECT_EQ(s.choose("token_embd.weight", {4096, 128256}), GgmlType::Q2_K);
    EXPECT_EQ(s.choose("output.weight", {4096, 128256}), GgmlType::Q5_K);
    EXPECT_EQ(s.choose("blk.5.attn_q.weight", {576, 576}), GgmlType::IQ4_NL);  // 576 % 256: iq4_nl fallback
  }
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ1_S), 24u);
  EXPECT_EQ(llama_file_type_of(GgmlType::IQ1_M), 31u);
}

// TQ1_0, TQ2_0, Q2_0 and Q1_0: their type everywhere but the embeddings (q4_K, except Q1_0) and the output (q6_K).
TEST(LlamaCppMix, TernaryAndLinearLowBitMixes) {
  const ModelFacts facts{.n_layer = 32, .n_head = 32, .n_head_kv = 8};
  for (const auto& [name, body, embd] : {std::tuple{"TQ1_0", GgmlType::TQ1_0, GgmlType::Q4_K}, std::tuple{"TQ2_0", GgmlType::TQ2_0, GgmlType::Q4_K},
                                         std::tuple{"Q2_0", GgmlType::Q2_0, GgmlType::Q4_K}, std::tuple{"Q1_0", GgmlType::Q1_0, GgmlType::Q1_0}}) {
    SCOPED_TRACE(name);
    const LlamaMix* mix = find_llama_mix(name);
    ASSERT_NE(mix, nullptr);
    const TypeSelector s({.mix = mix, .default_type = mix->default_type}, facts);
    EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), body);
    EXPECT_EQ(s.choose("blk.0.ffn_down.weight", {14336, 4096}), body);
    EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), body);
    EXPECT_EQ(s.choose("token_embd.weight", {4096, 128256}), embd);
    EXPECT_EQ(s.choose("output.weight", {4096, 128256}), GgmlType::Q6_K);
  }
  // SmolLM2's 576-wide rows: ternary types fall back to q4_0.
  const TypeSelector tq({.mix = find_llama_mix("tq1_0"), .default_type = GgmlType::TQ1_0}, facts);
  EXPECT_EQ(tq.choose("blk.5.attn_q.weight", {576, 576}), GgmlType::Q4_0);
  EXPECT_EQ(llama_file_type_of(GgmlType::TQ1_0), 36u);
  EXPECT_EQ(llama_file_type_of(GgmlType::TQ2_0), 37u);
  EXPECT_EQ(llama_file_type_of(GgmlType::Q1_0), 40u);
  EXPECT_EQ(llama_file_type_of(GgmlType::Q2_0), 41u);
  EXPECT_EQ(llama_file_type_of(GgmlType::NVFP4), 39u);
  EXPECT_EQ(find_llama_mix("NVFP4"), nullptr);  // llama-quantize offers no NVFP4 file type
}

// A Mixtral-like MoE: 32 layers, GQA 4, 8 experts stored 3-D (ne[2] = 8).
TEST(LlamaCppMix, MixesOnEightExperts) {
  const ModelFacts moe{.n_layer = 32, .n_head = 32, .n_head_kv = 8, .n_expert = 8};
  auto selector = [&](const char* name) {
    const LlamaMix* mix = find_llama_mix(name);
    return TypeSelector({.mix = mix, .default_type = mix->default_type, .has_imatrix = true}, moe);
  };
  const Shape experts_up{4096, 14336, 8}, experts_down{14336, 4096, 8};

  // MXFP4_MOE: experts in mxfp4, everything else (output and embeddings too) in q8_0; routers stay float.
  const auto fp4 = selector("MXFP4_MOE");
  EXPECT_EQ(fp4.choose("blk.5.ffn_up_exps.weight", experts_up), GgmlType::MXFP4);
  EXPECT_EQ(fp4.choose("blk.5.ffn_gate_exps.weight", experts_up), GgmlType::MXFP4);
  EXPECT_EQ(fp4.choose("blk.0.ffn_down_exps.weight", experts_down), GgmlType::MXFP4);
  EXPECT_EQ(fp4.choose("blk.5.attn_q.weight", {4096, 4096}), GgmlType::Q8_0);
  EXPECT_EQ(fp4.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q8_0);
  EXPECT_EQ(fp4.choose("blk.5.ffn_up_shexp.weight", {4096, 14336}), GgmlType::Q8_0);
  EXPECT_EQ(fp4.choose("token_embd.weight", {4096, 32000}), GgmlType::Q8_0);
  EXPECT_EQ(fp4.choose("output.weight", {4096, 32000}), GgmlType::Q8_0);
  EXPECT_EQ(fp4.choose("blk.5.ffn_gate_inp.weight", {4096, 8}), std::nullopt);
  EXPECT_EQ(find_llama_mix("mxfp4_moe")->file_type, 38u);

  // The 3-bit mixes: attn_v and attn_k in q8_0, attn_output in q5_K.
  for (const char* name : {"IQ3_XXS", "IQ3_XS", "IQ3_S", "IQ3_M"}) {
    SCOPED_TRACE(name);
    const auto s = selector(name);
    EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q8_0);
    EXPECT_EQ(s.choose("blk.5.attn_k.weight", {4096, 1024}), GgmlType::Q8_0);
    EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q5_K);
  }
  EXPECT_EQ(selector("IQ3_XXS").choose("blk.5.attn_q.weight", {4096, 4096}), GgmlType::IQ2_S);
  // IQ3_M's ffn_down: q4_K in the first eighth and, with 8 experts, on use_more_bits' layers.
  const auto m = selector("IQ3_M");
  EXPECT_EQ(m.choose("blk.3.ffn_down_exps.weight", experts_down), GgmlType::Q4_K);
  EXPECT_EQ(m.choose("blk.5.ffn_down_exps.weight", experts_down), GgmlType::IQ3_S);
  EXPECT_EQ(m.choose("blk.6.ffn_down_exps.weight", experts_down), GgmlType::Q4_K);  // (6 - 4) % 3 == 2
  EXPECT_EQ(m.choose("blk.28.ffn_down_exps.weight", experts_down), GgmlType::Q4_K);
  EXPECT_EQ(selector("IQ3_XS").choose("blk.5.ffn_up_exps.weight", experts_up), GgmlType::IQ3_XXS);
  // IQ1_S: attn_v on q4_K from 4 experts up, attn_k q4_K and attn_output q5_K with exactly 8.
  const auto iq1 = selector("IQ1_S");
  EXPECT_EQ(iq1.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(iq1.choose("blk.5.attn_k.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(iq1.choose("blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q5_K);
  EXPECT_EQ(iq1.choose("blk.5.ffn_down_exps.weight", experts_down), GgmlType::IQ1_S);
}

// Q2_K_S: q2_K, with attn_v (GQA >= 4) and the first eighth of ffn_down in q4_K; needs an imatrix.
TEST(LlamaCppMix, Q2KSmall) {
  const LlamaMix* mix = find_llama_mix("Q2_K_S");
  ASSERT_NE(mix, nullptr);
  const TypeSelector s({.mix = mix, .default_type = mix->default_type, .has_imatrix = true}, {.n_layer = 32, .n_head = 32, .n_head_kv = 8});
  EXPECT_EQ(s.choose("blk.5.attn_v.weight", {4096, 1024}), GgmlType::Q4_K);
  EXPECT_EQ(s.choose("blk.3.ffn_down.weight", {14336, 4096}), GgmlType::Q4_K);
  EXPECT_EQ(s.choose("blk.4.ffn_down.weight", {14336, 4096}), GgmlType::Q2_K);
  EXPECT_EQ(s.choose("blk.5.attn_output.weight", {4096, 4096}), GgmlType::Q2_K);
  EXPECT_EQ(s.choose("output.weight", {4096, 128256}), GgmlType::Q6_K);
  EXPECT_TRUE(tensor_requires_imatrix("blk.4.ffn_down.weight", GgmlType::Q2_K, mix->file_type));
  EXPECT_EQ(llama_file_type_of(GgmlType::Q2_K), 10u);
}

// llama-quantize's own choices for every mix on three synthetic models (a dense GQA-8 model, a dense
// GQA-2 model with tied embeddings, an 8-expert MoE), recorded by tests/plan/data/
// make_llama_quantize_mixes.py (llama-quantize --dry-run, llama.cpp 0c1e57098): lowbit chooses the same
// type for every tensor of every mix, with and without an importance matrix.
TEST(LlamaCppMix, ReproducesLlamaQuantizeOnSyntheticModels) {
  std::ifstream in(std::filesystem::path(LOWBIT_SOURCE_DIR) / "tests/plan/data/llama_quantize_mixes.txt");
  ASSERT_TRUE(in) << "tests/plan/data/llama_quantize_mixes.txt";
  ModelFacts facts;
  std::string model;
  std::vector<std::pair<const LlamaMix*, bool>> columns;  // mix, with an importance matrix
  int checked = 0, models = 0;
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream fields(line);
    std::string first;
    fields >> first;
    if (first == "model") {
      fields >> model;
      int has_output = 1;
      std::string kv;
      while (fields >> kv) {
        const auto eq = kv.find('=');
        const std::string key = kv.substr(0, eq);
        const int value = std::stoi(kv.substr(eq + 1));
        if (key == "n_layer") facts.n_layer = value;
        else if (key == "n_head") facts.n_head = value;
        else if (key == "n_head_kv") facts.n_head_kv = value;
        else if (key == "n_expert") facts.n_expert = value;
        else if (key == "has_output") has_output = value;
        else FAIL() << "unknown model fact " << key;
      }
      facts.has_output = has_output != 0;
      ++models;
      continue;
    }
    if (first == "columns") {
      columns.clear();
      for (std::string column; fields >> column;) {
        const bool imatrix = column.ends_with("+imatrix");
        const LlamaMix* mix = find_llama_mix(imatrix ? column.substr(0, column.size() - 8) : column);
        ASSERT_NE(mix, nullptr) << column;
        columns.emplace_back(mix, imatrix);
      }
      continue;
    }
    const std::string& tensor = first;
    std::string dims, dim;
    fields >> dims;
    Shape ne;
    for (std::istringstream d(dims); std::getline(d, dim, 'x');) ne.push_back(std::stoll(dim));
    for (const auto& [mix, imatrix] : columns) {
      std::string expected;
      fields >> expected;
      const TypeSelector selector({.mix = mix, .default_type = mix->default_type, .has_imatrix = imatrix}, facts);
      const auto chosen = selector.choose(tensor, ne);
      EXPECT_EQ(chosen ? std::string(ggml_type_name(*chosen)) : "-", expected)
          << model << " " << mix->name << (imatrix ? "+imatrix " : " ") << tensor;
      ++checked;
    }
  }
  EXPECT_EQ(models, 3);
  EXPECT_GT(checked, 10000);
}

// llama.cpp's tensor_requires_imatrix.
TEST(LlamaCppMix, WhichTensorsRequireAnImportanceMatrix) {
  for (const GgmlType type : {GgmlType::IQ2_XXS, GgmlType::IQ2_XS, GgmlType::IQ2_S, GgmlType::IQ1_S, GgmlType::IQ1_M,
                              GgmlType::IQ3_XXS}) {
    EXPECT_TRUE(tensor_requires_imatrix("blk.0.attn_q.weight", type, 0)) << ggml_type_name(type);
    EXPECT_FALSE(tensor_requires_imatrix("token_embd.weight", type, 0));
    EXPECT_FALSE(tensor_requires_imatrix("per_layer_token_embd.weight", type, 0));
    EXPECT_FALSE(tensor_requires_imatrix("output.weight", type, 0));
  }
  for (const GgmlType type : {GgmlType::IQ3_S, GgmlType::IQ4_XS, GgmlType::Q4_K, GgmlType::Q3_K})
    EXPECT_FALSE(tensor_requires_imatrix("blk.0.attn_q.weight", type, 0)) << ggml_type_name(type);
  EXPECT_TRUE(tensor_requires_imatrix("blk.0.attn_q.weight", GgmlType::Q2_K, 21));  // Q2_K_S
  EXPECT_FALSE(tensor_requires_imatrix("blk.0.attn_q.weight", GgmlType::Q2_K, 10));
}

TEST(LlamaCppMix, GlobMatching) {
  EXPECT_TRUE(glob_match("blk.*.ffn_down.weight", "blk.12.ffn_down.weight"));
  EXPECT_TRUE(glob_match("*attn_[qk].weight", "blk.0.attn_k.weight"));
  EXPECT_FALSE(glob_match("*attn_[qk].weight", "blk.0.attn_v.weight"));
  EXPECT_FALSE(glob_match("output", "output.weight"));
}

}  // namespace
}  // namespace lowbit
