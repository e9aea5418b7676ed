#!/usr/bin/env bash
# Installs what building and testing llmint8 needs on a fresh Debian machine:
# the compilers' helpers and Catch2 from Debian, the pinned Python packages from PyPI
# (with --sanitizers: clang and its runtimes too, for tests/run_sanitizers.sh).
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(cmake ninja-build ccache catch2 g++ nlohmann-json3-dev libsentencepiece-dev pkg-config)
# tests/run_sanitizers.sh also needs clang with its sanitizer and libFuzzer runtimes.
if [ "${1:-}" = "--sanitizers" ]; then
  apt_packages+=(clang libclang-rt-dev)
fi
missing=()
for p in "${apt_packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "llmint8: installing Debian packages: ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -q "${missing[@]}"
fi

python3 -m pip install -q -r tests/requirements.txt
# CUTLASS's C++ headers for the fused Hopper GEMM; the package's Python dependencies are not needed.
python3 -m pip install -q --no-deps nvidia-cutlass==4.2.0.0
