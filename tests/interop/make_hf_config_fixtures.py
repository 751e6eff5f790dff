#!/usr/bin/env python3
"""Writes tests/data/hf_config/<name>.json: what llama.cpp's convert_hf_to_gguf.py writes for each
small checkpoint of hf_checkpoints.py (metadata keys, types and values; tensor names, types and
shapes; rope_freqs.weight's values and checksum). tests/pipeline/hf_config_parity_test.cpp converts
the same checkpoints with lowbit and compares. CI cannot reach llama.cpp's repository, so its
converter runs here, outside the repository, and only these summaries are committed.

usage: make_hf_config_fixtures.py LLAMA_CPP_DIR SMOLLM2.gguf [NAME...]
  LLAMA_CPP_DIR: a llama.cpp source tree (convert_hf_to_gguf.py, conversion/, gguf-py/)
  SMOLLM2.gguf:  the default model ($LOWBIT_DEFAULT_MODEL), whose tokenizer the checkpoints carry
  NAME:          only these checkpoints (default: all of hf_checkpoints.CONFIGS but the -short ones)
  LLAMA_CPP_COMMIT (environment): the tree's commit, recorded in each fixture.
Run with a Python that has torch, transformers, numpy, safetensors and sentencepiece.
The committed fixtures: llama.cpp 0c1e57098bba43ac29e6e3b677cdceebdd22334f (the tree llama-cpp-python
0.3.36's source distribution vendors), transformers 5.23.0, torch 2.15.0.
"""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gguf_summary import summary  # noqa: E402
from hf_checkpoints import CONFIGS, write_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

# The checkpoints carry SmolLM2's tokenizer rebuilt from its GGUF; the converter recognises a
# pre-tokenizer by hashing what it encodes, and for the Qwen classes (which go through that check) the
# rebuilt copy's hash is not in its table. It is SmolLM2's pre-tokenizer, so the run says so when the
# check fails; every other part of the conversion is the converter's own.
RUN_CONVERTER = """
import runpy, sys
from pathlib import Path
converter = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, str(Path(converter).parent))
from conversion import base
recognise = base.TextModel.get_vocab_base_pre
def get_vocab_base_pre(self, tokenizer):
    try:
        return recognise(self, tokenizer)
    except NotImplementedError:
        return "smollm"
base.TextModel.get_vocab_base_pre = get_vocab_base_pre
runpy.run_path(converter, run_name="__main__")
"""
OUT = ROOT / "tests" / "data" / "hf_config"


def main(llama_cpp, smollm2_gguf, only=()):
    OUT.mkdir(parents=True, exist_ok=True)
    version = "llama.cpp " + os.environ.get("LLAMA_CPP_COMMIT", "at an unrecorded commit")
    for name in CONFIGS:
        if name.endswith("-short") or (only and name not in only):
            continue  # eval-only checkpoints, or not asked for
        with tempfile.TemporaryDirectory() as tmp:
            model, gguf_path = Path(tmp) / name, Path(tmp) / "out.gguf"
            write_checkpoint(name, model, smollm2_gguf)
            command = [sys.executable, "-c", RUN_CONVERTER, str(Path(llama_cpp) / "convert_hf_to_gguf.py"), str(model), "--outtype", "f32", "--outfile", str(gguf_path)]
            subprocess.run(command, check=True, capture_output=True)
            result = {
                "source": {
                    "made_by": "tests/interop/make_hf_config_fixtures.py",
                    "converter": f"convert_hf_to_gguf.py CHECKPOINT --outtype f32 --outfile OUT.gguf ({version}; an unrecognised pre-tokenizer hash read as smollm)",
                    "checkpoint": f"tests/interop/hf_checkpoints.py {name} CHECKPOINT SmolLM2-135M-Instruct.Q4_1.gguf",
                },
                "summary": summary(str(gguf_path)),
            }
        with open(OUT / f"{name}.json", "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1, sort_keys=True)
            f.write("\n")
        print(f"wrote {OUT / (name + '.json')}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
