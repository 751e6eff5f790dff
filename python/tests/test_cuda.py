"""lowbit.functional on CUDA tensors: lowbit's CUDA kernels, bit for bit its CPU codecs and bitsandbytes'
golden bytes, on torch's current stream, under the dtype contract. Skipped without a GPU (the module's
loading is checked everywhere lowbit was built with CUDA)."""

import pytest
import torch
from safetensors.torch import load_file

import lowbit
import lowbit.functional as F
from lowbit import _lowbit

from golden import bits, metadata


def test_the_cuda_module_opens_beside_the_extension():
    if not _lowbit.cuda.built:
        pytest.skip("lowbit built without CUDA")
    assert isinstance(_lowbit.cuda.devices(), list)  # raises LowbitError if liblowbit_cuda.so cannot be opened


def test_without_cuda_a_cuda_call_says_why():
    if _lowbit.cuda.built:
        pytest.skip("lowbit built with CUDA")
    if not torch.cuda.is_available():
        pytest.skip("no GPU for a CUDA tensor")
    with pytest.raises(lowbit.LowbitError, match="without CUDA"):
        F.quantize_4bit(torch.ones(64, device="cuda"), 64)


gpu = pytest.mark.skipif(not (torch.cuda.is_available() and _lowbit.cuda.available()), reason="no GPU (or lowbit built without CUDA)")




@gpu
def test_golden_4bit_cases_on_the_gpu(shared):
    cases = sorted((shared / "golden" / "bnb" / "4bit").glob("*.safetensors"))
    assert len(cases) == 153
    for path in cases:
        meta, t = metadata(path), load_file(path, device="cuda")
        dq = meta["double_quant"] == "true"
        packed, state = F.quantize_4bit(t["input"], int(meta["blocksize"]), dq, meta["quant_type"])
        assert packed.is_cuda and state.absmax.is_cuda and state.dtype == t["input"].dtype
        assert torch.equal(packed, t["packed"]), path.name
        if not dq:
            assert torch.equal(state.absmax, t["absmax"]), path.name
        # the golden state (bitsandbytes' own offset) dequantized on the GPU: bit for bit
        golden = F.QuantState(absmax=t["absmax_quantized"] if dq else t["absmax"], shape=t["input"].shape, code=state.code,
                              blocksize=int(meta["blocksize"]), quant_type=meta["quant_type"], dtype=t["input"].dtype,
                              offset=t["nested_offset"] if dq else None,
                              state2=F.QuantState(absmax=t["nested_absmax"], shape=None, code=None, blocksize=256, quant_type="dynamic",
                                                  dtype=torch.float32) if dq else None)
        out = F.dequantize_4bit(t["packed"], golden)
        assert out.is_cuda and out.dtype == t["dequantized"].dtype
        assert torch.equal(bits(out), bits(t["dequantized"])), path.name


@gpu
@pytest.mark.parametrize("default", [torch.float16, torch.float64])
def test_gpu_equals_cpu_under_any_default_dtype(default):
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            x = torch.randn(96, 512, dtype=torch.float32).to(dtype)
            for quant_type in ("nf4", "fp4"):
                for dq in (False, True):
                    packed, state = F.quantize_4bit(x.cuda(), 128, dq, quant_type)
                    cpu_packed, cpu_state = F.quantize_4bit(x, 128, dq, quant_type, nested_offset=float(state.offset) if dq else None)
                    assert torch.equal(packed.cpu(), cpu_packed)
                    assert torch.equal(state.absmax.cpu(), cpu_state.absmax)
                    out = F.dequantize_4bit(packed, state)
                    assert out.is_cuda and out.dtype == dtype
                    assert torch.equal(bits(out.cpu()), bits(F.dequantize_4bit(cpu_packed, cpu_state)))
                    assert F.dequantize_4bit(packed, state, out_dtype=torch.float32).dtype == torch.float32
    finally:
        torch.set_default_dtype(before)


@gpu
def test_work_runs_on_the_current_stream():
    x = torch.randn(4096, 1024, device="cuda", dtype=torch.bfloat16)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        packed, state = F.quantize_4bit(x, 64, True, "nf4")
        out = F.dequantize_4bit(packed, state)
    stream.synchronize()
    cpu_packed, cpu_state = F.quantize_4bit(x.cpu(), 64, True, "nf4", nested_offset=float(state.offset.cpu()))
    assert torch.equal(packed.cpu(), cpu_packed)
    assert torch.equal(bits(out.cpu()), bits(F.dequantize_4bit(cpu_packed, cpu_state)))


@gpu
def test_int8_and_gguf_on_the_gpu(shared):
    x = torch.randn(64, 512, dtype=torch.float16)
    cb, scb, _ = F.int8_vectorwise_quant(x.cuda())
    cpu_cb, cpu_scb, _ = F.int8_vectorwise_quant(x)
    assert torch.equal(cb.cpu(), cpu_cb) and torch.equal(scb.cpu(), cpu_scb)
    assert torch.equal(F.int8_vectorwise_dequant(cb, scb).cpu(), F.int8_vectorwise_dequant(cpu_cb, cpu_scb))
    t = load_file(shared / "golden" / "bnb" / "int8" / "llm_int8_matmul_thr0_X16x512_W256x512.safetensors")
    y = F.int8_matmul(t["X"].cuda(), t["CB"].cuda(), t["SCB"].cuda(), 0.0)
    assert torch.equal(y.cpu(), t["output"])

    w = torch.randn(8, 1024)
    for ggml_type in ("q4_K", "q8_0", "q6_K"):
        raw = F.gguf_quantize(w, ggml_type)
        on_gpu = F.gguf_dequantize(raw.cuda(), ggml_type, w.shape)
        assert on_gpu.is_cuda and torch.equal(on_gpu.cpu(), F.gguf_dequantize(raw, ggml_type, w.shape))


@gpu
def test_patched_bitsandbytes_on_the_gpu():
    bnb = pytest.importorskip("bitsandbytes")
    from lowbit.integrations import bitsandbytes as integration

    w = torch.randn(1024, 2048, device="cuda", dtype=torch.bfloat16)
    packed, theirs = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    expected = bnb.functional.dequantize_4bit(packed, theirs)
    x = torch.randn(4, 2048, device="cuda", dtype=torch.bfloat16)
    their_y = bnb.matmul_4bit(x, packed.t(), quant_state=theirs)
    integration.patch()
    try:
        ours_packed, ours = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        assert torch.equal(ours_packed, packed) and torch.equal(ours.absmax, theirs.absmax)
        assert torch.equal(bnb.functional.dequantize_4bit(packed, theirs), expected)
        y = integration.matmul_4bit(x, packed.t(), theirs)
        # lowbit's fused kernel sums in another order and rounds the code values, not code x scale, to bf16:
        # within a few bf16 roundings of outputs whose magnitude is ~45 here (values near 32 are 0.125 apart).
        torch.testing.assert_close(y, their_y, rtol=2**-6, atol=2**-6 * float(their_y.abs().max()))
    finally:
        integration.unpatch()


@gpu
def test_fused_4bit_product_matches_dequantize_then_matmul():
    # 576 columns (SmolLM2's hidden size): an odd number of 64-value chunks, which the fused kernel also takes.
    for dq, cols in ((False, 1024), (True, 1024), (True, 576)):
        w = torch.randn(512, cols, device="cuda", dtype=torch.bfloat16)
        packed, state = F.quantize_4bit(w, 64, dq, "nf4")
        exact = F.dequantize_4bit(packed, state, out_dtype=torch.float32)
        for tokens in (1, 5, 200):  # fused kernel for few tokens, dequantize + cuBLAS from 96
            x = torch.randn(tokens, cols, device="cuda", dtype=torch.bfloat16)
            y = F.matmul_4bit(x, packed, state)
            assert y.dtype == torch.bfloat16 and y.shape == (tokens, 512)
            assert state._lowbit_fused is not None  # the re-laid weight, made once and kept
            # bf16 output: one rounding of the result (2^-8 relative), plus float32 summation-order differences.
            reference = x.float() @ exact.t()
            torch.testing.assert_close(y.float(), reference, rtol=2**-7, atol=2**-7 * float(reference.abs().max()))
