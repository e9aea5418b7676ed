#!/usr/bin/env bash
# Installs llmint8 as a new user does and uses it from C++ and the command line (issue 14):
#  1. pip's isolated build (a temporary environment holding pyproject.toml's build requirements,
#     torch==2.11.0 from PyPI, deleted afterwards), installed into a fresh venv that sees the
#     system's torch: llmint8 in the venv, torch outside it;
#  2. the exported CMake package names no path of that temporary environment, and
#     tests/cpp/consumer configures (given llmint8's prefix only: Torch is found through the
#     venv's Python), builds and runs against the install;
#  3. llmint8-generate runs through its console script from the venv, a pip --target and a pip
#     --prefix install of the same wheel.
# The build is CPU only, as on a machine without a CUDA toolkit: this checks the install; the
# CUDA sources are compiled by tests/run_all.sh. Needs network access to PyPI and ../shared/models.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
models=$root/../shared/models/aidreams260K
work=$(mktemp -d /tmp/llmint8_install_XXXXXX)
trap 'rm -rf "$work"' EXIT
step() { echo "== $1 ($((SECONDS - start)) s)"; }
start=$SECONDS

step "a fresh venv seeing the system's torch; pip's isolated build of a wheel (CPU only)"
python3 -m venv --system-site-packages "$work/venv"
py=$work/venv/bin/python
# `pip install .` is this build followed by the install of its wheel; the wheel is kept for --target and --prefix.
LLMINT8_BUILD_DIR="$work/build" LLMINT8_CMAKE_ARGS="-DLLMINT8_ENABLE_CUDA=OFF" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
  "$py" -m pip wheel -q --no-deps -w "$work/wheels" .
wheel=$(ls "$work"/wheels/llmint8-*.whl)
# --ignore-installed: a llmint8 of the same version in the system's site-packages is no reason to skip.
"$py" -m pip install -q --no-deps --ignore-installed "$wheel"
site=$("$py" -c 'import llmint8, os; print(os.path.dirname(llmint8.__file__))')
torch_dir=$("$py" -c 'import torch, os; print(os.path.dirname(torch.__file__))')
case "$site" in "$work"/venv/*) ;; *) echo "llmint8 imports from $site, not from the venv"; exit 1;; esac
case "$torch_dir" in "$work"/*) echo "torch was installed into the venv: the layout under test needs it outside"; exit 1;; esac

step "the exported CMake package names Torch's targets, no path of the build environment"
if grep -n "pip-build-env\|INTERFACE_LINK_LIBRARIES.*/" "$site"/share/cmake/llmint8/llmint8Targets*.cmake; then
  echo "llmint8Targets.cmake holds paths of the build (above)"
  exit 1
fi

step "tests/cpp/consumer against the install"
{ cmake -S tests/cpp/consumer -B "$work/consumer" -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$py" \
    -DCMAKE_PREFIX_PATH="$("$py" -c 'import llmint8; print(llmint8.cmake_prefix_path)')" &&
  cmake --build "$work/consumer" --parallel "$(nproc)"; } > "$work/consumer.log" 2>&1 || { cat "$work/consumer.log"; exit 1; }
"$work/consumer/consumer"
"$work/consumer/consumer_models" "$work/model.safetensors"

generate() {  # the console script at $1, with the environment that follows
  "$@" -m "$models/aidreams260K.bin" -z "$models/tok512.bin" -p "Once upon a time" -n 12 -t 0 --json > "$work/out.json"
  "$py" -c 'import json, sys; out = json.load(open(sys.argv[1])); assert len(out["generated_tokens"]) > 0, out' "$work/out.json"
}
step "llmint8-generate from the venv"
generate "$work/venv/bin/llmint8-generate"
step "llmint8-generate from pip install --target"
"$py" -m pip install -q --no-deps --ignore-installed --target "$work/target" "$wheel"
PYTHONPATH="$work/target" generate "$work/target/bin/llmint8-generate"
step "llmint8-generate from pip install --prefix"
"$py" -m pip install -q --no-deps --ignore-installed --prefix "$work/prefix" "$wheel"
prefix_site=$(ls -d "$work"/prefix/lib/python3*/site-packages)
PYTHONPATH="$prefix_site" generate "$work/prefix/bin/llmint8-generate"
step "installs: all passed"
