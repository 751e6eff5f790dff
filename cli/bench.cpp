// lowbit bench [--format F]... [--rows R --cols C] [--threads N] [--json]: quantize and dequantize
// throughput of the CPU codecs on heavy-tailed random data, each beside memcpy measured in the same run.
// lowbit bench --device cuda [--quick] [--json]: the GPU codecs and matmuls, each beside a copy kernel
// or cuBLAS measured in the same run (include/lowbit/kernels/cuda/benchmark.h).
// lowbit bench --model MODEL --device cuda [--prompt N --gen M] [--json]: the model runtime on the GPU.
#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <nlohmann/json.hpp>

#include "command.h"
#include "lowbit/core/error.h"
#include "lowbit/pipeline/codec_bench.h"
#include "lowbit/pipeline/cuda_backend.h"
#include "lowbit/pipeline/eval_model.h"

namespace lowbit::cli {
namespace {

// Sides of a benchmark weight (the library checks them too; here CLI11 says so at parse time).
constexpr int64_t kMaxSide = int64_t(1) << 20;

// The GPU benchmarks: a markdown table as rows arrive, or (json) one document at the end.
void bench_cuda(bool quick, bool json) {
  const cuda::Backend& gpu = cuda::backend();
  if (gpu.devices().empty()) throw Error("lowbit bench --device cuda: no CUDA device is visible");
  const std::string device = gpu.bench_device_description();
  nlohmann::ordered_json rows = nlohmann::ordered_json::array();
  if (!json) {
    fmt::print("device: {}\nGB/s: bytes the kernel must move per second; ratio: GB/s over the copy kernel's (codecs) "
               "or the reference's time over lowbit's (matmuls, > 1 is faster)\n\n",
               device);
    fmt::print("| {:<26} | {:<11} | {:>6} | {:>8} | {:>7} | {:<11} | {:>8} | {:>5} |\n|---|---|--:|--:|--:|---|--:|--:|\n",
               "kernel", "weight", "tokens", "us", "GB/s", "reference", "ref us", "ratio");
  }
  gpu.run_benchmarks({.quick = quick}, [&](const cuda::BenchRow& r) {
    if (json) {
      rows.push_back({{"kernel", r.kernel}, {"shape", r.shape}, {"tokens", r.tokens}, {"us", r.us}, {"gbps", r.gbps},
                      {"reference", r.reference}, {"reference_us", r.reference_us},
                      {"reference_gbps", r.reference_gbps}, {"ratio", r.ratio}});
      return;
    }
    fmt::print("| {:<26} | {:<11} | {:>6} | {:>8.1f} | {:>7.0f} | {:<11} | {:>8.1f} | {:>5.2f} |\n", r.kernel, r.shape,
               r.tokens ? std::to_string(r.tokens) : "-", r.us, r.gbps, r.reference, r.reference_us, r.ratio);
    std::fflush(stdout);
  });
  if (json) fmt::print("{}\n", nlohmann::ordered_json{{"device", device}, {"rows", rows}}.dump(2));
}

// A model's prefill and decoding speed on the GPU, and the device memory it took.
void bench_model(const std::string& path, int prompt, int generate, bool graph, bool json) {
  const cuda::RuntimeBackend& gpu = cuda::runtime_backend();  // before loading: says at once why not
  const auto start = std::chrono::steady_clock::now();
  EvalModel model(path);  // read, its values checked
  const double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto t = gpu.time_generation(model.model(), prompt, generate, {.decode_graph = graph});
  if (json) {
    fmt::print("{}\n", nlohmann::ordered_json{{"model", path}, {"device", t.device}, {"prompt", t.prompt}, {"gen", t.generate},
                                              {"prefill_tokens_per_s", t.prefill_tokens_per_s}, {"decode_tokens_per_s", t.decode_tokens_per_s},
                                              {"decode_graph", t.decode_graph}, {"forward_windows", t.forward_windows},
                                              {"forward_tokens_per_s", t.forward_tokens_per_s},
                                              {"weight_bytes", t.weight_bytes}, {"decode_weight_bytes", t.decode_weight_bytes},
                                              {"peak_gpu_memory_bytes", t.peak_memory_bytes},
                                              {"load_seconds", load_s}, {"upload_seconds", t.upload_seconds}}
                            .dump(2));
    return;
  }
  fmt::print("{} on {}\nprefill {} tokens: {:.0f} tokens/s\ndecode {} tokens at batch 1: {:.1f} tokens/s ({})\n"
             "eval's pass, {} windows of {}: {:.0f} tokens/s\nweights on the GPU {:.1f} MiB, {:.1f} MiB read per decoding step; "
             "peak GPU memory {:.1f} MiB\n"
             "model read and checked in {:.2f} s, copied to the GPU in {:.2f} s\n",
             path, t.device, t.prompt, t.prefill_tokens_per_s, t.generate, t.decode_tokens_per_s,
             t.decode_graph ? "each step a CUDA graph" : "kernels launched one by one", t.forward_windows, t.prompt,
             t.forward_tokens_per_s, double(t.weight_bytes) / (1 << 20), double(t.decode_weight_bytes) / (1 << 20),
             double(t.peak_memory_bytes) / (1 << 20), load_s, t.upload_seconds);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto* cmd = app.add_subcommand("bench", "Time the codecs (CPU: beside memcpy) or the GPU codecs and matmuls (beside a copy "
                                          "kernel and cuBLAS), references measured in the same run");
  struct Options {
    CommonOptions common;
    std::vector<std::string> formats{"nf4", "fp4", "int8", "q4_0", "q8_0", "q4_K", "q6_K", "iq4_xs"};
    int64_t rows = 4096, cols = 4096;
    int threads = 0, repeats = 5;
    std::string device = "cpu", model;
    int prompt = 512, generate = 128;
    bool no_graph = false;
    bool quick = false;
  };
  auto o = std::make_shared<Options>();
  cmd->add_option("--format", o->formats, "Formats to time (nf4, fp4, int8 or any ggml type lowbit writes)")->capture_default_str();
  cmd->add_option("--rows", o->rows, "Rows of the weight")->check(CLI::Range(int64_t(1), kMaxSide))->capture_default_str();
  cmd->add_option("--cols", o->cols, "Columns of the weight")->check(CLI::Range(int64_t(1), kMaxSide))->capture_default_str();
  cmd->add_option("--threads", o->threads, "Threads (default: all cores)")->check(CLI::Range(0, 1024));
  cmd->add_option("--repeats", o->repeats, "Timed runs; the median is reported")->check(CLI::Range(1, 1000))->capture_default_str();
  cmd->add_option("--device", o->device, "cpu, or cuda: the GPU codecs and matmuls on device 0")
      ->check(CLI::IsMember({"cpu", "cuda"}))
      ->capture_default_str();
  cmd->add_flag("--quick", o->quick, "--device cuda: one size of each, for a smoke run");
  cmd->add_option("--model", o->model, "--device cuda: time this model (.gguf, Hugging Face or bitsandbytes directory) instead: prefill and "
                                       "batch-1 decoding tokens/s, peak GPU memory");
  cmd->add_option("--prompt", o->prompt, "--model: prompt tokens, processed in one pass")->capture_default_str();
  cmd->add_option("--gen", o->generate, "--model: tokens decoded one at a time after the prompt")->capture_default_str();
  cmd->add_flag("--no-graph", o->no_graph, "--model: decode by launching each kernel from the host instead of replaying a CUDA graph of the step");
  add_common_options(*cmd, o->common);
  cmd->callback([o] {
    if (!o->model.empty()) {
      if (o->device != "cuda") throw Error("bench --model times the GPU runtime: add --device cuda");
      return bench_model(o->model, o->prompt, o->generate, !o->no_graph, o->common.json);
    }
    if (o->device == "cuda") return bench_cuda(o->quick, o->common.json);
    // The pool is sized once, on first use: set the thread count before any work.
    if (o->threads > 0) ::setenv("LOWBIT_THREADS", std::to_string(o->threads).c_str(), 1);
    const CodecBenchmark bench = bench_cpu_codecs(o->formats, o->rows, o->cols, o->repeats);
    if (o->common.json) {
      nlohmann::ordered_json j{{"device", "cpu"}, {"threads", bench.threads}, {"rows", bench.rows}, {"cols", bench.cols},
                               {"memcpy_gbs", bench.memcpy_gbs}};
      j["formats"] = nlohmann::ordered_json::array();
      for (const auto& r : bench.formats)
        j["formats"].push_back({{"format", r.format}, {"quantize_gbs", r.quantize_gbs}, {"dequantize_gbs", r.dequantize_gbs},
                                {"dequantize_vs_memcpy", r.dequantize_gbs / bench.memcpy_gbs}});
      fmt::print("{}\n", j.dump(2));
      return;
    }
    fmt::print("{}×{} weight, {} thread(s); GB/s count bytes read + written; memcpy {:.1f} GB/s in the same run\n", bench.rows, bench.cols,
               bench.threads, bench.memcpy_gbs);
    fmt::print("{:<8} {:>14} {:>16} {:>18}\n", "format", "quantize GB/s", "dequantize GB/s", "dequant / memcpy");
    for (const auto& r : bench.formats)
      fmt::print("{:<8} {:>14.2f} {:>16.2f} {:>18.2f}\n", r.format, r.quantize_gbs, r.dequantize_gbs, r.dequantize_gbs / bench.memcpy_gbs);
  });
}

}  // namespace lowbit::cli
