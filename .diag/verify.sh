cd "$(dirname "$0")/.."
mkdir -p /tmp/llmint8-debs; for deb in .debs/*.deb; do dpkg -x "$deb" /tmp/llmint8-debs; done
export LLMINT8_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/tmp/llmint8-debs/usr -DLLMINT8_CUDA_ARCHITECTURES=90-real -DLLMINT8_CUTLASS_DIR=/none" PKG_CONFIG_PATH=/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=/tmp/llmint8-debs
export LLMINT8_BUILD_DIR=build-gpu CMAKE_BUILD_PARALLEL_LEVEL=16 LLMINT8_BUILD_TESTS=0
t0=$(date +%s); python3 -m pip install --no-build-isolation --no-deps -q . > $OUT/build.log 2>&1 || { tail -20 $OUT/build.log; exit 1; }; echo "build $(( $(date +%s) - t0 )) s"
cd tests/python
timeout 60 python3 -m pytest -p no:cacheprovider -q --tb=short -k "cuda" test_untrusted.py test_bnb_compat.py test_compile.py 2>&1 | tail -8 | cut -c1-300
