"""bitsandbytes' 4-bit and 8-bit calls on lowbit's kernels: `patch()` routes them, `unpatch()` restores.

Routed, with bitsandbytes' own signatures: bitsandbytes.functional's quantize_4bit / dequantize_4bit (and
the nf4/fp4 shorthands), gemv_4bit, int8_vectorwise_quant / int8_vectorwise_dequant, bitsandbytes.matmul_4bit,
and the forward of bitsandbytes.nn.Linear4bit and (inference with int8 weights) Linear8bitLt. So a
transformers model loaded with BitsAndBytesConfig runs unchanged: its weights are quantized by lowbit when
loaded after patch(), and every forward dequantizes through lowbit.

What stays bitsandbytes': its QuantState objects (lowbit returns and takes them), the optimizers, 8-bit
blockwise quantization, training paths (a Linear8bitLt with float16 weights, or one whose input needs a
gradient), and CPU weights bitsandbytes already re-packed for its AVX512-BF16 kernel.

The dtype contract holds on the routed calls: a dequantized weight has its quant state's dtype, never
torch's default dtype. Bytes: 4-bit packing, scales and nested scales are bitsandbytes' own; with
compress_statistics the nested offset is torch.mean of the block scales on the tensor's device, as
bitsandbytes takes it, so a model quantized patched or unpatched holds the same bytes on the CPU (on CUDA
lowbit's kernels take a fixed-order mean, which agrees unless the exact mean lies within ~1e-15 of a
rounding boundary). Products: the weight dequantized by lowbit, then multiplied by torch (cuBLAS on the
GPU): within bf16 rounding of bitsandbytes' fused kernels, not bit-identical to them.
"""
import torch

from .. import functional as F

_saved = {}


def _bnb():
    import bitsandbytes

    return bitsandbytes


# ---- bitsandbytes' signatures over lowbit.functional ----


def quantize_4bit(A, absmax=None, out=None, blocksize=None, compress_statistics=False, quant_type="fp4", quant_storage=torch.uint8):
    blocksize = 64 if blocksize is None else int(blocksize)
    if blocksize not in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        raise ValueError(f"invalid blocksize {blocksize}")
    if quant_type not in ("nf4", "fp4"):
        raise ValueError(f"quant_type must be 'nf4' or 'fp4', got {quant_type!r}")
    offset = None
    if compress_statistics and not A.is_cuda:
        # bitsandbytes' offset: torch.mean of the first level's scales (its summation order, bit for bit).
        _, plain = F.quantize_4bit(A, blocksize, False, quant_type, quant_storage)
        offset = plain.absmax.mean().item()
    packed, state = F.quantize_4bit(A, blocksize, compress_statistics, quant_type, quant_storage, nested_offset=offset)
    state = state.to_bnb()
    if out is not None:
        packed = out.copy_(packed)
    if absmax is not None:
        state.absmax = absmax.copy_(state.absmax)
    return packed, state


def quantize_nf4(A, absmax=None, out=None, blocksize=None, compress_statistics=False, quant_storage=torch.uint8):
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "nf4", quant_storage)


def quantize_fp4(A, absmax=None, out=None, blocksize=None, compress_statistics=False, quant_storage=torch.uint8):
    return quantize_4bit(A, absmax, out, blocksize, compress_statistics, "fp4", quant_storage)


def dequantize_4bit(A, quant_state=None, absmax=None, out=None, blocksize=None, quant_type="fp4"):
    if quant_state is None:
        if absmax is None or out is None:
            raise ValueError("dequantize_4bit requires both absmax and out when quant_state is not provided")
        quant_state = F.QuantState(absmax=absmax, shape=out.shape, code=None, blocksize=64 if blocksize is None else blocksize,
                                   quant_type=quant_type, dtype=out.dtype)
    result = F.dequantize_4bit(A, quant_state, out=out)
    return result.t() if A.shape[0] == 1 else result  # bitsandbytes' shim for weights packed as [1, n/2]


def dequantize_nf4(A, quant_state=None, absmax=None, out=None, blocksize=None):
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "nf4")


def dequantize_fp4(A, quant_state=None, absmax=None, out=None, blocksize=None):
    return dequantize_4bit(A, quant_state, absmax, out, blocksize, "fp4")


def _packed_for_cpu(state):
    return getattr(state, "packing_format_for_cpu", False)


def matmul_4bit(A, B, quant_state, out=None, bias=None):
    if _packed_for_cpu(quant_state):  # bitsandbytes' own re-packed layout: its kernel reads it
        return _saved["bnb.matmul_4bit"](A, B, quant_state, out=out, bias=bias)
    result = F.matmul_4bit(A, B.reshape(-1, 1) if B.dim() == 2 and B.shape[0] == 1 else B, quant_state, bias)
    if out is not None:
        return out.copy_(result)
    return result


def gemv_4bit(A, B, out=None, transposed_A=False, transposed_B=False, state=None):
    if state is None:
        raise ValueError("state cannot be None. gemv_4bit() requires the state from quantize_4bit()")
    if _packed_for_cpu(state):
        return _saved["F.gemv_4bit"](A, B, out=out, transposed_A=transposed_A, transposed_B=transposed_B, state=state)
    return matmul_4bit(A, B, state, out=out)


def int8_vectorwise_quant(A, threshold=0.0):
    return F.int8_vectorwise_quant(A, threshold)


def int8_vectorwise_dequant(A, stats):
    return F.int8_vectorwise_dequant(A, stats, out_dtype=torch.float32)


# ---- the layers ----


def _linear4bit_forward(self, x):
    _saved["fix_4bit_weight_quant_state_from_module"](self)  # a state kept on the module (FSDP) back on the weight
    state = getattr(self.weight, "quant_state", None)
    if state is None or _packed_for_cpu(state):
        return _saved["Linear4bit.forward"](self, x)
    if not self.compute_type_is_set:
        self.set_compute_type(x)
        self.compute_type_is_set = True
    input_dtype = x.dtype
    if self.compute_dtype is not None:
        x = x.to(self.compute_dtype)
    bias = None if self.bias is None else self.bias.to(x.dtype)
    return F.matmul_4bit(x, self.weight.data, state, bias).to(input_dtype)


def _linear8bit_forward(self, x):
    weight = self.weight
    # After its first forward bitsandbytes keeps the int8 rows in the module's state, not on the weight.
    cb = weight.CB if getattr(weight, "CB", None) is not None else self.state.CB
    scb = weight.SCB if getattr(weight, "SCB", None) is not None else self.state.SCB
    inference = not self.training and not torch.is_grad_enabled()
    if not inference or getattr(weight, "has_fp16_weights", True) or cb is None or scb is None:
        return _saved["Linear8bitLt.forward"](self, x)
    if x.is_cuda and (cb.shape[1] % 16 or cb.shape[0] % 4):  # shapes the int8 tensor cores do not take
        return _saved["Linear8bitLt.forward"](self, x)
    # LLM.int8: float16 activations against the int8 rows, outlier columns (|x| >= threshold) in 16 bits.
    y = F.int8_matmul(x.to(torch.float16), cb, scb, float(self.state.threshold))
    if self.bias is not None:
        y = y + self.bias.to(torch.float16)
    return y.to(x.dtype)


_ROUTES = {
    # key: (object holding the attribute, attribute name, lowbit's replacement)
    "F.quantize_4bit": (lambda b: b.functional, "quantize_4bit", quantize_4bit),
    "F.quantize_nf4": (lambda b: b.functional, "quantize_nf4", quantize_nf4),
    "F.quantize_fp4": (lambda b: b.functional, "quantize_fp4", quantize_fp4),
    "F.dequantize_4bit": (lambda b: b.functional, "dequantize_4bit", dequantize_4bit),
    "F.dequantize_nf4": (lambda b: b.functional, "dequantize_nf4", dequantize_nf4),
    "F.dequantize_fp4": (lambda b: b.functional, "dequantize_fp4", dequantize_fp4),
    "F.gemv_4bit": (lambda b: b.functional, "gemv_4bit", gemv_4bit),
    "F.int8_vectorwise_quant": (lambda b: b.functional, "int8_vectorwise_quant", int8_vectorwise_quant),
    "F.int8_vectorwise_dequant": (lambda b: b.functional, "int8_vectorwise_dequant", int8_vectorwise_dequant),
    "bnb.matmul_4bit": (lambda b: b, "matmul_4bit", matmul_4bit),
    "Linear4bit.forward": (lambda b: b.nn.Linear4bit, "forward", _linear4bit_forward),
    "Linear8bitLt.forward": (lambda b: b.nn.Linear8bitLt, "forward", _linear8bit_forward),
}


def is_patched():
    return bool(_saved)


def patch():
    """Route bitsandbytes' 4-bit and 8-bit calls to lowbit (see the module's docstring). Idempotent."""
    if _saved:
        return
    bnb = _bnb()
    from bitsandbytes.nn.modules import fix_4bit_weight_quant_state_from_module

    for key, (owner, name, replacement) in _ROUTES.items():
        holder = owner(bnb)
        _saved[key] = getattr(holder, name)
        setattr(holder, name, replacement)
    _saved["fix_4bit_weight_quant_state_from_module"] = fix_4bit_weight_quant_state_from_module


def unpatch():
    """Restore bitsandbytes' own functions."""
    if not _saved:
        return
    bnb = _bnb()
    for key, (owner, name, _) in _ROUTES.items():
        setattr(owner(bnb), name, _saved[key])
    _saved.clear()
