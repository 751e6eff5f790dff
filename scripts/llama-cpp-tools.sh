#!/usr/bin/env bash
# llama.cpp's own tools (llama-quantize, llama-perplexity, llama-imatrix), the independent checkers of
# what lowbit writes: built from the llama.cpp tree that llama-cpp-python 0.3.36's source distribution
# vendors (PyPI is what CI can reach), outside lowbit's build, into build/llama.cpp. Prints the
# directory of the binaries. Built once; about 10 minutes on 2 cores.
# AVX-512/AMX are left out: llama.cpp's AMX path crashed on the 2-core VM these run on.
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.3.36
root=build/llama.cpp
bin="$root/build/bin"
if [ -x "$bin/llama-quantize" ] && [ -x "$bin/llama-perplexity" ] && [ -x "$bin/llama-imatrix" ]; then
  echo "$PWD/$bin"
  exit 0
fi
mkdir -p "$root"
if [ ! -f "$root/llama_cpp_python-$version.tar.gz" ]; then
  # The source distribution from PyPI's simple index, checked against the sha256 it lists (pip download
  # would also build the package's metadata, which takes minutes).
  python3 - "llama_cpp_python-$version.tar.gz" "$root" >&2 <<'PY'
import hashlib, json, os, sys, urllib.request
name, root = sys.argv[1], sys.argv[2]
index = urllib.request.Request("https://pypi.org/simple/llama-cpp-python/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
entry = next(f for f in json.load(urllib.request.urlopen(index))["files"] if f["filename"] == name)
data = urllib.request.urlopen(entry["url"]).read()
if hashlib.sha256(data).hexdigest() != entry["hashes"]["sha256"]:
    sys.exit(f"{name}: sha256 differs from PyPI's")
with open(f"{root}/{name}.part", "wb") as f:
    f.write(data)
os.replace(f"{root}/{name}.part", f"{root}/{name}")
PY
fi
if [ ! -f "$root/src/CMakeLists.txt" ]; then
  rm -rf "$root/src"
  mkdir -p "$root/src"
  tar -xzf "$root/llama_cpp_python-$version.tar.gz" -C "$root/src" --strip-components=3 "llama_cpp_python-$version/vendor/llama.cpp"
fi
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
cmake -S "$root/src" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF "${launcher[@]}" \
  -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF \
  -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
cmake --build "$root/build" -j "$(nproc)" --target llama-quantize llama-perplexity llama-imatrix >&2
echo "$PWD/$bin"
