# diagnostic (not committed): why does the first thrown op error abort Python on the GPU machine?
cd "$(dirname "$0")/.."
mkdir -p /tmp/llmint8-debs; for deb in .debs/*.deb; do dpkg -x "$deb" /tmp/llmint8-debs; done
python3 -m pip install -q --no-deps .debs/nvidia_cutlass-*.whl
export LLMINT8_CMAKE_ARGS="-DCMAKE_PREFIX_PATH=/tmp/llmint8-debs/usr" PKG_CONFIG_PATH=/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu/pkgconfig PKG_CONFIG_SYSROOT_DIR=/tmp/llmint8-debs
export LLMINT8_BUILD_DIR=build-gpu CMAKE_BUILD_PARALLEL_LEVEL=16
python3 -m pip install --no-build-isolation --no-deps -q . > $OUT/build.log 2>&1 || { tail -30 $OUT/build.log; exit 1; }
cat > /tmp/t.py <<'PY'
import sys, torch, llmint8
maps = open("/proc/self/maps").read()
libs = sorted({l.split()[-1] for l in maps.splitlines() if ".so" in l})
print("\n".join(x for x in libs if "site-packages/nvidia" not in x))
try:
    torch.ops.llmint8.int8_vectorwise_quant(torch.zeros(2, 3, dtype=torch.int8))
except Exception as e:
    print("OK raised", type(e).__name__, str(e)[:80])
PY
echo "== plain"; python3 /tmp/t.py 2>&1 | tail -40
echo "== LD_LIBRARY_PATH=debs"; LD_LIBRARY_PATH=/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu python3 /tmp/t.py 2>&1 | tail -3
echo "== torch error alone"; python3 -c "
import torch
try: torch.zeros(2).view(3)
except Exception as e: print('torch raises ok')
import llmint8
try: torch.zeros(2).view(3)
except Exception as e: print('torch raises ok after llmint8')
" 2>&1 | tail -3
so=$(python3 -c "import llmint8,os;print(os.path.dirname(llmint8.__file__))")
ls $so $so/lib; readelf -d $so/lib/libllmint8.so | grep -E "NEEDED|RUNPATH"; readelf -d $so/_C*.so | grep -E "NEEDED|RUNPATH"
for f in $so/lib/*.so $so/_C*.so; do echo $f; nm -D --defined-only $f | grep -i " FLAGS_\| _ZN.*FLAGS" | head; done
which gdb && gdb -batch -ex run -ex bt --args python3 /tmp/t.py 2>&1 | tail -40
gcc --version | head -1; ldd --version | head -1
