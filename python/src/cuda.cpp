// lowbit's CUDA kernels on torch CUDA tensors: device memory the caller allocated (lowbit.functional
// makes every output with torch, so torch's caching allocator owns it), enqueued on the stream the
// caller names (torch's current stream). The kernels live in liblowbit_cuda.so, opened on the first
// call (lowbit/pipeline/cuda_backend.h); a lowbit built without CUDA says so.
#include "cuda.h"

#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>

#include "lowbit/core/error.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/pipeline/cuda_backend.h"

namespace nb = nanobind;

namespace lowbit::python {
namespace {

using cuda::NestedScales;
using CudaArray = nb::ndarray<nb::c_contig, nb::device::cuda>;

cudaStream_t stream_of(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

// The one GPU all of a call's arrays are on.
int device_of(std::initializer_list<const CudaArray*> arrays) {
  int device = -1;
  for (const CudaArray* a : arrays) {
    if (!a) continue;
    if (device >= 0 && a->device_id() != device) throw Error("the tensors of one call must be on one GPU");
    device = a->device_id();
  }
  return device;
}

DType float_dtype(const CudaArray& a) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 32) return DType::f32;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 16) return DType::f16;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && d.bits == 16) return DType::bf16;
  throw Error("unsupported tensor dtype", {.expected = "float32, float16 or bfloat16"});
}

void expect_bytes(const CudaArray& a, size_t bytes, const char* what) {
  if (a.nbytes() != bytes) throw Error(std::string(what) + " holds " + std::to_string(a.nbytes()) + " bytes, not " + std::to_string(bytes));
}

// bitsandbytes' quant_type, spelt exactly as its API takes it: the registry's name of nf4 or fp4.
bnb::QuantType quant_type(const std::string& name) {
  const auto id = parse_format_id(name);
  const auto type = id && format_name(*id) == name ? bnb::quant_type_of(*id) : std::nullopt;
  if (!type) throw Error("quant_type '" + name + "' is not nf4 or fp4");
  return *type;
}

int64_t blocks_of(int64_t n, int64_t size) { return (n + size - 1) / size; }

void dequantize_4bit(const CudaArray& packed, const CudaArray& absmax, std::optional<CudaArray> nested_absmax,
                     std::optional<CudaArray> offset, const std::string& type, int64_t blocksize, CudaArray out, uintptr_t stream) {
  const int64_t n = int64_t(out.size());
  const int device = device_of({&packed, &absmax, nested_absmax ? &*nested_absmax : nullptr, offset ? &*offset : nullptr, &out});
  expect_bytes(packed, size_t((n + 1) / 2), "the packed tensor");
  const int64_t blocks = blocks_of(n, blocksize);
  NestedScales nested;
  if (nested_absmax) {
    if (!offset) throw Error("double-quantized scales need their offset");
    expect_bytes(absmax, size_t(blocks), "absmax (uint8 codes)");
    expect_bytes(*nested_absmax, size_t(blocks_of(blocks, bnb::kNestedBlocksize)) * 4, "nested_absmax");
    expect_bytes(*offset, 4, "offset");
    nested = {.codes = static_cast<const uint8_t*>(absmax.data()), .nested_absmax = static_cast<const float*>(nested_absmax->data()),
              .offset = static_cast<const float*>(offset->data())};
  } else {
    expect_bytes(absmax, size_t(blocks) * 4, "absmax (float32)");
  }
  cuda::backend().dequantize_4bit(device, quant_type(type), static_cast<const uint8_t*>(packed.data()), static_cast<const float*>(absmax.data()),
                                  nested_absmax ? &nested : nullptr, n, blocksize, float_dtype(out), out.data(), stream_of(stream));
}

// out: packed, absmax and, with double quantization, codes, nested_absmax and offset (torch-allocated).
void quantize_4bit(const CudaArray& x, const std::string& type, int64_t blocksize, CudaArray packed, CudaArray absmax,
                   std::optional<CudaArray> codes, std::optional<CudaArray> nested_absmax, std::optional<CudaArray> offset, uintptr_t stream) {
  const int64_t n = int64_t(x.size());
  const bool double_quant = codes.has_value();
  if (double_quant != nested_absmax.has_value() || double_quant != offset.has_value())
    throw Error("double quantization needs codes, nested_absmax and offset together");
  const int device = device_of({&x, &packed, &absmax, codes ? &*codes : nullptr, nested_absmax ? &*nested_absmax : nullptr, offset ? &*offset : nullptr});
  const int64_t blocks = blocks_of(n, blocksize);
  expect_bytes(packed, size_t((n + 1) / 2), "packed");
  expect_bytes(absmax, size_t(blocks) * 4, "absmax");
  cuda::Quantized4bitBuffers buffers{.packed = static_cast<uint8_t*>(packed.data()), .absmax = static_cast<float*>(absmax.data())};
  if (double_quant) {
    expect_bytes(*codes, size_t(blocks), "codes");
    expect_bytes(*nested_absmax, size_t(blocks_of(blocks, bnb::kNestedBlocksize)) * 4, "nested_absmax");
    expect_bytes(*offset, 4, "offset");
    buffers.codes = static_cast<uint8_t*>(codes->data());
    buffers.nested_absmax = static_cast<float*>(nested_absmax->data());
    buffers.offset = static_cast<float*>(offset->data());
  }
  cuda::backend().quantize_4bit(device, quant_type(type), float_dtype(x), x.data(), n, blocksize, double_quant, buffers, stream_of(stream));
}

void check_int8_weight(const CudaArray& cb, const CudaArray& scb) {
  if (cb.ndim() != 2 || cb.itemsize() != 1) throw Error("CB must be a 2-D int8 tensor");
  expect_bytes(scb, cb.shape(0) * 4, "SCB (float32 per row)");
}

void int8_quantize_rowwise(const CudaArray& x, CudaArray cb, CudaArray scb, uintptr_t stream) {
  if (x.ndim() != 2) throw Error("int8 row-wise quantization takes a 2-D tensor");
  const int device = device_of({&x, &cb, &scb});
  check_int8_weight(cb, scb);
  expect_bytes(cb, x.size(), "CB");
  cuda::backend().quantize_int8_rowwise(device, float_dtype(x), x.data(), int64_t(x.shape(0)), int64_t(x.shape(1)),
                                        static_cast<int8_t*>(cb.data()), static_cast<float*>(scb.data()), stream_of(stream));
}

void int8_dequantize_rowwise(const CudaArray& cb, const CudaArray& scb, CudaArray out, uintptr_t stream) {
  const int device = device_of({&cb, &scb, &out});
  check_int8_weight(cb, scb);
  if (out.size() != cb.size()) throw Error("the output must hold rows x cols values");
  cuda::backend().dequantize_int8_rowwise(device, static_cast<const int8_t*>(cb.data()), static_cast<const float*>(scb.data()), int64_t(cb.shape(0)),
                                          int64_t(cb.shape(1)), float_dtype(out), out.data(), stream_of(stream));
}

void int8_matmul(const CudaArray& x, const CudaArray& cb, const CudaArray& scb, float threshold, CudaArray out, uintptr_t stream) {
  const int device = device_of({&x, &cb, &scb, &out});
  check_int8_weight(cb, scb);
  if (x.ndim() != 2 || float_dtype(x) != DType::f16 || x.shape(1) != cb.shape(1)) throw Error("LLM.int8 takes float16 activations [tokens, cols]");
  if (float_dtype(out) != DType::f16 || out.size() != x.shape(0) * cb.shape(0)) throw Error("the output must be float16 [tokens, rows]");
  cuda::backend().llm_int8_matmul(device, static_cast<const int8_t*>(cb.data()), static_cast<const float*>(scb.data()), int64_t(cb.shape(0)),
                                  int64_t(cb.shape(1)), x.data(), int64_t(x.shape(0)), threshold, out.data(), stream_of(stream));
}

// A 4-bit weight re-laid for the fused kernel, holding the tensors it was made from (the re-laid copy
// refers to them for many-token products).
struct Fused4bit {
  std::shared_ptr<const cuda::Fused4bitWeight> weight;
  nb::object sources;
  int device = 0;
};

Fused4bit prepare_fused_4bit(const CudaArray& packed, const CudaArray& absmax, std::optional<CudaArray> nested_absmax,
                             std::optional<CudaArray> offset, const std::string& type, int64_t blocksize, int64_t rows, int64_t cols,
                             nb::object sources, uintptr_t stream) {
  const int device = device_of({&packed, &absmax, nested_absmax ? &*nested_absmax : nullptr, offset ? &*offset : nullptr});
  const int64_t n = rows * cols, blocks = blocks_of(n, blocksize);
  expect_bytes(packed, size_t((n + 1) / 2), "the packed tensor");
  cuda::Bnb4bitWeight w{.type = quant_type(type), .packed = static_cast<const uint8_t*>(packed.data()), .rows = rows, .cols = cols,
                        .blocksize = blocksize};
  if (nested_absmax) {
    if (!offset) throw Error("double-quantized scales need their offset");
    expect_bytes(absmax, size_t(blocks), "absmax (uint8 codes)");
    expect_bytes(*nested_absmax, size_t(blocks_of(blocks, bnb::kNestedBlocksize)) * 4, "nested_absmax");
    w.nested = {.codes = static_cast<const uint8_t*>(absmax.data()), .nested_absmax = static_cast<const float*>(nested_absmax->data()),
                .offset = static_cast<const float*>(offset->data())};
  } else {
    expect_bytes(absmax, size_t(blocks) * 4, "absmax (float32)");
    w.absmax = static_cast<const float*>(absmax.data());
  }
  return {cuda::backend().prepare_fused_4bit(device, w, stream_of(stream)), std::move(sources), device};
}

void matmul_4bit(const Fused4bit& fused, const CudaArray& x, CudaArray out, uintptr_t stream) {
  const auto& w = *fused.weight;
  if (x.ndim() != 2 || int64_t(x.shape(1)) != w.cols) throw Error("the activations must be [tokens, in_features]");
  if (out.dtype() != x.dtype() || int64_t(out.size()) != int64_t(x.shape(0)) * w.rows) throw Error("the output must be [tokens, out_features] in x's dtype");
  if (device_of({&x, &out}) != fused.device) throw Error("the activations are on another GPU than the weight");
  cuda::backend().matmul_4bit(fused.device, w, float_dtype(x), x.data(), int64_t(x.shape(0)), out.data(), stream_of(stream));
}

void gguf_dequantize(const CudaArray& raw, const std::string& type_name, int64_t rows, int64_t cols, CudaArray out, uintptr_t stream) {
  const auto type = ggml_type_from_name(type_name);
  if (!type) throw Error("unknown ggml type '" + type_name + "'");
  const auto& backend = cuda::backend();
  if (!backend.has_ggml_dequantize(*type)) throw Error("lowbit has no CUDA dequantizer for ggml type '" + type_name + "'");
  const int device = device_of({&raw, &out});
  expect_bytes(raw, size_t(rows) * ggml_row_bytes(*type, cols), "the block bytes");
  if (int64_t(out.size()) != rows * cols) throw Error("the output must hold rows x cols values");
  backend.dequantize_ggml(device, *type, raw.data(), rows, cols, float_dtype(out), out.data(), stream_of(stream));
}

}  // namespace

void bind_cuda(nb::module_& m) {
  nb::module_ cuda = m.def_submodule("cuda", "lowbit's CUDA kernels on torch CUDA tensors (lowbit.functional calls these)");
#ifdef LOWBIT_HAVE_CUDA
  cuda.attr("built") = true;
#else
  cuda.attr("built") = false;
#endif
  // The GPUs the module sees (names); raises LowbitError when the module cannot be opened.
  cuda.def("devices", [] {
    nb::list names;
    for (const auto& d : cuda::backend().devices()) names.append(d.name);
    return names;
  });
  cuda.def("available", [] {
    try {
      return !cuda::backend().devices().empty();
    } catch (const Error&) {
      return false;
    }
  });
  cuda.def("dequantize_4bit", &dequantize_4bit, nb::arg("packed"), nb::arg("absmax"), nb::arg("nested_absmax").none(), nb::arg("offset").none(),
           nb::arg("quant_type"), nb::arg("blocksize"), nb::arg("out"), nb::arg("stream"));
  cuda.def("quantize_4bit", &quantize_4bit, nb::arg("x"), nb::arg("quant_type"), nb::arg("blocksize"), nb::arg("packed"), nb::arg("absmax"),
           nb::arg("codes").none(), nb::arg("nested_absmax").none(), nb::arg("offset").none(), nb::arg("stream"));
  cuda.def("int8_quantize_rowwise", &int8_quantize_rowwise, nb::arg("x"), nb::arg("cb"), nb::arg("scb"), nb::arg("stream"));
  cuda.def("int8_dequantize_rowwise", &int8_dequantize_rowwise, nb::arg("cb"), nb::arg("scb"), nb::arg("out"), nb::arg("stream"));
  cuda.def("int8_matmul", &int8_matmul, nb::arg("x"), nb::arg("cb"), nb::arg("scb"), nb::arg("threshold"), nb::arg("out"), nb::arg("stream"));
  // (Only liblowbit_cuda.so defines the weight's member functions: the extension never calls them.)
  nb::class_<Fused4bit>(cuda, "Fused4bit", "a 4-bit weight re-laid for lowbit's fused CUDA product");
  cuda.def("prepare_fused_4bit", &prepare_fused_4bit, nb::arg("packed"), nb::arg("absmax"), nb::arg("nested_absmax").none(),
           nb::arg("offset").none(), nb::arg("quant_type"), nb::arg("blocksize"), nb::arg("rows"), nb::arg("cols"), nb::arg("sources"),
           nb::arg("stream"));
  cuda.def("matmul_4bit", &matmul_4bit, nb::arg("fused"), nb::arg("x"), nb::arg("out"), nb::arg("stream"));
  cuda.def("gguf_dequantize", &gguf_dequantize, nb::arg("raw"), nb::arg("type"), nb::arg("rows"), nb::arg("cols"), nb::arg("out"), nb::arg("stream"));
}

}  // namespace lowbit::python
