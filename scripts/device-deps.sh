#!/usr/bin/env bash
# Assembles what must travel to the lent GPU machine, whose image has nvcc, CMake, ninja, torch and
# transformers but none of lowbit's Debian libraries: their .debs (downloaded here with apt-get, unpacked
# there by scripts/device-check.sh), and optionally bitsandbytes' wheel unpacked into DEST/py.
#   scripts/device-deps.sh [DEST]            default DEST: .deps (ignored; name it in the device call's carry)
#   BNB_WHEEL=1 scripts/device-deps.sh       also bitsandbytes 0.50.2 (its CUDA-13 library only)
#   PY_WHEELS=1 scripts/device-deps.sh       also nanobind and pytest (the Python package's build and tests)
#   LORA_WHEELS=1 scripts/device-deps.sh     also PEFT, accelerate and bitsandbytes with its CPU library (the
#                                            QLoRA proof, scripts/lora-proof.sh, trains on the device's 16 cores)
set -euo pipefail
dest="${1:-.deps}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"
# The -dev packages CMake finds, and the shared libraries they link against (the image lacks them).
packages=(
  nlohmann-json3-dev libfmt-dev libfmt9 libcli11-dev
  libhwy-dev libhwy1 libpcre2-dev libpcre2-8-0 libpcre2-16-0 libpcre2-32-0 libpcre2-posix3
  libgtest-dev libgmock-dev libbenchmark-dev libbenchmark1debian
)
(cd "$dest" && apt-get download "${packages[@]}" >/dev/null)
if [ "${BNB_WHEEL:-0}" = 1 ] || [ "${LORA_WHEELS:-0}" = 1 ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_24_x86_64 -d "$tmp" bitsandbytes==0.50.2 >/dev/null
  rm -rf "$dest/py/bitsandbytes" "$dest"/py/bitsandbytes-*.dist-info && mkdir -p "$dest/py"
  unzip -q "$tmp"/bitsandbytes-*.whl -d "$dest/py"
  # Only the CUDA-13 and CPU libraries travel: the others would push the carry past its 64 MiB.
  find "$dest/py/bitsandbytes" -name 'libbitsandbytes_*' ! -name '*cuda130*' ! -name '*_cpu.so' -delete
  rm -f "$tmp"/*.whl
fi
if [ "${LORA_WHEELS:-0}" = 1 ]; then
  # The image has torch and transformers; PEFT and accelerate are pure Python (psutil: PEFT imports it).
  python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d "$tmp" peft==0.21.2 accelerate==1.15.0 psutil==7.2.2 >/dev/null
  for wheel in "$tmp"/*.whl; do unzip -qo "$wheel" -d "$dest/py"; done
fi
if [ "${PY_WHEELS:-0}" = 1 ]; then
  tmp="$(mktemp -d)"
  python3 -m pip download --no-deps --only-binary=:all: -d "$tmp" \
    nanobind==2.9.2 pytest==8.4.2 pluggy==1.6.0 iniconfig==2.1.0 packaging==25.0 >/dev/null
  mkdir -p "$dest/py"
  for wheel in "$tmp"/*.whl; do unzip -qo "$wheel" -d "$dest/py"; done
  rm -rf "$tmp"
fi
du -sh "$dest"
