// Writes the binary fuzz seeds with lowbit's own writers (the JSON seeds are small hand-written files).
// Run from the project root after scripts/fuzz.sh has compiled the library's objects:
//   clang++ -std=c++20 -Iinclude -Isrc -fsanitize=address,undefined fuzz/make_seeds.cpp build/fuzz/obj/*.o \
//     -lfmt $(pkg-config --libs libpcre2-8 libhwy) -pthread -o build/fuzz/make_seeds && build/fuzz/make_seeds
#include <cmath>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "lowbit/io/bnb_checkpoint.h"
#include "lowbit/io/gguf.h"
#include "lowbit/io/hessian.h"
#include "lowbit/io/imatrix.h"
#include "lowbit/io/safetensors.h"
#include "lowbit/model/perplexity.h"
#include "lowbit/pipeline/bnb_jobs.h"
#include "lowbit/pipeline/plan.h"

using namespace lowbit;
namespace fs = std::filesystem;

namespace {

std::vector<float> ramp(size_t n, float scale) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = scale * std::sin(float(i) * 0.7f + 0.3f);
  return v;
}

// A Llama model small enough to be a seed: width 4, two heads (one KV head), one layer, 6 tokens with
// a byte-level BPE vocabulary, all F32.
void tiny_model(const fs::path& path, int n_layer) {
  gguf::Writer w(path);
  w.set("general.architecture", {std::string("llama")});
  w.set("llama.block_count", {uint32_t(n_layer)});
  w.set("llama.context_length", {uint32_t(16)});
  w.set("llama.embedding_length", {uint32_t(4)});
  w.set("llama.feed_forward_length", {uint32_t(8)});
  w.set("llama.attention.head_count", {uint32_t(2)});
  w.set("llama.attention.head_count_kv", {uint32_t(1)});
  w.set("llama.attention.layer_norm_rms_epsilon", {1e-5f});
  w.set("llama.rope.freq_base", {10000.0f});
  w.set("tokenizer.ggml.model", {std::string("gpt2")});
  w.set("tokenizer.ggml.pre", {std::string("gpt-2")});
  w.set("tokenizer.ggml.tokens", gguf::make_string_array({"a", "b", "ab", "\xC4\xA0", "<s>", "</s>"}));
  w.set("tokenizer.ggml.token_type", {gguf::Array{gguf::ValueType::i32, {{int32_t(1)}, {int32_t(1)}, {int32_t(1)}, {int32_t(1)}, {int32_t(3)}, {int32_t(3)}}}});
  w.set("tokenizer.ggml.merges", gguf::make_string_array({"a b"}));
  w.set("tokenizer.ggml.bos_token_id", {uint32_t(4)});
  w.set("tokenizer.ggml.eos_token_id", {uint32_t(5)});
  std::vector<std::pair<std::string, Shape>> tensors = {{"token_embd.weight", {4, 6}}, {"output_norm.weight", {4}}};
  for (int l = 0; l < n_layer; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    for (auto [name, shape] : std::vector<std::pair<std::string, Shape>>{
             {"attn_norm.weight", {4}}, {"ffn_norm.weight", {4}}, {"attn_q.weight", {4, 4}}, {"attn_k.weight", {4, 2}},
             {"attn_v.weight", {4, 2}}, {"attn_output.weight", {4, 4}}, {"ffn_gate.weight", {4, 8}}, {"ffn_up.weight", {4, 8}},
             {"ffn_down.weight", {8, 4}}})
      tensors.push_back({p + name, shape});
  }
  for (const auto& [name, shape] : tensors) w.add_tensor(name, GgmlType::F32, shape);
  for (const auto& [name, shape] : tensors) {
    const auto values = ramp(size_t(shape_elements(shape)), name.find("norm") != std::string::npos ? 1.0f : 0.5f);
    w.write_data(name, std::as_bytes(std::span(values)));
  }
  w.finish();
}

void write_text(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

}  // namespace

int main() {
  const fs::path seeds = "fuzz/seeds";
  for (const char* t : {"gguf_model", "imatrix", "hessian", "bnb_quant_state", "bnb_checkpoint", "plan", "kld_base"})
    fs::create_directories(seeds / t);

  tiny_model(seeds / "gguf_model" / "tiny-llama.gguf", 1);

  write_imatrix_gguf(seeds / "imatrix" / "imatrix.gguf", {{"blk.0.attn_q.weight", {1.0f, 2.0f, 3.0f, 4.0f}, {2.0f}},
                                                          {"blk.0.ffn_down.weight", {0.5f, 0.25f}, {1.0f}},
                                                          {"blk.0.ffn_up_exps.weight", {1.0f, 2.0f, 0.0f, 0.0f}, {3.0f, 0.0f}}},
                     {"seed.txt"}, 1, 16);
  {  // legacy .dat: 1 entry "w" (ncall 2, 3 values), last chunk 1, dataset "d"
    std::string dat;
    auto i32 = [&](int32_t v) { dat.append(reinterpret_cast<const char*>(&v), 4); };
    auto f32 = [&](float v) { dat.append(reinterpret_cast<const char*>(&v), 4); };
    i32(1), i32(1), dat += "w", i32(2), i32(3), f32(2.0f), f32(4.0f), f32(6.0f), i32(1), i32(1), dat += "d";
    write_text(seeds / "imatrix" / "legacy.dat", dat);
  }

  write_hessians(seeds / "hessian" / "hessian.gguf",
                 {{"blk.0.attn_qkv", {"blk.0.attn_q.weight", "blk.0.attn_k.weight"}, 2, {4.0f, 1.0f, 1.0f, 2.0f}},
                  {"blk.0.ffn_down", {"blk.0.ffn_down.weight"}, 1, {3.0f}}},
                 {"seed.txt"}, 1, 16, 16);

  write_text(seeds / "bnb_quant_state" / "nf4.json",
             bnb::pack_quant_state({.quant_type = "nf4", .blocksize = 64, .dtype = DType::bf16, .shape = {8, 16}}));
  write_text(seeds / "bnb_quant_state" / "fp4-nested.json",
             bnb::pack_quant_state({.quant_type = "fp4", .blocksize = 64, .dtype = DType::f16, .shape = {4, 32},
                                    .nested_offset = 0.0123f, .nested_blocksize = 256}));

  {  // bitsandbytes checkpoints of one 8 × 16 Linear weight, quantized by lowbit's own quantizer.
    const fs::path scratch = fs::temp_directory_path() / "lowbit-make-seeds";
    fs::remove_all(scratch);
    fs::create_directories(scratch);
    const auto w = ramp(128, 1.0f);
    safetensors::Writer::write_file(scratch / "plain.safetensors",
                                    {{"model.layers.0.mlp.up_proj.weight", TensorView::make(DType::f32, {8, 16}, std::as_bytes(std::span(w)))}});
    for (auto [name, format, double_quant] : {std::tuple{"nf4", "nf4", false}, {"nf4-dq", "nf4", true}, {"int8", "int8", false}}) {
      const auto out = scratch / (std::string(name) + ".safetensors");
      quantize_to_bnb(scratch / "plain.safetensors", out, {.format = {.id = *parse_bnb_format(format), .blocksize = 64, .double_quant = double_quant}});
      fs::copy_file(out, seeds / "bnb_checkpoint" / (std::string(name) + ".safetensors"), fs::copy_options::overwrite_existing);
    }
    fs::remove_all(scratch);
  }

  {
    Plan plan{.model = "tiny", .target = PlanTarget::gguf, .target_bpw = 4.5, .achieved_bpw = 4.5};
    plan.tensors.push_back({.name = "blk.0.attn_q.weight", .format = format_spec(GgmlType::Q4_K), .params = 256, .bytes = 144, .quantized = true});
    plan.tensors.push_back({.name = "output_norm.weight", .format = format_spec(GgmlType::F32), .params = 4, .bytes = 16});
    write_plan(seeds / "plan" / "gguf-plan.json", plan);
    Plan bnb{.model = "tiny", .target = PlanTarget::bnb};
    bnb.tensors.push_back({.name = "model.layers.0.mlp.up_proj.weight", .format = FormatSpec{.id = FormatId::nf4, .blocksize = 64, .double_quant = true},
                           .params = 128, .bytes = 72, .quantized = true});
    write_plan(seeds / "plan" / "bnb-plan.json", bnb);
  }

  {  // two windows of 4 tokens over a vocabulary of 3
    BaseLogits base(4, 3, {0, 1, 2, 1, 0, 2, 2, 1});
    const auto logits = ramp(12, 3.0f);
    base.add_window(logits);
    base.add_window(logits);
    base.save(seeds / "kld_base" / "base.logits");
  }
  return 0;
}
