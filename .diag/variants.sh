cd "$(dirname "$0")/.."
mkdir -p /tmp/llmint8-debs; for deb in .debs/*.deb; do dpkg -x "$deb" /tmp/llmint8-debs; done
python3 -m pip install -q --no-deps .debs/nvidia_cutlass-*.whl
export LLMINT8_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/tmp/llmint8-debs/usr" PKG_CONFIG_PATH=/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=/tmp/llmint8-debs
export LLMINT8_BUILD_DIR=build-gpu CMAKE_BUILD_PARALLEL_LEVEL=16
cat > /tmp/t.py <<'PY'
import torch, llmint8
try:
    torch.ops.llmint8.int8_vectorwise_quant(torch.zeros(2, 3, dtype=torch.int8))
except Exception as e:
    print("OK raised", type(e).__name__)
PY
cp CMakeLists.txt /tmp/CMakeLists.A.txt
for v in A C B; do
  cp /tmp/CMakeLists.A.txt CMakeLists.txt; [ $v = A ] || cp .diag/CMakeLists.$v.txt CMakeLists.txt
  echo "=== variant $v"
  python3 -m pip install --no-build-isolation --no-deps -q . > $OUT/build_$v.log 2>&1 || { tail -20 $OUT/build_$v.log; continue; }
  so=$(python3 -c "import llmint8,os;print(os.path.dirname(llmint8.__file__))" 2>&1)
  readelf -d $so/lib/libllmint8.so | grep NEEDED | sed 's/.*\[\(.*\)\]/\1/' | tr '\n' ' '; echo
  python3 /tmp/t.py 2>&1 | tail -2
  LD_DEBUG=bindings python3 /tmp/t.py 2>&1 | grep -E "_ZdlPvm|__cxa_free_exception|_ZdlPv'" | grep -E "llmint8|_C\.cpython" | head -6
done
cp /tmp/CMakeLists.A.txt CMakeLists.txt
