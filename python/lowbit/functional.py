"""bitsandbytes' functional API on lowbit's kernels, for torch tensors.

The dtype contract: a dequantized tensor has the dtype its QuantState recorded when it was quantized,
unless the call names another with `out_dtype=`. torch's default dtype never changes a result.

4-bit bytes are bitsandbytes' CUDA kernels' own (NF4/FP4, any blocksize, double quant). CPU tensors run
lowbit's CPU codecs; CUDA tensors (when lowbit was built with CUDA) run its CUDA kernels where they lie,
on torch's current stream, with outputs allocated by torch: nothing is moved behind the caller's back.
The CUDA module (liblowbit_cuda.so) is opened on the first CUDA call.
"""
from dataclasses import dataclass
from typing import Optional

import torch

from . import _lowbit

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16"}
_SIXTEEN_BIT = (torch.float16, torch.bfloat16)


def _tensor(t, what):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor, not {type(t).__name__}")
    if t.device.type not in ("cpu", "cuda"):
        raise NotImplementedError(f"{what} is on {t.device}: lowbit runs on CPU and CUDA tensors")
    return t.contiguous()


def _cpu(t, what):
    t = _tensor(t, what)
    if t.device.type != "cpu":
        raise NotImplementedError(f"{what} is on {t.device}: this function runs on CPU tensors only")
    return t


def _on(device, t, what):
    """t (a tensor of the call's state) on the call's device; a state on another device is an error, not a copy."""
    t = _tensor(t, what)
    if t.device != device:
        raise ValueError(f"{what} is on {t.device}, the data on {device}")
    return t


# The current stream's raw handle: torch's internal accessor where it has one (no Stream object is made, which
# matters on a layer's every call), else the public API.
_raw_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)


def _stream(device):
    if _raw_stream is not None:
        return _raw_stream(device.index if device.index is not None else torch.cuda.current_device())
    return torch.cuda.current_stream(device).cuda_stream


def _float_result(raw, dtype):
    """The extension returns float32 as it is and 16-bit results as uint16 storage: view, no copy."""
    return raw.view(dtype) if dtype in _SIXTEEN_BIT else raw


def _dtype_name(dtype):
    if dtype not in _DTYPE_NAMES:
        raise TypeError(f"{dtype} is not float32, float16 or bfloat16")
    return _DTYPE_NAMES[dtype]


@dataclass
class QuantState:
    """What dequantizing a 4-bit tensor needs, field for field bitsandbytes' QuantState.

    absmax: float32 per block, or with double quantization (nested=True) uint8 codes of the block
    scales, which state2 (absmax = nested absmax per 256 codes, code = the signed dynamic map) and
    offset turn back into scales.
    """

    absmax: torch.Tensor
    shape: torch.Size
    code: torch.Tensor
    blocksize: int
    quant_type: str
    dtype: torch.dtype
    offset: Optional[torch.Tensor] = None
    state2: Optional["QuantState"] = None

    @property
    def nested(self):
        return self.state2 is not None

    @classmethod
    def from_bnb(cls, state):
        """From a bitsandbytes.functional.QuantState."""
        state2 = None
        if getattr(state, "nested", False):
            s2 = state.state2
            state2 = cls(absmax=s2.absmax, shape=None, code=s2.code, blocksize=s2.blocksize, quant_type="dynamic", dtype=torch.float32)
        return cls(absmax=state.absmax, shape=torch.Size(state.shape), code=state.code, blocksize=state.blocksize,
                   quant_type=state.quant_type, dtype=state.dtype, offset=state.offset, state2=state2)

    def to_bnb(self):
        """As a bitsandbytes.functional.QuantState (needs bitsandbytes)."""
        from bitsandbytes.functional import QuantState as BnbQuantState

        state2 = None
        if self.nested:
            state2 = BnbQuantState(absmax=self.state2.absmax, code=self.state2.code, blocksize=self.state2.blocksize, dtype=torch.float32)
        return BnbQuantState(absmax=self.absmax, shape=self.shape, code=self.code, blocksize=self.blocksize, quant_type=self.quant_type,
                             dtype=self.dtype, offset=self.offset, state2=state2)

    def as_dict(self):
        """bitsandbytes' state-dict form (QuantState.as_dict(packed=False)): tensors and plain values."""
        d = {"quant_type": self.quant_type, "absmax": self.absmax, "blocksize": self.blocksize, "quant_map": self.code,
             "dtype": str(self.dtype).removeprefix("torch."), "shape": tuple(self.shape)}
        if self.nested:
            d.update({"nested_absmax": self.state2.absmax, "nested_blocksize": self.state2.blocksize,
                      "nested_quant_map": self.state2.code, "nested_dtype": "float32", "nested_offset": self.offset.item()})
        return d

    @classmethod
    def from_dict(cls, d):
        """The inverse of as_dict (what a checkpoint's companions hold, read back)."""
        state2 = None
        offset = None
        if "nested_absmax" in d:
            state2 = cls(absmax=d["nested_absmax"], shape=None, code=d["nested_quant_map"], blocksize=int(d["nested_blocksize"]),
                         quant_type="dynamic", dtype=torch.float32)
            offset = torch.tensor(float(d["nested_offset"]), dtype=torch.float32)
        return cls(absmax=d["absmax"], shape=torch.Size(d["shape"]), code=d["quant_map"], blocksize=int(d["blocksize"]),
                   quant_type=d["quant_type"], dtype=getattr(torch, d["dtype"]), offset=offset, state2=state2)


def quantize_4bit(A, blocksize=64, compress_statistics=False, quant_type="fp4", quant_storage=torch.uint8, *, nested_offset=None):
    """bitsandbytes.functional.quantize_4bit: (packed uint8 [ceil(n/2), 1], QuantState). `nested_offset`
    (double quant): the mean of the block scales to subtract; by default the float32 nearest their exact
    mean (bitsandbytes takes torch.mean on the GPU, whose summation order is not reproducible)."""
    A = _tensor(A, "A")
    _dtype_name(A.dtype)
    if quant_storage != torch.uint8:
        raise NotImplementedError("quant_storage other than torch.uint8")
    if A.is_cuda:
        return _quantize_4bit_cuda(A, int(blocksize), bool(compress_statistics), quant_type, nested_offset)
    q = _lowbit.quantize_4bit(A, quant_type, int(blocksize), bool(compress_statistics), nested_offset)
    state2, offset = None, None
    if compress_statistics:
        state2 = QuantState(absmax=q["nested_absmax"], shape=None, code=q["nested_code"], blocksize=256, quant_type="dynamic",
                            dtype=torch.float32)
        offset = torch.tensor(q["offset"], dtype=torch.float32)
    state = QuantState(absmax=q["absmax"], shape=A.shape, code=q["code"], blocksize=int(blocksize), quant_type=quant_type,
                       dtype=A.dtype, offset=offset, state2=state2)
    return q["packed"], state


def _quantize_4bit_cuda(A, blocksize, compress_statistics, quant_type, nested_offset):
    """The CUDA kernels' quantization; with double quant the offset is their fixed-order mean of the scales."""
    if nested_offset is not None:
        raise NotImplementedError("nested_offset on CUDA tensors: the GPU computes the mean of the scales itself")
    dev, n = A.device, A.numel()
    blocks = -(-n // blocksize)
    packed = torch.empty(((n + 1) // 2, 1), dtype=torch.uint8, device=dev)
    absmax = torch.empty(blocks, dtype=torch.float32, device=dev)
    codes = nested = offset = None
    if compress_statistics:
        codes = torch.empty(blocks, dtype=torch.uint8, device=dev)
        nested = torch.empty(-(-blocks // 256), dtype=torch.float32, device=dev)
        offset = torch.empty((), dtype=torch.float32, device=dev)
    _lowbit.cuda.quantize_4bit(A, quant_type, blocksize, packed, absmax, codes, nested, offset, _stream(dev))
    code = _lowbit.code_map(quant_type).to(dev)
    state2 = None
    if compress_statistics:
        state2 = QuantState(absmax=nested, shape=None, code=_lowbit.nested_code_map().to(dev), blocksize=256, quant_type="dynamic",
                            dtype=torch.float32)
        absmax = codes
    return packed, QuantState(absmax=absmax, shape=A.shape, code=code, blocksize=blocksize, quant_type=quant_type, dtype=A.dtype,
                              offset=offset, state2=state2)


def quantize_nf4(A, blocksize=64, compress_statistics=False):
    return quantize_4bit(A, blocksize, compress_statistics, "nf4")


def quantize_fp4(A, blocksize=64, compress_statistics=False):
    return quantize_4bit(A, blocksize, compress_statistics, "fp4")


def dequantize_4bit(A, quant_state=None, absmax=None, out=None, blocksize=64, quant_type="fp4", *, out_dtype=None):
    """bitsandbytes.functional.dequantize_4bit. The result has quant_state.dtype (the quantized tensor's
    dtype), or `out_dtype` when given; never torch's default dtype. A bitsandbytes QuantState is accepted
    as it is."""
    if quant_state is None:
        raise ValueError("dequantize_4bit needs the quant_state (absmax alone does not record the dtype)")
    if not isinstance(quant_state, QuantState):
        quant_state = QuantState.from_bnb(quant_state)
    dtype = out_dtype or quant_state.dtype
    A = _tensor(A, "A")
    if A.is_cuda:
        return _dequantize_4bit_cuda(A, quant_state, dtype, out)
    nested = quant_state.state2.absmax.contiguous() if quant_state.nested else None
    offset = float(quant_state.offset) if quant_state.nested else 0.0
    raw = _lowbit.dequantize_4bit(A.view(torch.uint8), quant_state.absmax.contiguous(), quant_state.quant_type, quant_state.blocksize,
                                  list(quant_state.shape), _dtype_name(dtype), nested, offset)
    result = _float_result(raw, dtype)
    if out is not None:
        out.copy_(result)
        return out
    return result


def _dequantize_4bit_cuda(A, state, dtype, out):
    dev = A.device
    _dtype_name(dtype)
    result = out if out is not None and out.is_contiguous() and out.dtype == dtype and out.device == dev else None
    if result is None:
        result = torch.empty(tuple(state.shape), dtype=dtype, device=dev)
    nested = offset = None
    if state.nested:
        nested = _on(dev, state.state2.absmax, "state2.absmax")
        offset = _on(dev, torch.as_tensor(state.offset, dtype=torch.float32, device=dev).reshape(()), "offset")
    _lowbit.cuda.dequantize_4bit(A.view(torch.uint8), _on(dev, state.absmax, "absmax"), nested, offset, state.quant_type, int(state.blocksize),
                                 result, _stream(dev))
    if out is not None and result is not out:
        out.copy_(result)
        return out
    return result


def dequantize_nf4(A, quant_state, *, out_dtype=None):
    return dequantize_4bit(A, quant_state, out_dtype=out_dtype)


def dequantize_fp4(A, quant_state, *, out_dtype=None):
    return dequantize_4bit(A, quant_state, out_dtype=out_dtype)


def matmul_4bit(A, B, quant_state, bias=None):
    """A @ dequantize_4bit(B).T (+ bias) in A's dtype. On the GPU, for bf16/f16 activations and weights whose
    shape the kernel takes (out_features % 16 == 0, in_features % 64 == 0, blocksize a power of two >= 64),
    lowbit's fused 4-bit kernel reads the packed codes directly (few tokens) or dequantizes into scratch for
    cuBLAS (many), from a copy of the weight re-laid once and kept on the quant state; otherwise the weight
    is dequantized by lowbit and multiplied by torch."""
    fused = _fused_weight(A, B, quant_state)
    if fused is None:
        W = dequantize_4bit(B, quant_state, out_dtype=A.dtype)
        return torch.nn.functional.linear(A, W, bias)
    A2 = A.reshape(-1, A.shape[-1])
    if A2.data_ptr() % 16:
        A2 = A2.clone()  # the kernel reads 16-byte vectors
    out = torch.empty((A2.shape[0], fused_rows(quant_state)), dtype=A.dtype, device=A.device)
    _lowbit.cuda.matmul_4bit(fused, A2.contiguous(), out, _stream(A.device))
    out = out.reshape(*A.shape[:-1], out.shape[-1])
    return out + bias.to(A.dtype) if bias is not None else out


def fused_rows(quant_state):
    return int(quant_state.shape[0])


def _fused_weight(A, B, state):
    """The re-laid weight for lowbit's fused CUDA product, made once per (state, packed tensor); None when the
    product should go through dequantize_4bit instead."""
    if not (A.is_cuda and B.is_cuda) or A.dtype not in _SIXTEEN_BIT or len(state.shape) != 2:
        return None
    if A.requires_grad and torch.is_grad_enabled():
        return None  # the kernel is not differentiable: torch's product carries the gradient to A
    cached = getattr(state, "_lowbit_fused", None)
    if cached is not None and cached[0] == B.data_ptr() and A.shape[-1] == cached[2]:
        return cached[1]  # a layer's every call after its first: nothing else to check
    rows, cols = int(state.shape[0]), int(state.shape[1])
    blocksize = int(state.blocksize)
    if rows % 16 or cols % 64 or blocksize < 64 or blocksize & (blocksize - 1) or A.shape[-1] != cols:
        return None
    packed = B.contiguous().view(torch.uint8)
    if packed.data_ptr() % 8:
        return None
    dev = A.device
    absmax = _on(dev, state.absmax, "absmax")
    nested = offset = None
    if getattr(state, "nested", False):
        nested = _on(dev, state.state2.absmax, "state2.absmax")
        offset = torch.as_tensor(state.offset, dtype=torch.float32, device=dev).reshape(())
    fused = _lowbit.cuda.prepare_fused_4bit(packed, absmax, nested, offset, state.quant_type, blocksize, rows, cols,
                                            (packed, absmax, nested, offset), _stream(dev))
    state._lowbit_fused = (B.data_ptr(), fused, cols)
    return fused


gemv_4bit = matmul_4bit


def int8_vectorwise_quant(A, threshold=0.0):
    """LLM.int8 row-wise quantization: (CB int8, SCB float32 per row, outlier columns or None)."""
    A = _tensor(A, "A")
    if A.is_cuda:
        if threshold > 0:
            raise NotImplementedError("lowbit's CUDA row-wise quantization takes threshold 0 (no outlier columns)")
        A2 = A.reshape(-1, A.shape[-1])
        cb = torch.empty(A2.shape, dtype=torch.int8, device=A.device)
        scb = torch.empty(A2.shape[0], dtype=torch.float32, device=A.device)
        _lowbit.cuda.int8_quantize_rowwise(A2, cb, scb, _stream(A.device))
        return cb.reshape(A.shape), scb, None
    cb, scb, outliers = _lowbit.int8_quantize_rowwise(A.reshape(-1, A.shape[-1]), float(threshold))
    return cb.view(torch.int8).reshape(A.shape), scb, outliers if threshold > 0 else None


def int8_vectorwise_dequant(A, stats, *, out_dtype=torch.float32):
    """CB · SCB / 127 in out_dtype (bitsandbytes returns float32)."""
    A = _tensor(A, "A")
    if A.is_cuda:
        _dtype_name(out_dtype)
        out = torch.empty(A.shape, dtype=out_dtype, device=A.device)
        _lowbit.cuda.int8_dequantize_rowwise(A.reshape(-1, A.shape[-1]), _on(A.device, stats, "stats").float(), out, _stream(A.device))
        return out
    raw = _lowbit.int8_dequantize_rowwise(A.reshape(-1, A.shape[-1]), _cpu(stats, "stats").float(), _dtype_name(out_dtype))
    return _float_result(raw, out_dtype).reshape(A.shape)


def int8_matmul(A, CB, SCB, threshold=6.0):
    """LLM.int8's matmul: A (float16) · Wᵀ, W's rows in int8 (CB, SCB) and A's outlier columns (|a| ≥ threshold)
    multiplied in 16 bits; float16 result, bit for bit bitsandbytes' CUDA result."""
    A = _tensor(A, "A")
    if A.dtype != torch.float16:
        raise TypeError("LLM.int8 takes float16 activations")
    if A.is_cuda:
        A2 = A.reshape(-1, A.shape[-1])
        out = torch.empty((A2.shape[0], CB.shape[0]), dtype=torch.float16, device=A.device)
        _lowbit.cuda.int8_matmul(A2, _on(A.device, CB, "CB"), _on(A.device, SCB, "SCB").float(), float(threshold), out, _stream(A.device))
        return out.reshape(*A.shape[:-1], CB.shape[0])
    raw = _lowbit.int8_matmul(A.reshape(-1, A.shape[-1]), _cpu(CB, "CB"), _cpu(SCB, "SCB").float(), float(threshold))
    return raw.view(torch.float16).reshape(*A.shape[:-1], CB.shape[0])


def gguf_dequantize(raw, ggml_type, shape, *, out_dtype=torch.float32):
    """A GGUF tensor's block bytes (uint8, as stored) to values of `shape` (outermost first), as ggml's to_float."""
    raw = _tensor(raw, "raw")
    shape = tuple(shape)
    cols = shape[-1]
    rows = 1
    for d in shape[:-1]:
        rows *= d
    if raw.is_cuda:
        _dtype_name(out_dtype)
        out = torch.empty(shape, dtype=out_dtype, device=raw.device)
        _lowbit.cuda.gguf_dequantize(raw.view(torch.uint8).reshape(-1), ggml_type, rows, cols, out, _stream(raw.device))
        return out
    values = _lowbit.gguf_dequantize(raw.view(torch.uint8).reshape(-1), ggml_type, rows, cols).reshape(shape)
    return values if out_dtype == torch.float32 else values.to(out_dtype)


def gguf_quantize(x, ggml_type, imatrix=None):
    """Rows of x (float32, last dimension the row) to ggml's block bytes, as ggml_quantize_chunk; `imatrix`:
    one importance weight per column."""
    x = _cpu(x, "x").float()
    x2 = x.reshape(-1, x.shape[-1])
    weights = _cpu(imatrix, "imatrix").float() if imatrix is not None else None
    return _lowbit.gguf_quantize(x2, ggml_type, weights)
