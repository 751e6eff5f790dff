#!/usr/bin/env bash
# Installs what lowbit builds and tests with, all from Debian's packages. Safe to run again.
set -euo pipefail
packages=(
  cmake ninja-build g++ pkg-config ccache     # build (ccache: the wheel build reuses the tests' build)
  nlohmann-json3-dev libfmt-dev libcli11-dev  # JSON, formatting, command line
  libhwy-dev libpcre2-dev                     # SIMD with run-time dispatch, Unicode regexes
  libgtest-dev libgmock-dev libbenchmark-dev  # tests and benchmarks
  clang libclang-rt-14-dev                    # libFuzzer, ASan, UBSan
  python3 python3-dev python3-pip python3-venv unzip ca-certificates  # PyPI: the default model, checkers; the Python package
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
