"""lowbit.functional: bitsandbytes' bytes from the golden vectors, the dtype contract under every default
dtype, bitsandbytes itself where installed, GGUF blocks against the golden files."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import lowbit
import lowbit.functional as F

from golden import bits, metadata

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def golden_4bit(shared):
    return sorted((shared / "golden" / "bnb" / "4bit").glob("*.safetensors"))




def test_every_golden_4bit_case_byte_for_byte(shared):
    cases = golden_4bit(shared)
    assert len(cases) == 153
    for path in cases:
        meta, t = metadata(path), load_file(path)
        dq = meta["double_quant"] == "true"
        offset = t["nested_offset"].item() if dq else None
        packed, state = F.quantize_4bit(t["input"], int(meta["blocksize"]), dq, meta["quant_type"], nested_offset=offset)
        assert torch.equal(packed, t["packed"]), path.name
        if dq:
            assert torch.equal(state.absmax, t["absmax_quantized"]), path.name
            assert torch.equal(state.state2.absmax, t["nested_absmax"]), path.name
        else:
            assert torch.equal(state.absmax, t["absmax"]), path.name
        out = F.dequantize_4bit(packed, state)
        assert out.dtype == t["dequantized"].dtype
        assert torch.equal(bits(out), bits(t["dequantized"])), path.name


@pytest.mark.parametrize("default", [torch.float16, torch.float64])
def test_dequantized_dtype_is_the_quant_states_never_the_default(default):
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        for dtype in (torch.bfloat16, torch.float16, torch.float32):
            x = torch.randn(64, 256, dtype=torch.float32).to(dtype)
            for dq in (False, True):
                packed, state = F.quantize_4bit(x, 64, dq, "nf4")
                assert state.dtype == dtype
                assert F.dequantize_4bit(packed, state).dtype == dtype
                assert F.dequantize_nf4(packed, state, out_dtype=torch.float32).dtype == torch.float32
                assert F.dequantize_4bit(packed, state, out_dtype=torch.float16).dtype == torch.float16
        cb, scb, _ = F.int8_vectorwise_quant(torch.randn(8, 64, dtype=torch.float16))
        assert F.int8_vectorwise_dequant(cb, scb).dtype == torch.float32
        assert F.int8_vectorwise_dequant(cb, scb, out_dtype=torch.bfloat16).dtype == torch.bfloat16
    finally:
        torch.set_default_dtype(before)


def test_quant_state_round_trips_through_its_dict_form():
    x = torch.randn(32, 256, dtype=torch.bfloat16)
    packed, state = F.quantize_4bit(x, 128, True, "fp4")
    again = F.QuantState.from_dict(state.as_dict())
    assert torch.equal(F.dequantize_4bit(packed, again), F.dequantize_4bit(packed, state))


def test_int8_golden_cases(shared):
    for path in sorted((shared / "golden" / "bnb" / "int8").glob("vectorwise_*.safetensors")):
        t, meta = load_file(path), metadata(path)
        cb, scb, outliers = F.int8_vectorwise_quant(t["input"], float(meta["threshold"]))
        assert torch.equal(cb, t["CB"]), path.name
        assert torch.equal(scb, t["SCB"]), path.name
        if "outlier_cols" in t:
            assert torch.equal(outliers, t["outlier_cols"]), path.name
        assert torch.equal(F.int8_vectorwise_dequant(cb, scb), t["dequantized"]), path.name
    t = load_file(shared / "golden" / "bnb" / "int8" / "llm_int8_matmul_thr0_X16x512_W256x512.safetensors")
    assert torch.equal(F.int8_matmul(t["X"], t["CB"], t["SCB"], 0.0), t["output"])


def test_bitsandbytes_dequantizes_lowbits_bytes_identically():
    bnb = pytest.importorskip("bitsandbytes")
    x = torch.randn(64, 512, dtype=torch.bfloat16)
    for quant_type in ("nf4", "fp4"):
        for dq in (False, True):
            packed, state = F.quantize_4bit(x, 64, dq, quant_type)
            ours = F.dequantize_4bit(packed, state)
            theirs = bnb.functional.dequantize_4bit(packed, state.to_bnb())
            assert theirs.dtype == ours.dtype
            assert torch.equal(ours, theirs), (quant_type, dq)
            # and a bitsandbytes QuantState is taken as it is
            assert torch.equal(F.dequantize_4bit(packed, state.to_bnb()), ours)


def test_gguf_blocks_match_the_golden_files(shared):
    gguf = pytest.importorskip("gguf")
    checked = 0
    for path in sorted((shared / "golden" / "ggml").glob("*q4_K_*.gguf")) + sorted((shared / "golden" / "ggml").glob("*q8_0_*.gguf")):
        reader = gguf.GGUFReader(path)
        tensors = {t.name: t for t in reader.tensors}
        if "input" not in tensors or "quantized" not in tensors or "imatrix" in path.name:
            continue
        x = torch.from_numpy(tensors["input"].data.copy()).float()
        q = tensors["quantized"]
        ggml_type = q.tensor_type.name.lower().replace("_k", "_K")
        raw = F.gguf_quantize(x, ggml_type)
        assert bytes(raw.numpy()) == bytes(q.data.tobytes()), path.name
        back = F.gguf_dequantize(raw, ggml_type, x.shape)
        assert back.shape == x.shape and back.dtype == torch.float32
        checked += 1
    assert checked >= 2


def test_inspect_and_errors(shared):
    summary = lowbit.inspect(shared / "golden" / "ggml" / "rows4096_q4_K_3x4096.gguf")
    quantized = next(t for t in summary["tensors"] if t["name"] == "quantized")
    assert quantized["format"] == "q4_K" and quantized["shape"] == [3, 4096] and quantized["bpw"] == 4.5
    with pytest.raises(lowbit.LowbitError) as e:
        lowbit.inspect(shared / "data" / "README.md")
    assert e.value.file.endswith("README.md")


def test_plain_import_does_not_import_torch(shared):
    code = ("import sys, lowbit; lowbit.inspect(sys.argv[1]); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code, str(shared / "golden" / "ggml" / "rows4096_q4_K_3x4096.gguf")], check=True)
