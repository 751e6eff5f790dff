// lowbit._lowbit: the C++ library seen from Python. Arrays cross the boundary through DLPack
// (nanobind's ndarray): inputs are read where they lie, outputs are torch tensors that own the buffer
// the library filled. No dtype is chosen here: every output dtype is the one the caller names
// (lowbit.functional decides it from the quant state, never from torch's default dtype).
#include <nanobind/nanobind.h>
#include <nanobind/ndarray.h>
#include <nanobind/stl/optional.h>
#include <nanobind/stl/string.h>
#include <nanobind/stl/vector.h>

#include <cstring>

#include "lowbit/core/error.h"
#include "lowbit/formats/bnb_4bit.h"
#include "lowbit/formats/bnb_int8.h"
#include "lowbit/formats/ggml_codecs.h"
#include "lowbit/pipeline/inspect.h"
#include "cuda.h"
#include "jobs.h"

namespace nb = nanobind;
namespace lowbit::python {
namespace {

using Array = nb::ndarray<nb::c_contig, nb::device::cpu>;
template <class T>
using Torch = nb::ndarray<nb::pytorch, T, nb::c_contig>;

// The DType of a DLPack array (bf16 arrives as DLPack's bfloat code).
DType dtype_of(const Array& a) {
  const nb::dlpack::dtype d = a.dtype();
  if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 32) return DType::f32;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Float) && d.bits == 16) return DType::f16;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Bfloat) && d.bits == 16) return DType::bf16;
  if (d.code == uint8_t(nb::dlpack::dtype_code::UInt) && d.bits == 8) return DType::u8;
  if (d.code == uint8_t(nb::dlpack::dtype_code::Int) && d.bits == 8) return DType::i8;
  throw Error("unsupported array dtype", {.expected = "float32, float16, bfloat16, uint8 or int8"});
}

DType parse_dtype(const std::string& name) {
  const auto d = dtype_from_name(name);
  if (!d || !(*d == DType::f32 || *d == DType::f16 || *d == DType::bf16))
    throw Error("'" + name + "' is not a float dtype lowbit writes", {.expected = "float32, float16 or bfloat16"});
  return *d;
}

TensorView view_of(const Array& a) {
  Shape shape;
  for (size_t i = 0; i < a.ndim(); ++i) shape.push_back(int64_t(a.shape(i)));
  const DType dtype = dtype_of(a);
  return TensorView::make(dtype, shape, {static_cast<const std::byte*>(a.data()), a.nbytes()});
}

// A torch tensor owning `values` (moved to the heap, freed with the tensor).
template <class T>
Torch<T> to_torch(std::vector<T>&& values, std::vector<size_t> shape) {
  auto* owned = new std::vector<T>(std::move(values));
  nb::capsule owner(owned, [](void* p) noexcept { delete static_cast<std::vector<T>*>(p); });
  return Torch<T>(owned->data(), shape.size(), shape.data(), owner);
}

// A float tensor in `dtype`: float32 as it is, 16-bit types as uint16 storage that Python views as
// torch.float16 / torch.bfloat16 without a copy.
nb::object float_tensor(Tensor&& t) {
  std::vector<size_t> shape(t.shape.begin(), t.shape.end());
  if (t.dtype == DType::f32) {
    std::vector<float> v(size_t(t.view().elements()));
    std::memcpy(v.data(), t.buffer.data(), t.buffer.size());
    return nb::cast(to_torch(std::move(v), shape));
  }
  std::vector<uint16_t> v(size_t(t.view().elements()));
  std::memcpy(v.data(), t.buffer.data(), t.buffer.size());
  return nb::cast(to_torch(std::move(v), shape));
}

// bitsandbytes' quant_type, spelt exactly as its API takes it: the registry's name of nf4 or fp4.
bnb::QuantType quant_type(const std::string& name) {
  const auto id = parse_format_id(name);
  const auto type = id && format_name(*id) == name ? bnb::quant_type_of(*id) : std::nullopt;
  if (!type) throw Error("quant_type '" + name + "' is not nf4 or fp4");
  return *type;
}

nb::dict quantize_4bit(const Array& x, const std::string& type, int64_t blocksize, bool double_quant, std::optional<float> nested_offset) {
  auto q = bnb::quantize_4bit(view_of(x), {.quant_type = quant_type(type), .blocksize = blocksize, .double_quant = double_quant,
                                           .nested_offset = nested_offset});
  nb::dict out;
  const size_t packed = q.packed.size();
  out["packed"] = to_torch(std::move(q.packed), {packed, 1});  // bitsandbytes' layout: [n/2, 1] uint8
  out["code"] = to_torch(std::vector<float>(q.state.code.begin(), q.state.code.end()), {16});
  if (q.state.nested) {
    auto& n = *q.state.nested;
    const size_t blocks = n.codes.size(), nested_blocks = n.nested_absmax.size();
    out["absmax"] = to_torch(std::move(n.codes), {blocks});
    out["nested_absmax"] = to_torch(std::move(n.nested_absmax), {nested_blocks});
    out["nested_code"] = to_torch(std::vector<float>(n.code.begin(), n.code.end()), {256});
    out["offset"] = n.offset;
  } else {
    const size_t blocks = q.state.absmax.size();
    out["absmax"] = to_torch(std::move(q.state.absmax), {blocks});
  }
  return out;
}

// absmax: float32 scales, or (double quant) uint8 codes with nested_absmax and offset.
nb::object dequantize_4bit(const Array& packed, const Array& absmax, const std::string& type, int64_t blocksize, const std::vector<int64_t>& shape,
                           const std::string& out_dtype, std::optional<Array> nested_absmax, float offset) {
  bnb::Bnb4bitState state;
  state.quant_type = quant_type(type);
  state.blocksize = blocksize;
  state.dtype = parse_dtype(out_dtype);
  state.shape = shape;
  state.code = bnb::code_map(state.quant_type);
  if (nested_absmax) {
    if (dtype_of(absmax) != DType::u8) throw Error("with double quantization absmax holds uint8 codes");
    bnb::NestedAbsmax n;
    const auto* codes = static_cast<const uint8_t*>(absmax.data());
    n.codes.assign(codes, codes + absmax.size());
    const auto* scales = static_cast<const float*>(nested_absmax->data());
    n.nested_absmax.assign(scales, scales + nested_absmax->size());
    n.offset = offset;
    n.code = bnb::dynamic_map_signed();
    state.nested = std::move(n);
  } else {
    if (dtype_of(absmax) != DType::f32) throw Error("absmax must be float32");
    const auto* scales = static_cast<const float*>(absmax.data());
    state.absmax.assign(scales, scales + absmax.size());
  }
  const auto* bytes = static_cast<const uint8_t*>(packed.data());
  return float_tensor(bnb::dequantize_4bit({bytes, packed.nbytes()}, state));
}

nb::tuple int8_quantize_rowwise(const Array& x, float threshold) {
  auto q = bnb::quantize_int8_rowwise(view_of(x), threshold);
  const size_t rows = size_t(q.rows), cols = size_t(q.cols), outliers = q.outlier_cols.size();
  return nb::make_tuple(to_torch(std::move(q.cb), {rows, cols}), to_torch(std::move(q.scb), {rows}),
                        to_torch(std::move(q.outlier_cols), {outliers}));
}

bnb::Int8RowwiseQuantized int8_weight(const Array& cb, const Array& scb) {
  if (cb.ndim() != 2 || dtype_of(cb) != DType::i8) throw Error("CB must be a 2-D int8 array");
  if (dtype_of(scb) != DType::f32 || scb.size() != cb.shape(0)) throw Error("SCB must hold one float32 per row of CB");
  bnb::Int8RowwiseQuantized q;
  q.rows = int64_t(cb.shape(0));
  q.cols = int64_t(cb.shape(1));
  const auto* codes = static_cast<const int8_t*>(cb.data());
  q.cb.assign(codes, codes + cb.size());
  const auto* scales = static_cast<const float*>(scb.data());
  q.scb.assign(scales, scales + scb.size());
  return q;
}

nb::object int8_dequantize_rowwise(const Array& cb, const Array& scb, const std::string& out_dtype) {
  return float_tensor(bnb::dequantize_int8_rowwise(int8_weight(cb, scb), parse_dtype(out_dtype)));
}

// LLM.int8: X (f16) · Wᵀ with W's rows in int8 and X's outlier columns (|x| ≥ threshold) in 16-bit.
nb::object int8_matmul(const Array& x, const Array& cb, const Array& scb, float threshold) {
  return float_tensor(bnb::llm_int8_matmul(view_of(x), int8_weight(cb, scb), threshold));
}

GgmlType ggml_type(const std::string& name) {
  const auto t = ggml_type_from_name(name);
  if (!t || !ggml_codec(*t)) throw Error("lowbit has no codec for ggml type '" + name + "'");
  return *t;
}

Torch<float> gguf_dequantize(const Array& raw, const std::string& type, int64_t rows, int64_t cols) {
  const GgmlType t = ggml_type(type);
  if (raw.nbytes() != size_t(rows) * ggml_row_bytes(t, cols))
    throw Error("the block bytes do not hold rows x cols values of " + type);
  std::vector<float> out(size_t(rows * cols));
  dequantize_rows(t, raw.data(), rows, cols, out.data());
  return to_torch(std::move(out), {size_t(rows), size_t(cols)});
}

Torch<uint8_t> gguf_quantize(const Array& x, const std::string& type, std::optional<Array> weights) {
  if (x.ndim() != 2 || dtype_of(x) != DType::f32) throw Error("gguf_quantize takes a 2-D float32 array");
  const GgmlType t = ggml_type(type);
  const int64_t rows = int64_t(x.shape(0)), cols = int64_t(x.shape(1));
  if (weights && (dtype_of(*weights) != DType::f32 || int64_t(weights->size()) != cols))
    throw Error("importance weights must be float32, one per column");
  std::vector<uint8_t> out(size_t(rows) * ggml_row_bytes(t, cols));
  quantize_rows(t, static_cast<const float*>(x.data()), rows, cols, weights ? static_cast<const float*>(weights->data()) : nullptr, out.data());
  const size_t n = out.size();
  return to_torch(std::move(out), {n});
}

// The maps a 4-bit quant state records (bitsandbytes keeps them in the state: QuantState.code).
Torch<float> code_map(const std::string& type) {
  const auto& code = bnb::code_map(quant_type(type));
  return to_torch(std::vector<float>(code.begin(), code.end()), {code.size()});
}

Torch<float> nested_code_map() {
  const auto& code = bnb::dynamic_map_signed();
  return to_torch(std::vector<float>(code.begin(), code.end()), {code.size()});
}

nb::dict inspect_path(const std::string& path) {
  const ModelSummary s = inspect(path);
  nb::list tensors;
  for (const auto& t : s.tensors) {
    nb::dict d;
    d["name"] = t.name;
    d["format"] = t.format;
    d["shape"] = t.shape;
    d["params"] = t.params;
    d["stored_elements"] = t.stored_elements;
    d["bytes"] = t.bytes;
    d["bpw"] = t.bpw();
    tensors.append(d);
  }
  nb::dict total;
  total["params"] = s.params;
  total["stored_elements"] = s.stored_elements;
  total["bytes"] = s.bytes;
  total["bpw"] = s.bpw();
  nb::dict out;
  out["path"] = s.path;
  out["container"] = s.container;
  out["tensors"] = tensors;
  out["total"] = total;
  return out;
}

}  // namespace
}  // namespace lowbit::python

NB_MODULE(_lowbit, m) {
  using namespace lowbit::python;
  m.doc() = "lowbit's C++ library (formats, files, jobs); see lowbit.functional for the torch API";
  // lowbit::Error becomes lowbit.LowbitError, with the file, tensor, offset and expectation as attributes.
  nb::register_exception_translator([](const std::exception_ptr& p, void*) {
    try {
      std::rethrow_exception(p);
    } catch (const lowbit::Error& e) {
      const auto& c = e.context();
      nb::object cls = nb::module_::import_("lowbit.errors").attr("LowbitError");
      nb::object exc = cls(e.what(), c.file, c.tensor, c.offset ? nb::cast(*c.offset) : nb::none(), c.expected);
      PyErr_SetObject(cls.ptr(), exc.ptr());
    }
  });
  m.def("quantize_4bit", &quantize_4bit, nb::arg("x"), nb::arg("quant_type"), nb::arg("blocksize"), nb::arg("double_quant"),
        nb::arg("nested_offset").none() = nb::none());
  m.def("dequantize_4bit", &dequantize_4bit, nb::arg("packed"), nb::arg("absmax"), nb::arg("quant_type"), nb::arg("blocksize"),
        nb::arg("shape"), nb::arg("out_dtype"), nb::arg("nested_absmax").none() = nb::none(), nb::arg("offset") = 0.0f);
  m.def("int8_quantize_rowwise", &int8_quantize_rowwise, nb::arg("x"), nb::arg("threshold") = 0.0f);
  m.def("int8_dequantize_rowwise", &int8_dequantize_rowwise, nb::arg("cb"), nb::arg("scb"), nb::arg("out_dtype"));
  m.def("int8_matmul", &int8_matmul, nb::arg("x"), nb::arg("cb"), nb::arg("scb"), nb::arg("threshold"));
  m.def("gguf_dequantize", &gguf_dequantize, nb::arg("raw"), nb::arg("type"), nb::arg("rows"), nb::arg("cols"));
  m.def("gguf_quantize", &gguf_quantize, nb::arg("x"), nb::arg("type"), nb::arg("weights").none() = nb::none());
  m.def("code_map", &code_map, nb::arg("quant_type"));
  m.def("nested_code_map", &nested_code_map);
  m.def("inspect", &inspect_path, nb::arg("path"));
  bind_jobs(m);
  bind_cuda(m);
}
