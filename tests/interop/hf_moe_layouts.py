#!/usr/bin/env python3
"""A small mixture-of-experts checkpoint as transformers saves it, in both of its layouts, and as
llama.cpp's convert_hf_to_gguf.py converts it (the checker of lowbit's HF -> GGUF conversion,
tests/pipeline/hf_moe_parity_test.cpp).

transformers 5 loads SOURCE (which must hold exactly the tensors its model class has: no key missing,
unexpected or of another shape), then saves it twice: OUT/per-expert as save_pretrained does by default
(one tensor per expert and projection, the names on the Hugging Face hub) and OUT/fused with
save_original_format=False (each layer's experts in two 3-D tensors, mlp.experts.gate_up_proj and
mlp.experts.down_proj), with SOURCE's tokenizer files beside each. Then the converter, run in this
process from LLAMA_CPP_SRC with its own gguf-py, writes OUT/<layout>.llama-cpp.gguf in bf16 for each
layout it can read.

usage: hf_moe_layouts.py SOURCE OUT LLAMA_CPP_SRC
Prints one JSON line: per layout, its tensors (name -> shape) and whether the converter read it (or why not).
"""
import json
import shutil
import sys
import types
from pathlib import Path


def tensor_shapes(directory):
    from safetensors import safe_open
    with safe_open(str(directory / "model.safetensors"), "pt") as f:
        return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}


def main(source, out, llama_cpp):
    # The converter's gguf-py before any other: it knows the newest architectures' keys.
    sys.path[:0] = [str(llama_cpp / "gguf-py"), str(llama_cpp)]
    import torch
    import transformers

    model, info = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.bfloat16, output_loading_info=True)
    problems = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if problems:
        sys.exit(f"{source} is not what {type(model).__name__} holds: {problems}")

    # LlamaModel.set_vocab (Mixtral's) imports sentencepiece before it looks for tokenizer.model, which these
    # checkpoints do not have: a stand-in lets it go on to tokenizer.json when sentencepiece is not installed.
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        sys.modules["sentencepiece"] = types.SimpleNamespace(SentencePieceProcessor=None)
    import convert_hf_to_gguf

    result = {"class": type(model).__name__, "transformers": transformers.__version__, "layouts": {}}
    for layout, original in (("per-expert", True), ("fused", False)):
        directory = out / layout
        model.save_pretrained(directory, save_original_format=original)
        for tokenizer_file in source.glob("tokenizer*.json"):
            shutil.copy(tokenizer_file, directory)
        entry = {"tensors": tensor_shapes(directory)}
        sys.argv = ["convert_hf_to_gguf.py", str(directory), "--outtype", "bf16", "--outfile", str(out / f"{layout}.llama-cpp.gguf")]
        try:
            convert_hf_to_gguf.main()
            entry["converted"] = True
        except (ValueError, NotImplementedError) as e:  # e.g. "Can not map tensor ..." for a layout it does not read
            entry["converted"] = False
            entry["refusal"] = str(e)
        result["layouts"][layout] = entry
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
