"""lowbit.quantize / dequantize / plan / eval / imatrix against the `lowbit` command itself: the same
--json document (run times aside) and the same output bytes, on the small real models in ../shared."""
import filecmp
import json
import subprocess

import pytest

import lowbit

GPL = "/usr/share/common-licenses/GPL-3"  # Debian's, as the C++ tests score it


def without_seconds(doc):
    """The document with its run times dropped: the one thing two runs may not share."""
    if isinstance(doc, dict):
        return {k: without_seconds(v) for k, v in doc.items() if k != "seconds"}
    if isinstance(doc, list):
        return [without_seconds(v) for v in doc]
    return doc


def run_cli(cli, *args):
    out = subprocess.run([str(cli), *map(str, args), "--quiet", "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="module")
def bytes12m(shared):
    return shared / "data" / "lowbit-bytes-12M-bf16.gguf"


def test_quantize_gguf_equals_the_cli(cli, bytes12m, tmp_path):
    ours = lowbit.quantize(bytes12m, tmp_path / "py.gguf", "q4_K", tensor_types={"*attn_v*": "q6_K"}, progress=False)
    theirs = run_cli(cli, "quantize", bytes12m, "-o", tmp_path / "cli.gguf", "--format", "q4_K", "--tensor-type", "*attn_v*=q6_K")
    assert ours["output"] == str(tmp_path / "py.gguf")
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert {t["format"] for t in ours["tensors"]} >= {"q4_K", "q6_K"}
    assert filecmp.cmp(tmp_path / "py.gguf", tmp_path / "cli.gguf", shallow=False)


def test_bitsandbytes_round_trip_equals_the_cli(cli, shared, tmp_path):
    # stories260K as plain safetensors (GGUF -> safetensors), then nf4 with double quant, then back.
    plain = tmp_path / "plain.safetensors"
    lowbit.dequantize(shared / "data" / "stories260K.gguf", plain, "f16", progress=False)
    ours = lowbit.quantize(plain, tmp_path / "py.safetensors", "nf4", blocksize=128, double_quant=True, progress=False)
    theirs = run_cli(cli, "quantize", plain, "-o", tmp_path / "cli.safetensors", "--format", "nf4", "--blocksize", 128, "--double-quant")
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert ours["quantized"] > 0
    assert filecmp.cmp(tmp_path / "py.safetensors", tmp_path / "cli.safetensors", shallow=False)

    ours = lowbit.dequantize(tmp_path / "py.safetensors", tmp_path / "py-back.safetensors", progress=False)
    theirs = run_cli(cli, "dequantize", tmp_path / "cli.safetensors", "-o", tmp_path / "cli-back.safetensors")
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert filecmp.cmp(tmp_path / "py-back.safetensors", tmp_path / "cli-back.safetensors", shallow=False)


def test_eval_equals_the_cli(cli, bytes12m, tmp_path):
    lowbit.quantize(bytes12m, tmp_path / "q.gguf", "q3_K", progress=False)
    ours = lowbit.eval(tmp_path / "q.gguf", GPL, chunks=2, base=bytes12m, device="cpu", progress=False)
    theirs = run_cli(cli, "eval", tmp_path / "q.gguf", "--text", GPL, "--chunks", 2, "--base", bytes12m, "--device", "cpu")
    assert ours == theirs  # no run time in eval's document: every number equal
    assert ours["kld"]["mean"] > 0 and ours["chunks"] == 2


def test_imatrix_and_plan_equal_the_cli(cli, bytes12m, tmp_path):
    calls = []
    report = lowbit.imatrix(bytes12m, GPL, tmp_path / "py.imatrix.gguf", chunks=2, device="cpu", progress=lambda *a: calls.append(a))
    assert report == {"output": str(tmp_path / "py.imatrix.gguf"), "weights": 28, "chunks": 2, "ctx": 512}
    assert calls and calls[-1][1] == calls[-1][2]  # the callback saw the job to its end
    subprocess.run([str(cli), "imatrix", bytes12m, "--text", GPL, "-o", tmp_path / "cli.imatrix.gguf", "--chunks", "2", "--device", "cpu",
                    "--quiet"], check=True)
    # The files name the text, not the output: byte for byte the same.
    assert filecmp.cmp(tmp_path / "py.imatrix.gguf", tmp_path / "cli.imatrix.gguf", shallow=False)

    ours = lowbit.plan(bytes12m, 4.0, tmp_path / "py.json", imatrix=tmp_path / "py.imatrix.gguf", progress=False)
    theirs = run_cli(cli, "plan", bytes12m, "--bpw", 4.0, "-o", tmp_path / "cli.json", "--imatrix", tmp_path / "py.imatrix.gguf")
    ours["plan"] = theirs["plan"]
    assert ours == theirs
    assert (tmp_path / "py.svg").exists() and (tmp_path / "py.html").exists()
    assert json.loads((tmp_path / "py.json").read_text()) == json.loads((tmp_path / "cli.json").read_text())

    ours = lowbit.quantize(bytes12m, tmp_path / "planned.gguf", plan=tmp_path / "py.json", progress=False)
    assert abs(ours["total"]["bpw"] - theirs["achieved_bpw"]) < 0.05


def test_gptq_plan_and_quantize_equal_the_cli(cli, shared, tmp_path):
    stories = shared / "data" / "stories260K.gguf"
    text = shared / "data" / "tinystories_valid_first1000.txt"
    collected = lowbit.hessian(stories, text, tmp_path / "h.gguf", ctx=64, chunks=2, progress=False)
    theirs = run_cli(cli, "hessian", stories, "--text", text, "--ctx", 64, "--chunks", 2, "-o", tmp_path / "cli-h.gguf")
    collected["output"] = theirs["output"]
    assert collected == theirs
    assert filecmp.cmp(tmp_path / "h.gguf", tmp_path / "cli-h.gguf", shallow=False)
    ours = lowbit.plan(stories, 6, tmp_path / "py.json", gptq=tmp_path / "h.gguf", progress=False)
    theirs = run_cli(cli, "plan", stories, "--bpw", 6, "-o", tmp_path / "cli.json", "--gptq", tmp_path / "h.gguf")
    ours["plan"] = theirs["plan"]
    assert ours == theirs
    planned = json.loads((tmp_path / "py.json").read_text())
    assert planned == json.loads((tmp_path / "cli.json").read_text())
    assert planned["loss_measure"]["gptq"] == "h.gguf"
    # The plan brings its Hessian: the same bytes as the CLI's, GPTQ-written tensors and all.
    ours = lowbit.quantize(stories, tmp_path / "py.gguf", plan=tmp_path / "py.json", progress=False)
    theirs = run_cli(cli, "quantize", stories, "-o", tmp_path / "cli.gguf", "--plan", tmp_path / "cli.json")
    assert any(t["gptq"] for t in ours["tensors"])
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert filecmp.cmp(tmp_path / "py.gguf", tmp_path / "cli.gguf", shallow=False)


def test_gptq_text_collects_the_hessians_as_the_cli_does(cli, shared, tmp_path):
    stories = shared / "data" / "stories260K.gguf"
    text = shared / "data" / "tinystories_valid_first1000.txt"
    ours = lowbit.quantize(stories, tmp_path / "py.gguf", "q4_0", gptq_text=text, gptq_chunks=2, progress=False)
    theirs = run_cli(cli, "quantize", stories, "-o", tmp_path / "cli.gguf", "--format", "q4_0", "--gptq-text", text, "--gptq-chunks", 2)
    assert any(t["gptq"] for t in ours["tensors"])
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert filecmp.cmp(tmp_path / "py.gguf", tmp_path / "cli.gguf", shallow=False)  # the same label, not a scratch path
    planned = lowbit.plan(stories, 6, tmp_path / "p.json", gptq_text=text, gptq_chunks=2, progress=False)
    assert planned["hessian"].endswith("p.hessian.gguf") and (tmp_path / "p.hessian.gguf").exists()
    assert json.loads((tmp_path / "p.json").read_text())["loss_measure"]["gptq"] == "p.hessian.gguf"


def test_gptq_writes_bitsandbytes_checkpoints_as_the_cli_does(cli, shared, tmp_path):
    stories = shared / "data" / "stories260K.gguf"
    text = shared / "data" / "tinystories_valid_first1000.txt"
    lowbit.hessian(stories, text, tmp_path / "h.gguf", ctx=64, chunks=2, progress=False)
    lowbit.dequantize(stories, tmp_path / "hf", progress=False)  # the weights as a Hugging Face directory
    ours = lowbit.quantize(tmp_path / "hf", tmp_path / "py", "nf4", gptq=tmp_path / "h.gguf", progress=False)
    theirs = run_cli(cli, "quantize", tmp_path / "hf", "-o", tmp_path / "cli", "--format", "nf4", "--gptq", tmp_path / "h.gguf")
    assert ours["gptq"] == 30  # every weight but ffn_down, whose 172 columns hold no whole 64-value blocks
    ours["output"] = theirs["output"]
    assert without_seconds(ours) == without_seconds(theirs)
    assert filecmp.cmp(tmp_path / "py" / "model.safetensors", tmp_path / "cli" / "model.safetensors", shallow=False)


def test_errors_are_lowbit_errors_with_their_place(bytes12m, shared, tmp_path):
    with pytest.raises(lowbit.LowbitError) as e:
        lowbit.quantize(bytes12m, tmp_path / "x.gguf", "q4_K", mix="Q4_K_M")
    assert "exactly one" in str(e.value)
    with pytest.raises(lowbit.LowbitError) as e:
        lowbit.quantize(shared / "data" / "README.md", tmp_path / "x.gguf", "q4_K")
    assert e.value.file.endswith("README.md")
    # an existing output is kept unless force=True
    (tmp_path / "kept.gguf").write_bytes(b"mine")
    with pytest.raises(lowbit.LowbitError) as e:
        lowbit.quantize(bytes12m, tmp_path / "kept.gguf", "q8_0")
    assert e.value.file.endswith("kept.gguf") and (tmp_path / "kept.gguf").read_bytes() == b"mine"
    with pytest.raises(lowbit.LowbitError):
        lowbit.eval(bytes12m, GPL, ctx=1)


def test_an_exception_in_the_progress_callback_stops_nothing_but_is_raised(bytes12m, tmp_path):
    def stop(*_):
        raise KeyError("from the callback")

    with pytest.raises(KeyError, match="from the callback"):
        lowbit.quantize(bytes12m, tmp_path / "q.gguf", "q8_0", progress=stop)
