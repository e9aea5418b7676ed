#!/usr/bin/env bash
# The test command: installs what is missing, builds llmint8 with its Catch2
# suite (CUDA sources compile wherever a CUDA toolkit is found), installs the
# Python package, then runs the Catch2 and pytest suites. Fails when anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install_deps.sh

echo "== build (CMake via setup.py, build folder: build/)"
LLMINT8_BUILD_TESTS=1 python3 -m pip install -q --no-build-isolation --no-deps .

echo "== Catch2 suite"
ctest --test-dir build --output-on-failure

echo "== pytest suite"
export LLMINT8_REQUIRE_CPP_TOOL=1  # the cross-language checkpoint tests must run here
cd tests/python  # import the installed package, not the source folder
python3 -m pytest -q -p no:cacheprovider .
