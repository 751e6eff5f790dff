// The CUDA backend of LlamaRuntime: the layer sequence of model/llama.cpp over the GPU kernels of
// kernels/cuda. The model (config, weights, embedding rows) comes from the loaded LlamaModel; this file
// only decides where each step runs and which matmul path a weight takes.
#include <cuda_runtime.h>
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <optional>
#include <set>

#include "lowbit/core/error.h"
#include "lowbit/core/thread_pool.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/kernels/cuda/codecs.h"
#include "lowbit/kernels/cuda/device.h"
#include "lowbit/kernels/cuda/matmul.h"
#include "lowbit/kernels/cuda/transformer.h"
#include "lowbit/model/cuda_runtime.h"
#include "lowbit/model/moe_routing.h"

namespace lowbit::cuda {
namespace {

void check_cuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) throw Error(fmt::format("CUDA error in {}: {}", what, cudaGetErrorString(status)));
}

// Device memory owned by one object.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    if (bytes) check_cuda(cudaMalloc(&p, bytes), "cudaMalloc");
    memory_.reset(p);
  }
  template <class T = void>
  T* get() const { return static_cast<T*>(memory_.get()); }
  size_t bytes() const { return bytes_; }

 private:
  struct Free {
    void operator()(void* p) const { cudaFree(p); }
  };
  std::unique_ptr<void, Free> memory_;
  size_t bytes_ = 0;
};

DeviceBuffer upload(std::span<const std::byte> bytes, cudaStream_t stream) {
  DeviceBuffer buffer(bytes.size());
  if (!bytes.empty()) check_cuda(cudaMemcpyAsync(buffer.get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice, stream), "upload");
  return buffer;
}
DeviceBuffer upload(std::span<const float> values, cudaStream_t stream) { return upload(std::as_bytes(values), stream); }

// A model's weights reach the GPU through a few pinned host buffers: host threads copy the mapped file
// into one buffer while the copy engine reads another. A copy from pageable memory goes through the
// driver's own staging one buffer at a time and on one thread, at a fraction of PCIe speed.
class PinnedUploader {
 public:
  explicit PinnedUploader(cudaStream_t stream) : stream_(stream) {
    for (Slot& slot : slots_) {
      check_cuda(cudaHostAlloc(&slot.host, kSlotBytes, cudaHostAllocDefault), "cudaHostAlloc");
      check_cuda(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming), "cudaEventCreate");
    }
  }
  ~PinnedUploader() {
    cudaStreamSynchronize(stream_);  // no copy may still read a buffer freed here
    for (Slot& slot : slots_) cudaEventDestroy(slot.done), cudaFreeHost(slot.host);
  }
  PinnedUploader(const PinnedUploader&) = delete;
  PinnedUploader& operator=(const PinnedUploader&) = delete;

  // Worth its buffers' allocation from about this many bytes of weights.
  static constexpr size_t kWorthFrom = size_t(512) << 20;

  DeviceBuffer upload(std::span<const std::byte> bytes) {
    DeviceBuffer buffer(bytes.size());
    auto* device = static_cast<std::byte*>(buffer.get());
    for (size_t at = 0; at < bytes.size(); at += kSlotBytes) {
      const size_t n = std::min(kSlotBytes, bytes.size() - at);
      Slot& slot = slots_[next_++ % slots_.size()];
      check_cuda(cudaEventSynchronize(slot.done), "pinned buffer reuse");
      auto* host = static_cast<std::byte*>(slot.host);
      parallel_for(int64_t((n + kPiece - 1) / kPiece), 1, [&](int64_t first, int64_t last) {
        const size_t begin = size_t(first) * kPiece, end = std::min(n, size_t(last) * kPiece);
        std::memcpy(host + begin, bytes.data() + at + begin, end - begin);
      });
      check_cuda(cudaMemcpyAsync(device + at, host, n, cudaMemcpyHostToDevice, stream_), "upload");
      check_cuda(cudaEventRecord(slot.done, stream_), "cudaEventRecord");
    }
    return buffer;
  }

 private:
  static constexpr size_t kSlotBytes = size_t(64) << 20, kPiece = size_t(1) << 20;
  struct Slot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };
  cudaStream_t stream_;
  std::array<Slot, 3> slots_{};
  size_t next_ = 0;
};

// Bumped whenever device memory that a captured graph may point into is reallocated (a scratch array
// grows, a weight is reloaded): a decoding graph captured before it is stale.
std::atomic<uint64_t> device_layout_version{0};

// A growable scratch array of floats or 16-bit values.
struct Scratch {
  DeviceBuffer buffer;
  void* reserve(size_t bytes) {
    if (buffer.bytes() < bytes) buffer = DeviceBuffer(bytes), ++device_layout_version;
    return buffer.get();
  }
};

struct GraphExecDestroy {
  void operator()(cudaGraphExec_t graph) const { cudaGraphExecDestroy(graph); }
};

size_t used_device_memory() {
  size_t free = 0, total = 0;
  check_cuda(cudaMemGetInfo(&free, &total), "cudaMemGetInfo");
  return total - free;
}

class CudaLlama final : public LlamaRuntime {
 public:
  CudaLlama(LlamaModel& model, const RuntimeOptions& options);
  ~CudaLlama() override { cudaStreamDestroy(stream_); }

  const LlamaConfig& config() const override { return config_; }
  Device device() const override { return Device::cuda; }
  int batch_windows(int n_ctx) const override;

  std::vector<float> forward(std::span<const int32_t> tokens, int windows, const ActivationObserver& observer) const override;
  std::vector<float> next_token_log_probs(std::span<const int32_t> tokens, int windows) const override;
  std::unique_ptr<LogProbReference> keep_log_probs(std::vector<int64_t> rows, std::vector<float> log_probs) const override;
  std::vector<double> output_klds(const std::vector<float>& hidden, const LogProbReference& reference) const override;
  std::vector<float> embed(std::span<const int32_t> tokens) const override { return model_.embed(tokens); }
  void apply_layer(int layer, std::vector<float>& hidden, int windows, const ActivationObserver& observer) const override;
  std::vector<float> output_logits(const std::vector<float>& hidden, const ActivationObserver& observer) const override;
  QuantizedMatrix swap_weight(const std::string& name, const QuantizedMatrix& weight) override;

  // Generation (time_generation): a prompt through every layer into a cache of `capacity`, then one
  // token at a time; returns the greedy next token.
  int32_t prefill(std::span<const int32_t> prompt, int64_t capacity);
  int32_t decode(int32_t token, int64_t position);
  bool decodes_by_graph() const { return decode_graph_ != nullptr; }
  size_t weight_bytes() const;
  size_t decode_weight_bytes() const;
  cudaStream_t stream() const { return stream_; }

 private:
  struct Weight {
    std::string name;
    QuantizedMatrix host;
    DeviceBuffer bytes;  // as the host holds them; none for a packed bitsandbytes weight
    // q4_K or packed nf4/fp4 whose shape the fused kernel takes: its own layout, or its rows of the
    // layer's stacked gate_up. A packed nf4/fp4 weight is this layout alone, which the many-token
    // path dequantizes from (dequantize_fused).
    std::optional<Fused4bitWeight> fused;
  };
  struct Layer {
    DeviceBuffer attn_norm, ffn_norm, q_norm, k_norm, q_bias, k_bias, v_bias;
    Weight *q, *k, *v, *o;
    Weight *gate = nullptr, *up = nullptr, *down = nullptr;  // a dense feed-forward block
    // A mixture-of-experts block (router set): the stacked experts, the optional shared expert and its gate.
    Weight *router = nullptr, *gate_exps = nullptr, *up_exps = nullptr, *down_exps = nullptr;
    Weight *gate_shexp = nullptr, *up_shexp = nullptr, *down_shexp = nullptr, *shexp_gate = nullptr;
    // gate's and up's fused layouts stacked (stack_gate_up), theirs then views of its rows: one launch for both.
    std::optional<Fused4bitWeight> gate_up;
  };
  // Per batch: activations sized for `tokens` rows, grown on demand.
  struct Workspace {
    Scratch hidden, normed, normed_half, q, k, v, att, att_half, gate, up, act, act_half, logits, cache_k, cache_v;
    Scratch expert_in, expert_in_half, expert_out, router_logits, route_rows, route_weights;  // mixture of experts
    Scratch weight_tile;  // a quantized weight dequantized to 16 bits for the tensor cores
    Scratch targets, target_log_probs;  // perplexity's next tokens and their log-probabilities
    Scratch klds;                       // the probe's KL-divergence per reference row
    Scratch token_ids, embedding_rows;  // the tokens to embed and their stored rows of token_embd
  };

  // q4_K in the fused kernel's shape. Stacked experts multiply a few rows at a time, each expert's
  // own: the fused layout would serve none of them.
  static bool fusable(const Weight& w) {
    return w.host.type == GgmlType::Q4_K && w.host.rows % 16 == 0 && w.host.cols % 128 == 0 && w.name.find("_exps.") == std::string::npos;
  }
  // A bitsandbytes 4-bit weight stays packed where the fused kernel takes its shape and blocksize and
  // its dequantized values are in the activations' 16-bit type, as the CPU holds them (so the
  // many-token path multiplies by the CPU's very values); any other is uploaded as the CPU holds it.
  // Rows stored in another order move whole, so no block may span two. The embedding is gathered from
  // the host's bytes, hence never packed.
  bool keeps_packed(const std::string& name, const QuantizedMatrix& m) const {
    if (!m.packed_4bit || name == "token_embd.weight" || name.find("_exps.") != std::string::npos) return false;
    const bnb::Packed4bitView& p = *m.packed_4bit;
    return p.dtype == half_ && m.rows % 16 == 0 && m.cols % 64 == 0 && p.blocksize >= 64 && (p.blocksize & (p.blocksize - 1)) == 0 &&
           (p.row_order.empty() || (m.cols % p.blocksize == 0 && int64_t(p.row_order.size()) == m.rows));
  }
  void load_weight(Weight& w, const QuantizedMatrix& m, PinnedUploader* uploader = nullptr);
  // The fused layout of a q4_K weight of the kernel's shape (a packed nf4/fp4 weight gets its own in load_weight).
  void prepare_fused_layout(Weight& w) const;
  // A dense block's gate and up, both in the fused layout, stacked into layer.gate_up; otherwise each
  // keeps (or gets back) its own.
  void stack_gate_up(Layer& layer);
  // The tokens' embedding rows into ws_.hidden (float32, as LlamaModel::embed): their stored rows
  // gathered and dequantized on the GPU, the same values the CPU's dequantization gives.
  void embed_on_device(std::span<const int32_t> tokens) const;
  Activations normed(int64_t tokens) const;
  // y (=, or += with accumulate) x · Wᵀ for `tokens` rows of x; with `expert` ≥ 0, W is that expert's
  // rows of a stacked weight.
  void product(const Weight& w, const Activations& x, int64_t tokens, float* y, bool accumulate, const ActivationObserver& observer,
               int expert = -1) const;
  // Hands the observer the rows that multiply w (to the host: importance matrices, Hessians).
  void observe(const Weight& w, const Activations& x, int64_t tokens, int64_t cols, const ActivationObserver& observer, int expert) const;
  // down(silu(gate(x)) ⊙ up(x)) into y, as product() adds or sets; with gate_up (gate and up stacked),
  // one launch makes both for the few tokens the fused kernel takes.
  void feed_forward(const Weight& gate, const Weight& up, const Weight& down, const Activations& x, int64_t tokens, float* y,
                    bool accumulate, const ActivationObserver& observer, int expert = -1,
                    const Fused4bitWeight* gate_up = nullptr) const;
  // A mixture-of-experts block's output added to ws_.hidden.
  void mixture_of_experts(const Layer& layer, const Activations& x, int64_t tokens, const ActivationObserver& observer) const;
  void layer(int index, int64_t tokens, const Positions& positions, const KvCache& cache, const ActivationObserver& observer) const;
  void head(int64_t tokens, const ActivationObserver& observer) const;
  // Every block, the head and the greedy choice (into next_token_) for one token a window.
  void decode_step(const Positions& positions) const;
  int32_t download_next_token() const;
  // Decoding replays one CUDA graph of decode_step: the position lives in device memory, so the same
  // launches serve every step. The graph holds device addresses: it is captured again when the scratch,
  // a weight or the generation cache has moved (GraphKey).
  struct GraphKey {
    uint64_t layout = 0;
    const float* cache = nullptr;
    int64_t capacity = 0;
    bool operator==(const GraphKey&) const = default;
  };
  void capture_decode_graph(const Positions& positions, const GraphKey& key);
  KvCache cache_for(int64_t windows, int64_t capacity, int layers = 1) const;
  KvCache layer_cache(int layer) const;  // block `layer`'s part of the generation cache
  std::vector<float> run(std::span<const int32_t> tokens, int windows, int first_layer, int last_layer, const std::vector<float>* hidden,
                         bool logits, const ActivationObserver& observer) const;
  // run()'s first part: the state after layers [first_layer, last_layer) left in ws_.hidden; returns its rows.
  int64_t run_layers(std::span<const int32_t> tokens, int windows, int first_layer, int last_layer, const std::vector<float>* hidden,
                     const ActivationObserver& observer) const;
  void sync() const { check_cuda(cudaStreamSynchronize(stream_), "cudaStreamSynchronize"); }

  LlamaModel& model_;
  LlamaConfig config_;
  DType half_;
  cudaStream_t stream_ = nullptr;
  mutable MatmulContext matmul_;
  std::map<std::string, Weight> weights_;
  std::vector<Layer> layers_;
  Weight* output_ = nullptr;
  const Weight* embedding_ = nullptr;  // token_embd: the tokens' rows are taken on the GPU
  DeviceBuffer output_norm_, inv_freq_;
  mutable Workspace ws_;
  KvCache generation_cache_{};
  bool use_decode_graph_;
  DeviceBuffer device_position_;  // the decoding step's position, read by its kernels
  DeviceBuffer next_token_;       // the greedy choice of the last prefill or decoding step
  std::unique_ptr<CUgraphExec_st, GraphExecDestroy> decode_graph_;
  GraphKey decode_graph_key_;
};

CudaLlama::CudaLlama(LlamaModel& model, const RuntimeOptions& options)
    : model_(model), config_(model.config()), half_(options.activations),
      // A mixture of experts routes on the host between its kernels: no graph can hold its step.
      use_decode_graph_(options.decode_graph && config_.n_expert == 0) {
  if (half_ != DType::bf16 && half_ != DType::f16) throw Error("GPU activations must be bf16 or f16");
  if (devices().empty()) throw Error("no CUDA device is visible");
  device_position_ = DeviceBuffer(sizeof(int64_t));
  next_token_ = DeviceBuffer(sizeof(int32_t));
  check_cuda(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  size_t total = 0;
  for (const auto& [name, m] : model.matrices()) total += keeps_packed(name, m) ? m.packed_4bit->packed.size() : m.data.size();
  std::optional<PinnedUploader> uploader;
  if (total >= PinnedUploader::kWorthFrom) uploader.emplace(stream_);
  for (const auto& [name, m] : model.matrices()) weights_[name].name = name, load_weight(weights_[name], m, uploader ? &*uploader : nullptr);
  uploader.reset();  // waits for its copies
  embedding_ = &weights_.at("token_embd.weight");
  output_ = &weights_.at(model.output_tied() ? "token_embd.weight" : "output.weight");
  output_norm_ = upload(model.output_norm(), stream_);
  inv_freq_ = upload(std::span<const float>(config_.rope.inv_freq), stream_);  // the CPU's own table
  for (int l = 0; l < config_.n_layer; ++l) {
    const auto v = model.layer_vectors(l);
    const std::string p = fmt::format("blk.{}.", l);
    auto find = [&](const char* suffix) -> Weight* {
      const auto it = weights_.find(p + suffix);
      return it == weights_.end() ? nullptr : &it->second;
    };
    layers_.push_back({upload(v.attn_norm, stream_), upload(v.ffn_norm, stream_), upload(v.q_norm, stream_), upload(v.k_norm, stream_),
                       upload(v.q_bias, stream_), upload(v.k_bias, stream_), upload(v.v_bias, stream_), find("attn_q.weight"),
                       find("attn_k.weight"), find("attn_v.weight"), find("attn_output.weight"), find("ffn_gate.weight"),
                       find("ffn_up.weight"), find("ffn_down.weight"), find("ffn_gate_inp.weight"), find("ffn_gate_exps.weight"),
                       find("ffn_up_exps.weight"), find("ffn_down_exps.weight"), find("ffn_gate_shexp.weight"), find("ffn_up_shexp.weight"),
                       find("ffn_down_shexp.weight"), find("ffn_gate_inp_shexp.weight")});
    stack_gate_up(layers_.back());
  }
  sync();  // the uploads read the host's mapped bytes
}

void CudaLlama::load_weight(Weight& w, const QuantizedMatrix& m, PinnedUploader* uploader) {
  ++device_layout_version;
  w.host = m;
  w.bytes = DeviceBuffer();
  w.fused.reset();
  if (keeps_packed(w.name, m)) {
    // The stored codes and scales go up, are re-laid into the fused layout and let go: that layout
    // holds all the weight's bytes, once.
    const bnb::Packed4bitView& p = *w.host.packed_4bit;
    DeviceBuffer codes = uploader ? uploader->upload(p.packed) : upload(p.packed, stream_), absmax, nested_absmax, nested_offset;
    Bnb4bitWeight b{.type = *bnb::quant_type_of(p.format), .rows = m.rows, .cols = m.cols, .blocksize = p.blocksize};
    if (p.row_order.empty()) {
      absmax = upload(p.absmax, stream_);
      if (p.double_quant()) {
        nested_absmax = upload(p.nested_absmax, stream_);
        nested_offset = upload(std::span(&p.nested_offset, 1), stream_);
        b.nested = {absmax.get<uint8_t>(), nested_absmax.get<float>(), nested_offset.get<float>()};
      }
    } else {
      // Whole rows of codes and of float scales into the matrix's order (nested scales recovered
      // first: their groups of 256 blocks do not move with the rows).
      const DeviceBuffer order = upload(std::as_bytes(p.row_order), stream_);
      const std::vector<float> scales = bnb::block_scales(p);
      const DeviceBuffer stored_codes = std::move(codes), stored_scales = upload(std::span<const float>(scales), stream_);
      codes = DeviceBuffer(stored_codes.bytes()), absmax = DeviceBuffer(stored_scales.bytes());
      gather_row_bytes(stored_codes.get(), m.cols / 2, order.get<int32_t>(), m.rows, codes.get(), stream_);
      gather_row_bytes(stored_scales.get(), m.cols / p.blocksize * 4, order.get<int32_t>(), m.rows, absmax.get(), stream_);
      sync();  // the stored order's buffers die here
    }
    b.packed = codes.get<uint8_t>();
    if (!b.nested.codes) b.absmax = absmax.get<float>();
    w.fused = prepare_fused(b, stream_);
    sync();  // the stored bytes die here
    return;
  }
  if (!has_ggml_dequantize(m.type)) {
    // A type with no GPU kernel (none lowbit writes has none): its float32 values as the CPU dequantizes them.
    std::vector<float> values(size_t(m.rows * m.cols));
    dequantize_rows(m.type, m.data.data(), m.rows, m.cols, values.data());
    w.bytes = upload(std::span<const float>(values), stream_);
    w.host.type = GgmlType::F32;
    sync();  // `values` dies here
    return;
  }
  w.bytes = uploader ? uploader->upload(m.data) : upload(m.data, stream_);
  prepare_fused_layout(w);
}

void CudaLlama::prepare_fused_layout(Weight& w) const {
  if (fusable(w)) w.fused = prepare_fused(Q4KWeight{w.bytes.get(), w.host.rows, w.host.cols}, stream_);
}

void CudaLlama::stack_gate_up(Layer& L) {
  ++device_layout_version;
  L.gate_up.reset();  // gate's and up's views of its rows keep its memory while they are stacked again
  if (!L.gate || !L.up || !L.gate->fused || !L.up->fused || L.gate->fused->format != L.up->fused->format ||
      L.gate->host.cols != L.up->host.cols || L.gate->host.rows != L.up->host.rows)
    return;
  const Fused4bitWeight* parts[] = {&*L.gate->fused, &*L.up->fused};
  L.gate_up = stack_fused(parts, stream_);
  sync();  // the copies read the parts
  L.gate->fused = fused_rows(*L.gate_up, 0, L.gate->host.rows);
  L.up->fused = fused_rows(*L.gate_up, L.gate->host.rows, L.up->host.rows);
}

size_t CudaLlama::weight_bytes() const {
  // A stacked gate_up once: gate's and up's layouts are views of its rows.
  size_t total = 0;
  std::set<const void*> stacks;
  for (const Layer& L : layers_)
    if (L.gate_up) total += L.gate_up->bytes(), stacks.insert(L.gate_up->memory.get());
  for (const auto& [name, w] : weights_) total += w.bytes.bytes() + (w.fused && !stacks.contains(w.fused->memory.get()) ? w.fused->bytes() : 0);
  return total;
}

size_t CudaLlama::decode_weight_bytes() const {
  // A step reads the fused layout of a weight that has one; of stacked experts, the routed share.
  auto read = [&](const Weight* w) -> double {
    if (!w) return 0;
    const double bytes = double(w->fused ? w->fused->bytes() : w->bytes.bytes());
    return w->name.find("_exps.") != std::string::npos ? bytes * config_.n_expert_used / config_.n_expert : bytes;
  };
  double total = read(output_);
  for (const Layer& L : layers_) {
    total += L.gate_up ? double(L.gate_up->bytes()) : read(L.gate) + read(L.up);
    for (const Weight* w : {L.q, L.k, L.v, L.o, L.down, L.router, L.gate_exps, L.up_exps, L.down_exps, L.gate_shexp, L.up_shexp,
                            L.down_shexp, L.shexp_gate})
      total += read(w);
  }
  return size_t(total);
}

int CudaLlama::batch_windows(int n_ctx) const {
  // Enough windows for ~8k tokens a pass, with the logits that come back under 2 GB.
  const int64_t by_tokens = std::max<int64_t>(1, 8192 / std::max(n_ctx, 1));
  const int64_t by_logits = std::max<int64_t>(1, (int64_t(2) << 30) / (int64_t(n_ctx) * config_.n_vocab * 4));
  return int(std::min(by_tokens, by_logits));
}

// The matmul path of one weight for `tokens` rows: see the header's comment.
void CudaLlama::product(const Weight& w, const Activations& x, int64_t tokens, float* y, bool accumulate,
                        const ActivationObserver& observer, int expert) const {
  QuantizedMatrix m = w.host;
  const std::byte* bytes = w.bytes.get<std::byte>();
  if (expert >= 0) {
    m.rows /= config_.n_expert;
    bytes += size_t(expert) * ggml_row_bytes(m.type, m.cols) * size_t(m.rows);
  }
  observe(w, x, tokens, m.cols, observer, expert);
  if (w.fused && expert < 0 && tokens < dequantize_tokens(*w.fused)) {
    matmul_4bit_fused_f32(*w.fused, half_, x.half, tokens, y, accumulate, stream_);
    return;
  }
  if (w.fused && w.fused->format != Fused4bitWeight::Format::q4_K) {
    // A packed nf4/fp4 weight: the CPU's 16-bit values (bnb::dequantize_4bit's bytes) from its fused
    // layout into the tile, then the tensor cores.
    void* tile = ws_.weight_tile.reserve(size_t(m.rows * m.cols) * 2);
    dequantize_fused(*w.fused, half_, tile, stream_);
    matmul_16bit_f32_out(matmul_, half_, tile, m.rows, m.cols, x.half, tokens, y, accumulate, stream_);
    return;
  }
  const bool native = (m.type == GgmlType::BF16 && half_ == DType::bf16) || (m.type == GgmlType::F16 && half_ == DType::f16);
  // A 16-bit weight in the activations' type goes to cuBLAS at every token count: its products of a
  // few tokens read the weight at ~3.7 TB/s on the H200, the matvec kernel's at ~2.6.
  if (tokens <= kMatvecMaxTokens && !native && has_ggml_matvec(m.type, m.cols)) {
    matvec_ggml(m.type, bytes, m.rows, m.cols, x.f32, tokens, y, accumulate, stream_);
    return;
  }
  if (m.type == GgmlType::F32 || (m.type == GgmlType::F16 && half_ != DType::f16)) {
    // Float weights keep their precision: a float32 tile (f16 widened exactly) and a float32 product.
    const void* tile = bytes;
    if (m.type == GgmlType::F16) {
      tile = ws_.weight_tile.reserve(size_t(m.rows * m.cols) * 4);
      dequantize_ggml(m.type, bytes, m.rows, m.cols, DType::f32, ws_.weight_tile.buffer.get(), stream_);
    }
    matmul_f32(matmul_, static_cast<const float*>(tile), m.rows, m.cols, x.f32, tokens, y, accumulate, stream_);
    return;
  }
  const void* tile = bytes;
  if (!native) {
    void* scratch = ws_.weight_tile.reserve(size_t(m.rows * m.cols) * 2);
    dequantize_ggml(m.type, bytes, m.rows, m.cols, half_, scratch, stream_);
    tile = scratch;
  }
  matmul_16bit_f32_out(matmul_, half_, tile, m.rows, m.cols, x.half, tokens, y, accumulate, stream_);
}

void CudaLlama::observe(const Weight& w, const Activations& x, int64_t tokens, int64_t cols, const ActivationObserver& observer,
                        int expert) const {
  if (!observer) return;
  std::vector<float> rows(size_t(tokens * cols));
  check_cuda(cudaMemcpyAsync(rows.data(), x.f32, rows.size() * 4, cudaMemcpyDeviceToHost, stream_), "observer copy");
  sync();
  observer(w.name, expert, rows.data(), tokens, cols);
}

// Whole windows need one block's keys and values at a time (each block attends right after writing
// them); generation keeps every block's, `layers` slabs one after another.
KvCache CudaLlama::cache_for(int64_t windows, int64_t capacity, int layers) const {
  const size_t bytes = size_t(layers) * size_t(windows * capacity * config_.n_head_kv * config_.head_dim) * 4;
  return {static_cast<float*>(ws_.cache_k.reserve(bytes)), static_cast<float*>(ws_.cache_v.reserve(bytes)), capacity};
}

KvCache CudaLlama::layer_cache(int layer) const {
  const int64_t slab = generation_cache_.capacity * config_.n_head_kv * config_.head_dim;
  return {generation_cache_.k + layer * slab, generation_cache_.v + layer * slab, generation_cache_.capacity};
}

Activations CudaLlama::normed(int64_t tokens) const {
  const size_t n = size_t(tokens * config_.n_embd);
  return {static_cast<float*>(ws_.normed.reserve(n * 4)), ws_.normed_half.reserve(n * 2), half_};
}

void CudaLlama::embed_on_device(std::span<const int32_t> tokens) const {
  const int64_t T = int64_t(tokens.size()), E = config_.n_embd;
  for (int32_t id : tokens)  // the CPU's check, before any id reaches a kernel
    if (id < 0 || id >= config_.n_vocab)
      throw Error(fmt::format("token id {} outside the vocabulary of {}", id, config_.n_vocab), {.file = model_.weights().label()});
  const GgmlType type = embedding_->host.type;
  const auto row_bytes = int64_t(ggml_row_bytes(type, E));
  auto* ids = static_cast<int32_t*>(ws_.token_ids.reserve(size_t(T) * 4));
  void* rows = ws_.embedding_rows.reserve(size_t(T * row_bytes));
  auto* hidden = static_cast<float*>(ws_.hidden.reserve(size_t(T * E) * 4));
  // A pageable source: the call returns once the ids are staged, so `tokens` may go.
  check_cuda(cudaMemcpyAsync(ids, tokens.data(), size_t(T) * 4, cudaMemcpyHostToDevice, stream_), "upload token ids");
  gather_row_bytes(embedding_->bytes.get(), row_bytes, ids, T, rows, stream_);
  dequantize_ggml(type, rows, T, E, DType::f32, hidden, stream_);
}

// One block on ws_.hidden (tokens × n_embd), in place: the steps of LlamaModel::apply_layer.
void CudaLlama::layer(int index, int64_t T, const Positions& positions, const KvCache& cache, const ActivationObserver& observer) const {
  const LlamaConfig& c = config_;
  const Layer& L = layers_.at(size_t(index));
  const int64_t E = c.n_embd, q_dim = int64_t(c.n_head) * c.head_dim, kv_dim = int64_t(c.n_head_kv) * c.head_dim;
  auto* hidden = static_cast<float*>(ws_.hidden.buffer.get());
  auto* q = static_cast<float*>(ws_.q.reserve(size_t(T * q_dim) * 4));
  auto* k = static_cast<float*>(ws_.k.reserve(size_t(T * kv_dim) * 4));
  auto* v = static_cast<float*>(ws_.v.reserve(size_t(T * kv_dim) * 4));
  const Activations att{static_cast<float*>(ws_.att.reserve(size_t(T * q_dim) * 4)), ws_.att_half.reserve(size_t(T * q_dim) * 2), half_};
  const Activations x = normed(T);

  rms_norm(hidden, L.attn_norm.get<float>(), T, E, c.rms_eps, x, stream_);
  product(*L.q, x, T, q, false, observer);
  product(*L.k, x, T, k, false, observer);
  product(*L.v, x, T, v, false, observer);
  const float* inv_freq = inv_freq_.get<float>();
  const HeadsJob heads[] = {
      {q, c.n_head, {L.q_bias.get<float>(), L.q_norm.get<float>(), inv_freq, c.rope_neox, c.rms_eps, c.rope.n_rot, c.rope.mscale}, nullptr},
      {k, c.n_head_kv, {L.k_bias.get<float>(), L.k_norm.get<float>(), inv_freq, c.rope_neox, c.rms_eps, c.rope.n_rot, c.rope.mscale}, cache.k},
      {v, c.n_head_kv, {L.v_bias.get<float>(), nullptr, nullptr, false, c.rms_eps}, cache.v}};
  prepare_heads(heads, T, c.head_dim, positions, cache.capacity, stream_);
  attention(q, cache, T, c.n_head, c.n_head_kv, c.head_dim, positions, att, stream_);
  product(*L.o, att, T, hidden, true, observer);  // the residual added by the product itself

  rms_norm(hidden, L.ffn_norm.get<float>(), T, E, c.rms_eps, x, stream_);
  if (L.router) mixture_of_experts(L, x, T, observer);
  else feed_forward(*L.gate, *L.up, *L.down, x, T, hidden, true, observer, -1, L.gate_up ? &*L.gate_up : nullptr);
}

void CudaLlama::feed_forward(const Weight& gate_w, const Weight& up_w, const Weight& down_w, const Activations& x, int64_t T, float* y,
                             bool accumulate, const ActivationObserver& observer, int expert, const Fused4bitWeight* gate_up) const {
  const int64_t ff = expert >= 0 ? gate_w.host.rows / config_.n_expert : gate_w.host.rows;
  const Activations act{static_cast<float*>(ws_.act.reserve(size_t(T * ff) * 4)), ws_.act_half.reserve(size_t(T * ff) * 2), half_};
  if (gate_up && expert < 0 && T < dequantize_tokens(*gate_up)) {
    // Each token's row: its ff gate values, then its ff up values.
    auto* both = static_cast<float*>(ws_.gate.reserve(size_t(T * 2 * ff) * 4));
    observe(gate_w, x, T, gate_w.host.cols, observer, expert);
    observe(up_w, x, T, up_w.host.cols, observer, expert);
    matmul_4bit_fused_f32(*gate_up, half_, x.half, T, both, false, stream_);
    swiglu(both, both + ff, T, ff, 2 * ff, act, stream_);
  } else {
    auto* gate = static_cast<float*>(ws_.gate.reserve(size_t(T * ff) * 4));
    auto* up = static_cast<float*>(ws_.up.reserve(size_t(T * ff) * 4));
    product(gate_w, x, T, gate, false, observer, expert);
    product(up_w, x, T, up, false, observer, expert);
    swiglu(gate, up, T * ff, act, stream_);
  }
  product(down_w, act, T, y, accumulate, observer, expert);
}

// The router's logits go to the host, which routes as the CPU runtime does (model/moe_routing.h): the
// same logits pick the same experts on both backends. Each expert then runs over the rows of its tokens,
// gathered into one batch, and its outputs are added back to those tokens' residual stream.
void CudaLlama::mixture_of_experts(const Layer& L, const Activations& x, int64_t T, const ActivationObserver& observer) const {
  const LlamaConfig& c = config_;
  const int64_t E = c.n_embd;
  auto* hidden = static_cast<float*>(ws_.hidden.buffer.get());
  auto* logits = static_cast<float*>(ws_.router_logits.reserve(size_t(T * c.n_expert) * 4));
  product(*L.router, x, T, logits, false, observer);
  std::vector<float> host_logits(size_t(T * c.n_expert));
  check_cuda(cudaMemcpyAsync(host_logits.data(), logits, host_logits.size() * 4, cudaMemcpyDeviceToHost, stream_), "router logits");
  sync();
  const auto batches = route_tokens(host_logits.data(), T, c.n_expert, c.n_expert_used, c.expert_weights_norm).by_expert(c.n_expert);

  // Every expert's token rows and weights in one upload, then the shared expert's (all rows, its gate).
  std::vector<int32_t> rows;
  std::vector<float> weights;
  std::vector<int64_t> first;
  int64_t largest = 0;
  for (const auto& b : batches) {
    first.push_back(int64_t(rows.size()));
    for (int64_t t : b.tokens) rows.push_back(int32_t(t));
    weights.insert(weights.end(), b.weights.begin(), b.weights.end());
    largest = std::max(largest, int64_t(b.tokens.size()));
  }
  const int64_t shared_first = int64_t(rows.size());
  if (L.up_shexp) {
    std::vector<float> gate(size_t(T), 1.0f);
    if (L.shexp_gate) {  // a sigmoid weight per token (Qwen2-MoE)
      auto* g = static_cast<float*>(ws_.router_logits.reserve(size_t(T * std::max(c.n_expert, 1)) * 4));
      product(*L.shexp_gate, x, T, g, false, observer);
      check_cuda(cudaMemcpyAsync(gate.data(), g, gate.size() * 4, cudaMemcpyDeviceToHost, stream_), "shared expert gate");
      sync();
      for (float& v : gate) v = 1.0f / (1.0f + std::exp(-v));
    }
    for (int64_t t = 0; t < T; ++t) rows.push_back(int32_t(t));
    weights.insert(weights.end(), gate.begin(), gate.end());
  }
  auto* device_rows = static_cast<int32_t*>(ws_.route_rows.reserve(rows.size() * 4));
  auto* device_weights = static_cast<float*>(ws_.route_weights.reserve(weights.size() * 4));
  check_cuda(cudaMemcpyAsync(device_rows, rows.data(), rows.size() * 4, cudaMemcpyHostToDevice, stream_), "expert rows");
  check_cuda(cudaMemcpyAsync(device_weights, weights.data(), weights.size() * 4, cudaMemcpyHostToDevice, stream_), "expert weights");

  const int64_t out_rows = std::max(largest, L.up_shexp ? T : 0);
  auto* out = static_cast<float*>(ws_.expert_out.reserve(size_t(out_rows * E) * 4));
  const Activations in{static_cast<float*>(ws_.expert_in.reserve(size_t(largest * E) * 4)), ws_.expert_in_half.reserve(size_t(largest * E) * 2), half_};
  for (int e = 0; e < c.n_expert; ++e) {
    const auto n = int64_t(batches[size_t(e)].tokens.size());
    if (n == 0) continue;
    gather_rows(x.f32, device_rows + first[size_t(e)], n, E, in, stream_);
    feed_forward(*L.gate_exps, *L.up_exps, *L.down_exps, in, n, out, false, observer, e);
    scatter_add_rows(out, device_rows + first[size_t(e)], device_weights + first[size_t(e)], n, E, hidden, stream_);
  }
  if (L.up_shexp) {
    feed_forward(*L.gate_shexp, *L.up_shexp, *L.down_shexp, x, T, out, false, observer);
    scatter_add_rows(out, device_rows + shared_first, device_weights + shared_first, T, E, hidden, stream_);
  }
  sync();  // the host vectors above feed copies in flight
}

void CudaLlama::head(int64_t T, const ActivationObserver& observer) const {
  const Activations x = normed(T);
  rms_norm(static_cast<float*>(ws_.hidden.buffer.get()), output_norm_.get<float>(), T, config_.n_embd, config_.rms_eps, x, stream_);
  auto* logits = static_cast<float*>(ws_.logits.reserve(size_t(T * config_.n_vocab) * 4));
  // The observer sees the output layer under its own name, tied or not, as on the CPU.
  const ActivationObserver renamed = observer ? ActivationObserver([&](const std::string&, int, const float* rows, int64_t n, int64_t cols) {
    observer("output.weight", -1, rows, n, cols);
  })
                                              : nullptr;
  product(*output_, x, T, logits, false, renamed);
}

// Layers [first_layer, last_layer) over `windows` windows of the given tokens (or of `hidden`, the
// state entering first_layer), then the output head when `logits`; returns the logits or the state.
std::vector<float> CudaLlama::run(std::span<const int32_t> tokens, int windows, int first_layer, int last_layer,
                                  const std::vector<float>* hidden, bool logits, const ActivationObserver& observer) const {
  const int64_t T = run_layers(tokens, windows, first_layer, last_layer, hidden, observer);
  std::vector<float> out;
  if (logits) {
    head(T, observer);
    out.resize(size_t(T * config_.n_vocab));
    check_cuda(cudaMemcpyAsync(out.data(), ws_.logits.buffer.get(), out.size() * 4, cudaMemcpyDeviceToHost, stream_), "download logits");
  } else {
    out.resize(size_t(T * config_.n_embd));
    check_cuda(cudaMemcpyAsync(out.data(), ws_.hidden.buffer.get(), out.size() * 4, cudaMemcpyDeviceToHost, stream_), "download hidden");
  }
  sync();
  return out;
}

int64_t CudaLlama::run_layers(std::span<const int32_t> tokens, int windows, int first_layer, int last_layer,
                              const std::vector<float>* hidden, const ActivationObserver& observer) const {
  const int64_t E = config_.n_embd;
  const int64_t T = hidden ? int64_t(hidden->size()) / E : int64_t(tokens.size());
  if (windows < 1 || T % windows != 0) throw Error(fmt::format("{} tokens do not split into {} equal windows", T, windows));
  if (hidden) {
    auto* device_hidden = static_cast<float*>(ws_.hidden.reserve(hidden->size() * 4));
    check_cuda(cudaMemcpyAsync(device_hidden, hidden->data(), hidden->size() * 4, cudaMemcpyHostToDevice, stream_), "upload hidden");
  } else {
    embed_on_device(tokens);
  }
  const Positions positions{T / windows, 0};
  const KvCache cache = cache_for(windows, T / windows);
  for (int l = first_layer; l < last_layer; ++l) layer(l, T, positions, cache, observer);
  return T;
}

std::vector<float> CudaLlama::next_token_log_probs(std::span<const int32_t> tokens, int windows) const {
  const int64_t T = run_layers(tokens, windows, 0, config_.n_layer, nullptr, nullptr), len = T / windows;
  head(T, nullptr);
  std::vector<int32_t> targets(size_t(T), -1);  // the next token of every row but a window's last
  for (int64_t t = 0; t < T; ++t)
    if (t % len != len - 1) targets[size_t(t)] = tokens[size_t(t + 1)];
  auto* device_targets = static_cast<int32_t*>(ws_.targets.reserve(size_t(T) * 4));
  auto* device_out = static_cast<float*>(ws_.target_log_probs.reserve(size_t(T) * 4));
  check_cuda(cudaMemcpyAsync(device_targets, targets.data(), targets.size() * 4, cudaMemcpyHostToDevice, stream_), "upload targets");
  target_log_probs(static_cast<const float*>(ws_.logits.buffer.get()), T, config_.n_vocab, device_targets, device_out, stream_);
  std::vector<float> out(static_cast<size_t>(T));
  check_cuda(cudaMemcpyAsync(out.data(), device_out, out.size() * 4, cudaMemcpyDeviceToHost, stream_), "download log-probabilities");
  sync();
  return out;
}

std::vector<float> CudaLlama::forward(std::span<const int32_t> tokens, int windows, const ActivationObserver& observer) const {
  return run(tokens, windows, 0, config_.n_layer, nullptr, true, observer);
}

void CudaLlama::apply_layer(int layer_index, std::vector<float>& hidden, int windows, const ActivationObserver& observer) const {
  if (layer_index < 0 || layer_index >= config_.n_layer) throw Error(fmt::format("no block {}", layer_index));
  hidden = run({}, windows, layer_index, layer_index + 1, &hidden, false, observer);
}

// The reference's rows and log-probabilities on the device (the host keeps the rows alone).
struct DeviceLogProbs final : LlamaRuntime::LogProbReference {
  DeviceBuffer device_rows, device_log_probs;
};

std::unique_ptr<LlamaRuntime::LogProbReference> CudaLlama::keep_log_probs(std::vector<int64_t> rows, std::vector<float> log_probs) const {
  if (log_probs.size() != rows.size() * size_t(config_.n_vocab)) throw Error("a reference of log-probabilities that does not fill its rows");
  auto reference = std::make_unique<DeviceLogProbs>();
  reference->device_rows = upload(std::as_bytes(std::span(rows)), stream_);
  reference->device_log_probs = upload(std::span<const float>(log_probs), stream_);
  sync();
  reference->rows = std::move(rows);
  return reference;
}

std::vector<double> CudaLlama::output_klds(const std::vector<float>& hidden, const LogProbReference& reference) const {
  const auto* on_device = dynamic_cast<const DeviceLogProbs*>(&reference);
  if (!on_device) return LlamaRuntime::output_klds(hidden, reference);
  const int64_t T = run_layers({}, 1, config_.n_layer, config_.n_layer, &hidden, nullptr);
  head(T, nullptr);
  const int64_t count = int64_t(on_device->rows.size());
  for (int64_t row : on_device->rows)
    if (row < 0 || row >= T) throw Error(fmt::format("reference row {} of a state of {} rows", row, T));
  auto* device_out = static_cast<double*>(ws_.klds.reserve(size_t(count) * sizeof(double)));
  row_klds(static_cast<const float*>(ws_.logits.buffer.get()), config_.n_vocab, on_device->device_rows.get<int64_t>(), count,
           on_device->device_log_probs.get<float>(), device_out, stream_);
  std::vector<double> out(static_cast<size_t>(count));
  check_cuda(cudaMemcpyAsync(out.data(), device_out, out.size() * sizeof(double), cudaMemcpyDeviceToHost, stream_), "download KL-divergences");
  sync();
  return out;
}

std::vector<float> CudaLlama::output_logits(const std::vector<float>& hidden, const ActivationObserver& observer) const {
  return run({}, 1, config_.n_layer, config_.n_layer, &hidden, true, observer);
}

QuantizedMatrix CudaLlama::swap_weight(const std::string& name, const QuantizedMatrix& weight) {
  const QuantizedMatrix previous = model_.swap_weight(name, weight);  // checks the name and shape; embed() follows it
  try {
    Weight& w = weights_.at(name);
    load_weight(w, weight);
    for (Layer& L : layers_)
      if (L.gate == &w || L.up == &w) stack_gate_up(L);
    sync();
  } catch (...) {
    model_.swap_weight(name, previous);
    throw;
  }
  return previous;
}

int32_t CudaLlama::prefill(std::span<const int32_t> prompt, int64_t capacity) {
  const int64_t T = int64_t(prompt.size());
  embed_on_device(prompt);
  // The workspace's cache, every block's, sized for the whole generation.
  generation_cache_ = cache_for(1, capacity, config_.n_layer);
  for (int l = 0; l < config_.n_layer; ++l) layer(l, T, {T, 0}, layer_cache(l), nullptr);
  head(T, nullptr);
  argmax_rows(static_cast<float*>(ws_.logits.buffer.get()) + (T - 1) * config_.n_vocab, 1, config_.n_vocab, next_token_.get<int32_t>(), stream_);
  return download_next_token();
}

int32_t CudaLlama::download_next_token() const {
  int32_t token = 0;
  check_cuda(cudaMemcpyAsync(&token, next_token_.get(), sizeof token, cudaMemcpyDeviceToHost, stream_), "download token");
  sync();
  return token;
}

void CudaLlama::decode_step(const Positions& positions) const {
  for (int l = 0; l < config_.n_layer; ++l) layer(l, 1, positions, layer_cache(l), nullptr);
  head(1, nullptr);
  argmax_rows(static_cast<float*>(ws_.logits.buffer.get()), 1, config_.n_vocab, next_token_.get<int32_t>(), stream_);
}

void CudaLlama::capture_decode_graph(const Positions& positions, const GraphKey& key) {
  decode_graph_.reset();
  cudaGraph_t graph = nullptr;
  check_cuda(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal), "cudaStreamBeginCapture");
  try {
    decode_step(positions);
  } catch (...) {
    if (cudaStreamEndCapture(stream_, &graph) == cudaSuccess && graph) cudaGraphDestroy(graph);
    throw;
  }
  check_cuda(cudaStreamEndCapture(stream_, &graph), "cudaStreamEndCapture");
  cudaGraphExec_t exec = nullptr;
  const cudaError_t status = cudaGraphInstantiate(&exec, graph, 0);
  cudaGraphDestroy(graph);
  check_cuda(status, "cudaGraphInstantiate");
  decode_graph_.reset(exec);
  decode_graph_key_ = key;
}

int32_t CudaLlama::decode(int32_t token, int64_t position) {
  embed_on_device(std::span(&token, 1));
  if (!use_decode_graph_) {
    decode_step({1, position});
  } else {
    check_cuda(cudaMemcpyAsync(device_position_.get(), &position, sizeof position, cudaMemcpyHostToDevice, stream_), "upload position");
    const Positions on_device{1, position, device_position_.get<int64_t>()};
    const GraphKey key{device_layout_version.load(), generation_cache_.k, generation_cache_.capacity};
    if (decode_graph_ && key == decode_graph_key_) {
      check_cuda(cudaGraphLaunch(decode_graph_.get(), stream_), "cudaGraphLaunch");
    } else {
      decode_step(on_device);  // launched one by one: sizes the scratch that the graph will point into
      if (device_layout_version.load() == key.layout) capture_decode_graph(on_device, key);
    }
  }
  return download_next_token();
}

}  // namespace

std::unique_ptr<LlamaRuntime> make_llama_runtime(LlamaModel& model, const RuntimeOptions& options) {
  return std::make_unique<CudaLlama>(model, options);
}

std::vector<int32_t> generate(LlamaModel& model, const std::vector<int32_t>& prompt, int count, const RuntimeOptions& options) {
  if (prompt.empty() || count < 1) throw Error("generate: an empty prompt or nothing to generate");
  CudaLlama runtime(model, options);
  std::vector<int32_t> out{runtime.prefill(prompt, int64_t(prompt.size()) + count)};
  for (int i = 1; i < count; ++i) out.push_back(runtime.decode(out.back(), int64_t(prompt.size()) + i - 1));
  return out;
}

GenerationTiming time_generation(LlamaModel& model, int prompt, int generate, const RuntimeOptions& options) {
  if (prompt < 1 || generate < 1) throw Error("bench: --prompt and --gen must be at least 1");
  const auto gpus = devices();
  if (gpus.empty()) throw Error("no CUDA device is visible");
  check_cuda(cudaFree(nullptr), "CUDA context");
  const size_t before = used_device_memory();
  auto seconds_since = [](auto start) { return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count(); };
  auto start = std::chrono::steady_clock::now();
  CudaLlama runtime(model, options);
  const double upload_s = seconds_since(start);
  // A deterministic prompt of valid token ids.
  std::vector<int32_t> tokens(static_cast<size_t>(prompt));
  for (int i = 0; i < prompt; ++i) tokens[size_t(i)] = int32_t((i * 7919 + 13) % model.config().n_vocab);
  runtime.prefill(tokens, prompt + generate);  // warm-up: kernels loaded, scratch sized
  runtime.decode(tokens[0], prompt);
  size_t peak = used_device_memory();
  start = std::chrono::steady_clock::now();
  int32_t next = runtime.prefill(tokens, prompt + generate);
  const double prefill_s = seconds_since(start);
  start = std::chrono::steady_clock::now();
  for (int i = 0; i < generate; ++i) next = runtime.decode(next, prompt + i);
  const double decode_s = seconds_since(start);
  peak = std::max(peak, used_device_memory());
  const int windows = runtime.batch_windows(prompt);
  std::vector<int32_t> batch(size_t(windows) * size_t(prompt));
  for (size_t i = 0; i < batch.size(); ++i) batch[i] = tokens[i % size_t(prompt)];
  runtime.next_token_log_probs(batch, windows);  // warm-up: the batch's scratch
  peak = std::max(peak, used_device_memory());
  start = std::chrono::steady_clock::now();
  runtime.next_token_log_probs(batch, windows);  // eval's pass: perplexity's terms computed on the GPU
  const double forward_s = seconds_since(start);
  GenerationTiming timing{.device = gpus[0].name, .prompt = prompt, .generate = generate};
  timing.prefill_tokens_per_s = prompt / prefill_s, timing.decode_tokens_per_s = generate / decode_s;
  timing.forward_windows = windows, timing.forward_tokens_per_s = double(batch.size()) / forward_s;
  timing.weight_bytes = runtime.weight_bytes(), timing.decode_weight_bytes = runtime.decode_weight_bytes();
  timing.peak_memory_bytes = peak - before, timing.decode_graph = runtime.decodes_by_graph();
  timing.upload_seconds = upload_s;
  return timing;
}

}  // namespace lowbit::cuda
