#!/usr/bin/env python3
"""A tokenizer lowbit exported (tokenizer.json + tokenizer_config.json) loaded by transformers'
AutoTokenizer, encoding every case of a fixture of tests/data/tokenizer (llama.cpp's ids).

usage: hf_tokenizer_check.py HF_DIR FIXTURE.json
Prints JSON: {"class", "cases", "identical", "mismatches": [{text, add_special, parse_special, hf, llama_cpp}]}.
parse_special=false is llama.cpp's "special tokens are text": transformers' split_special_tokens=True.
"""
import json
import sys

from transformers import AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(sys.argv[1])
with open(sys.argv[2], encoding="utf-8") as f:
    fixture = json.load(f)

mismatches, identical = [], 0
for case in fixture["cases"]:
    ids = tokenizer(case["text"], add_special_tokens=case["add_special"],
                    split_special_tokens=not case["parse_special"])["input_ids"]
    if ids == case["ids"]:
        identical += 1
    else:
        mismatches.append({"text": case["text"], "add_special": case["add_special"],
                           "parse_special": case["parse_special"], "hf": ids, "llama_cpp": case["ids"]})
print(json.dumps({"class": type(tokenizer).__name__, "cases": len(fixture["cases"]),
                  "identical": identical, "mismatches": mismatches}))
