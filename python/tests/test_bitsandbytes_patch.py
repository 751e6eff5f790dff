"""lowbit.integrations.bitsandbytes: a transformers model loaded with BitsAndBytesConfig on the CPU, quantized
and run by bitsandbytes, then by lowbit after patch(). Quantized bytes and dequantized weights identical;
the forward identical to bitsandbytes' dequantize-then-matmul, and within bf16 rounding of bitsandbytes'
CPU kernel (which rounds the block scales to bf16 and computes in bf16).

What differs, and why: with double quantization, bitsandbytes' CPU backend quantizes the block scales
(8-bit blockwise, signed dynamic map) with a CPU kernel that, for a scale almost exactly between two codes,
can pick the farther one; lowbit writes the nearest code, as bitsandbytes' CUDA kernel does (lowbit's
golden vectors come from it). test_double_quant_differs_only_where_bitsandbytes_cpu_is_not_nearest shows it."""
import pytest
import torch

bnb = pytest.importorskip("bitsandbytes")
transformers = pytest.importorskip("transformers")

import lowbit.functional as LF  # noqa: E402
from lowbit.integrations import bitsandbytes as integration  # noqa: E402

ORIGINAL_DEQUANTIZE = bnb.functional.dequantize_4bit


@pytest.fixture(autouse=True)
def always_unpatched():
    yield
    integration.unpatch()


@pytest.fixture(scope="module")
def model_dir(shared):
    return shared / "data" / "lowbit-bpe-50M"


def load(model_dir, double_quant):
    config = transformers.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant,
                                             bnb_4bit_compute_dtype=torch.bfloat16)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, quantization_config=config, device_map="cpu", dtype=torch.bfloat16)
    return model.eval()


def linear4bit_layers(model):
    return {name: m for name, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)}


def test_patch_routes_and_unpatch_restores():
    before = (bnb.functional.quantize_4bit, bnb.functional.dequantize_4bit, bnb.nn.Linear4bit.forward, bnb.matmul_4bit)
    integration.patch()
    integration.patch()  # idempotent
    assert bnb.functional.quantize_4bit is integration.quantize_4bit
    assert bnb.functional.dequantize_4bit is integration.dequantize_4bit
    assert bnb.nn.Linear4bit.forward is integration._linear4bit_forward
    integration.unpatch()
    assert (bnb.functional.quantize_4bit, bnb.functional.dequantize_4bit, bnb.nn.Linear4bit.forward, bnb.matmul_4bit) == before


@pytest.mark.parametrize("default", [torch.float16, torch.float64])
def test_patched_functions_keep_bitsandbytes_bytes_and_the_dtype_contract(default):
    x = torch.randn(64, 512, dtype=torch.float32).to(torch.bfloat16)
    theirs = {dq: bnb.functional.quantize_4bit(x, blocksize=64, compress_statistics=dq, quant_type="nf4") for dq in (False,)}
    integration.patch()
    before = torch.get_default_dtype()
    torch.set_default_dtype(default)
    try:
        for dq, (packed_theirs, state_theirs) in theirs.items():
            packed, state = bnb.functional.quantize_4bit(x, blocksize=64, compress_statistics=dq, quant_type="nf4")
            assert isinstance(state, bnb.functional.QuantState)
            assert torch.equal(packed, packed_theirs)
            assert torch.equal(state.absmax, state_theirs.absmax)
            if dq:
                assert torch.equal(state.offset, state_theirs.offset)
                assert torch.equal(state.state2.absmax, state_theirs.state2.absmax)
            ours = bnb.functional.dequantize_4bit(packed, state)
            assert ours.dtype == torch.bfloat16  # the state's dtype, whatever the default
            assert torch.equal(ours, ORIGINAL_DEQUANTIZE(packed_theirs, state_theirs))
    finally:
        torch.set_default_dtype(before)


def test_double_quant_differs_only_where_bitsandbytes_cpu_is_not_nearest(model_dir):
    from safetensors.torch import load_file

    w = load_file(model_dir / "model.safetensors")["model.layers.0.self_attn.q_proj.weight"]
    packed_theirs, theirs = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    _, plain = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
    integration.patch()
    packed, ours = bnb.functional.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
    assert torch.equal(packed, packed_theirs)
    assert torch.equal(ours.offset, theirs.offset) and torch.equal(ours.state2.absmax, theirs.state2.absmax)
    differ = (ours.absmax != theirs.absmax).nonzero().flatten()
    assert 0 < len(differ) < 0.01 * len(ours.absmax)  # this weight has a few such near-ties (19 of 9216)
    code = theirs.state2.code
    normalized = (plain.absmax - theirs.offset) / theirs.state2.absmax.repeat_interleave(256)[: len(plain.absmax)]
    for i in differ.tolist():
        ours_distance = (normalized[i] - code[ours.absmax[i].long()]).abs()
        their_distance = (normalized[i] - code[theirs.absmax[i].long()]).abs()
        assert ours_distance < their_distance, i  # lowbit's code is the nearest one


def test_a_transformers_model_runs_on_lowbit_after_patch(model_dir):
    ids = torch.tensor([[0] + list(range(100, 164))])

    reference = load(model_dir, double_quant=False)  # quantized by bitsandbytes
    integration.patch()
    model = load(model_dir, double_quant=False)  # quantized by lowbit
    ours_layers, their_layers = linear4bit_layers(model), linear4bit_layers(reference)
    assert len(ours_layers) == 42 and ours_layers.keys() == their_layers.keys()
    for name, layer in ours_layers.items():
        theirs = their_layers[name]
        s, t = layer.weight.quant_state, theirs.weight.quant_state
        assert torch.equal(layer.weight.data, theirs.weight.data), name
        assert torch.equal(s.absmax, t.absmax), name
        # dequantized by lowbit (patched) and by bitsandbytes: bit for bit, in the state's dtype
        ours = bnb.functional.dequantize_4bit(layer.weight.data, s)
        assert ours.dtype == torch.bfloat16 and torch.equal(ours, ORIGINAL_DEQUANTIZE(theirs.weight.data, t)), name

    # One layer's forward is exactly the dequantized weight times the input (torch's product).
    name, layer = next(iter(ours_layers.items()))
    x = torch.randn(3, layer.in_features, dtype=torch.bfloat16)
    with torch.no_grad():
        expected = torch.nn.functional.linear(x, ORIGINAL_DEQUANTIZE(layer.weight.data, layer.weight.quant_state))
        assert torch.equal(layer(x), expected), name

    with torch.no_grad():
        logits = model(ids).logits.float()
        integration.unpatch()
        their_logits = reference(ids).logits.float()  # bitsandbytes' own CPU path
    assert logits.shape == their_logits.shape
    # bitsandbytes' CPU kernel (AVX512-BF16, where the CPU has it) rounds the scales to bf16 and sums in bf16:
    # the two agree to bf16 rounding through the six layers, not bit for bit.
    scale = their_logits.abs().max()
    assert (logits - their_logits).abs().max() < 0.05 * scale
    agree = (logits.argmax(-1) == their_logits.argmax(-1)).float().mean().item()
    assert agree >= 0.9, agree


def test_linear8bitlt_runs_on_lowbit_after_patch():
    torch.manual_seed(0)
    dense = torch.nn.Linear(512, 256, dtype=torch.float16)
    x = torch.randn(8, 512, dtype=torch.float16)
    x[:, 7] *= 20  # an outlier column (|x| >= threshold): LLM.int8 keeps it in 16 bits

    def int8_layer():
        layer = bnb.nn.Linear8bitLt(512, 256, has_fp16_weights=False, threshold=6.0)
        layer.load_state_dict(dense.state_dict())
        return layer.to("cpu").eval()  # quantized here, by bnb.functional.int8_vectorwise_quant

    theirs = int8_layer()
    with torch.no_grad():
        their_y = theirs(x)
    integration.patch()
    ours = int8_layer()
    assert torch.equal(ours.weight.CB, theirs.state.CB if theirs.weight.CB is None else theirs.weight.CB)
    with torch.no_grad():
        y = ours(x)
    assert y.dtype == torch.float16 and y.shape == their_y.shape
    # lowbit: bitsandbytes' CUDA LLM.int8 bit for bit; bitsandbytes' CPU backend sums in another order.
    expected = LF.int8_matmul(x, ours.state.CB if ours.weight.CB is None else ours.weight.CB, ours.weight.SCB, 6.0) + dense.bias
    assert torch.equal(y, expected.to(torch.float16))
    torch.testing.assert_close(y.float(), their_y.float(), rtol=2e-2, atol=2e-2)
