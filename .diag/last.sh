cd "$(dirname "$0")/.."
mkdir -p /tmp/llmint8-debs; for deb in .debs/*.deb; do dpkg -x "$deb" /tmp/llmint8-debs; done
python3 -m pip install -q --no-deps .debs/nvidia_cutlass-*.whl
export LLMINT8_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/tmp/llmint8-debs/usr -DLLMINT8_CUDA_ARCHITECTURES=90-real" PKG_CONFIG_PATH=/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=/tmp/llmint8-debs
export LLMINT8_BUILD_DIR=build-gpu CMAKE_BUILD_PARALLEL_LEVEL=16 LLMINT8_BUILD_TESTS=0
python3 -m pip install --no-build-isolation --no-deps -q . > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }
cd tests/python
CUDA_LAUNCH_BLOCKING=1 timeout 40 python3 -m pytest -p no:cacheprovider -x --tb=long -k "cuda" test_untrusted.py > $OUT/untrusted.log 2>&1
timeout 60 python3 -m pytest -p no:cacheprovider --tb=long -k "test_compile_layer_op_fullgraph and cuda or test_matmul_with_frozen_codes and cuda" test_compile.py test_bnb_compat.py > $OUT/fail2.log 2>&1
grep -E "Error|error|assert|passed|failed" $OUT/untrusted.log $OUT/fail2.log | head -30
