#!/usr/bin/env python3
"""Reference token ids from llama.cpp for lowbit's tokenizer tests (tests/model/tokenizer_test.cpp).

Made with llama-cpp-python 0.3.36 (its bundled llama.cpp: libllama 0.5.0, ggml 0.25.3), CPU build:
    /tmp/llvenv/bin/python tests/interop/make_tokenizer_fixtures.py [--default-model PATH]

For each model it tokenizes a varied sample (English, punctuation, long numbers, whitespace runs,
CRLF, tabs, accents, CJK, emoji, special-token text, the empty string, and lines of the shared
TinyStories and WikiText-2 files) with `Llama(path, vocab_only=True).tokenize(text, add_bos, special)`
and writes tests/data/tokenizer/<name>.json: {"source", "model", "cases": [{text, add_special,
parse_special, ids, and for short texts detokenized: llama_detokenize's text of ids for
(remove_special, unparse_special) = FF, FT, TF, TT}]}. llama-cpp-python's add_bos is llama.cpp's add_special: BOS is added only when
the vocabulary asks for it (tokenizer.ggml.add_bos_token).

The llama-bpe, qwen2 and gpt-2 pre-tokenizers have no small real model here, so the script also
writes vocab-only copies of the default model (SmolLM2's vocabulary and merges) whose
tokenizer.ggml.pre names those pre-tokenizers; the tests rebuild the same variants from the default
model's metadata.
"""
import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile

import gguf
import llama_cpp
from llama_cpp import Llama

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
OUT_DIR = os.path.join(ROOT, "tests", "data", "tokenizer")
SOURCE = "llama-cpp-python 0.3.36 (llama.cpp libllama 0.5.0), Llama(vocab_only=True).tokenize"

HANDWRITTEN = [
    "",
    " ",
    "  ",
    "Hello world",
    " Hello world",
    "Hello, world! How's it going? I'm fine; we'll see... they've, you'd, she's.",
    "DON'T SHOUT: IT'S LOUD, WE'RE HERE",
    "The year 2024 had 366 days; 1234567890 and 3.14159265358979 and -42 and 1,000,000.",
    "phone: +1 (555) 012-3456, ids #00017 and 0x7fff",
    "multiple   spaces    here     and\ttabs\t\tand\t \t mixed",
    "trailing spaces   ",
    "   leading spaces",
    "line one\nline two\n\nline four\n\n\n",
    "windows\r\nline\r\nends\r\n\r\n",
    "\n",
    "\r\n",
    "\t",
    " \n \n  x",
    "naïve café, résumé, Zürich, São Paulo, Ærøskøbing, déjà vu",
    "Ελληνικά και Русский текст и العربية",
    "日本語のテキストと中文文本，还有한국어。",
    "emoji: 😀👍🏽 🇫🇷 👨‍👩‍👧 ❤️ ✨",
    "math: ∑ x² ≤ ∞, ½ + ¼ = ¾, Ⅻ, ٣٤٥, ①②",
    "quotes “curly” ‘single’ — dash – en… ellipsis «guillemets»",
    "code: def f(x):\n    return x ** 2  # square\n",
    "<html><body class=\"a\">&amp; &lt;</body></html>",
    "URL https://example.com/path?q=1&r=two#frag",
    "non\u00a0breaking\u2003em\u3000ideographic\u2028sep\u0085nel",
    "zero\u200bwidth\u200djoiner\ufeffbom",
    "<|im_start|>user\nHello!<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "text<|endoftext|>more text",
    "<s> hello </s> <unk>",
    "<s>",
    "a<s>b",
    "<0x41> literally",
    "Ġ and ▁ and Ċ characters",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::",
    "x" * 3 + " " * 7 + "y",
    "'s 're 've 'm 'll 'd 'S 'RE 'Ve",
    "it's 12:30pm on 2024-01-01T00:00:00Z",
]


def shared_lines(name, count, keep_crlf):
    with open(os.path.join(SHARED, "data", name), "rb") as f:
        data = f.read().decode("utf-8")
    lines = data.split("\r\n" if keep_crlf else "\n")
    picked = [l for l in lines if l.strip()][:count]
    if keep_crlf:
        picked = [l + "\r\n" for l in picked]
    # one larger block too: a run of whole lines (with the separators the file has)
    block = data[:2500]
    return picked, block


def texts():
    stories, stories_block = shared_lines("tinystories_valid_first1000.txt", 15, False)
    wiki, wiki_block = shared_lines("wikitext2_test_hf_nonempty_crlf.raw", 15, True)
    return HANDWRITTEN + stories + wiki + [stories_block, wiki_block]


def modes(text):
    # add_special on for every text, off for the short ones; special-token parsing where it can matter.
    yield True, False
    if "<" in text:
        yield True, True
    if len(text) < 200:
        yield False, False


def detokenize_all(llm, ids):
    """llama_detokenize (the C function; Llama.detokenize differs) for (remove_special, unparse_special)
    = (F, F), (F, T), (T, F), (T, T)."""
    vocab = llama_cpp.llama_model_get_vocab(llm._model.model)
    tokens = (llama_cpp.llama_token * max(1, len(ids)))(*ids)
    out = []
    for remove_special in (False, True):
        for unparse_special in (False, True):
            buf = ctypes.create_string_buffer(1 << 16)
            n = llama_cpp.llama_detokenize(vocab, tokens, len(ids), buf, len(buf), remove_special, unparse_special)
            out.append(buf.raw[:n].decode("utf-8", errors="surrogateescape"))
    return out


def make_fixture(name, path):
    llm = Llama(path, vocab_only=True, verbose=False)
    cases = []
    for text in texts():
        for add_special, parse_special in modes(text):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=add_special, special=parse_special)
            case = {"text": text, "add_special": add_special, "parse_special": parse_special, "ids": ids}
            if len(text) < 200:
                case["detokenized"] = detokenize_all(llm, ids)
            cases.append(case)
    fixture = {"source": SOURCE, "model": os.path.basename(path), "cases": cases}
    os.makedirs(OUT_DIR, exist_ok=True)
    out = os.path.join(OUT_DIR, name + ".json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(fixture, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"{out}: {len(cases)} cases, {os.path.getsize(out)} bytes")


def copy_vocab_with_pre(src_path, dst_path, pre):
    """A tensor-less GGUF with src's metadata, tokenizer.ggml.pre replaced."""
    reader = gguf.GGUFReader(src_path)
    arch = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(dst_path, arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = pre if key == "tokenizer.ggml.pre" else field.contents()
        vtype = field.types[0]
        sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.close()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--default-model", help="SmolLM2-135M-Instruct GGUF (default: scripts/fetch-default-model.sh)")
    args = parser.parse_args()
    default_model = args.default_model or subprocess.check_output(
        [os.path.join(ROOT, "scripts", "fetch-default-model.sh")], text=True).strip().splitlines()[-1]

    make_fixture("stories260K", os.path.join(SHARED, "data", "stories260K.gguf"))
    make_fixture("lowbit-bytes-12M", os.path.join(SHARED, "data", "lowbit-bytes-12M-bf16.gguf"))
    make_fixture("tiny-llama-f32", os.path.join(SHARED, "golden", "ggml", "model", "tiny-llama-f32.gguf"))
    make_fixture("smollm2-135m", default_model)
    with tempfile.TemporaryDirectory() as tmp:
        for pre in ["llama-bpe", "qwen2", "gpt-2"]:
            variant = os.path.join(tmp, f"smollm2-vocab-{pre}.gguf")
            copy_vocab_with_pre(default_model, variant, pre)
            make_fixture(f"smollm2-vocab-{pre}", variant)


if __name__ == "__main__":
    sys.exit(main())
