#!/usr/bin/env python3
"""Writes a GGUF file with gguf-py's GGUFWriter, for lowbit's reader to check."""
import sys

import gguf
import numpy as np

w = gguf.GGUFWriter(sys.argv[1], arch="llama")
w.add_uint32("llama.block_count", 2)
w.add_float32("llama.rope.freq_base", 10000.0)
w.add_string("general.name", "gguf-py fixture ✓")
w.add_bool("test.flag", True)
w.add_int64("test.i64", -5)
w.add_float64("test.f64", 0.1)
w.add_array("test.strings", ["a", "", "ü"])
w.add_array("test.ints", [1, 2, 3])
w.add_tensor("a.weight", np.arange(64, dtype=np.float32).reshape(4, 16))
w.add_tensor("b.weight", np.arange(96, dtype=np.float16).reshape(3, 32))
raw = np.arange(2 * 34, dtype=np.uint8).reshape(2, 34)  # two q8_0 blocks as raw bytes
w.add_tensor("c.weight", raw, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
