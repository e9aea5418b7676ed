#!/usr/bin/env bash
# Run here (not on the GPU machine, which has no network): downloads the Debian
# packages the build needs that the GPU machine lacks into .debs/ (git-ignored),
# which the device call carries and tests/run_gpu.sh unpacks.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .debs
cd .debs
apt-get download nlohmann-json3-dev libsentencepiece-dev libsentencepiece0
# CUTLASS's headers (the fused Hopper GEMM), as the PyPI wheel; run_gpu.sh installs it without its dependencies.
python3 -m pip download -q --no-deps nvidia-cutlass==4.2.0.0 -d .
