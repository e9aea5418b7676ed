#!/usr/bin/env bash
# The GPU machine's one call: build against its torch (no network there, so
# nothing is installed), then the steps in order, each logged to $OUT (or
# ./gpu-out), and a short summary. Steps: catch2 (ctest), pytest (on CUDA),
# sanitizers (compute-sanitizer memcheck over the "[cuda]" Catch2 cases,
# racecheck over the kernel paths case), profile and bench (benchmarks/bench_linear.py), e2e
# (benchmarks/bench_e2e.py $E2E_ARGS), guards (benchmarks/bench_guards.py $GUARDS_ARGS), ncu
# (Nsight Compute's counters over the profile step's kernels that match $NCU_KERNEL, $NCU_ARGS its
# options; not in the default steps; benchmarks/ncu_source_regions.py reads its `--page source --csv` output).
#   bash tests/fetch_gpu_deps.sh          (here, once: packages the GPU machine lacks)
#   bash tests/run_gpu.sh                 (there, through the device tool, carrying .debs and .models):
#                                           catch2 pytest sanitizers profile bench
#   STEPS="bench e2e" E2E_ARGS="--layers 8 --batches 1" bash tests/run_gpu.sh   (chosen steps, in this order)
#   PYTEST_ARGS="test_placement.py" BENCH_ARGS="--quick" PROFILE_ARGS="--tokens 1,8" ...   (steps' arguments)
#   STEPS=ncu PROFILE_ARGS="--tokens 1" NCU_KERNEL=gemv_fused ...   (counters: t=0 then t=6 calls, 8 each;
#                                           ncu names the CUTLASS GEMMs device_kernel)
#   STEPS=ab BENCH_ARGS="--graph --quick" ...   (after tests/make_ab_tree.sh REF [REF...] here, carrying .ab
#                                           too: this tree against each REF's, bench_linear.py in turns;
#                                           AB_MORE_ARGS="args;args" compares more argument sets)
#   STEPS=ab_e2e AB_E2E_ARGS="--layers 8 --skip-python" ...   (the same trees, end to end: bench_e2e.py in turns)
#   LLMINT8_ALL_ARCHITECTURES=1 ...       (every release architecture, not only this card's)
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
steps="${STEPS:-catch2 pytest sanitizers profile bench}"
declare -A status

step() {  # step NAME COMMAND...: runs it, logs to $out/NAME.log, records pass/fail
  local name=$1; shift
  echo "== $name"
  if "$@" > "$out/$name.log" 2>&1; then
    status[$name]=pass
    tail -n 5 "$out/$name.log"
  else  # more of a failed step's log: $out keeps 8 files at most, so the log itself may not come back
    status[$name]="FAIL (see $name.log)"
    tail -n 40 "$out/$name.log"
  fi
}

gpu_info=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -n 1)  # $out holds 8 files at most
echo "$gpu_info"
gpu_state() {  # clocks, power and throttling now: a call whose fp16 baseline runs slow shows why here
  local q=pstate,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu
  local reasons=clocks_event_reasons.active  # (asked apart: a driver without the field fails the whole query)
  echo "$(nvidia-smi --query-gpu=$q --format=csv,noheader 2> /dev/null | head -n 1)," \
    "throttle reasons $(nvidia-smi --query-gpu=$reasons --format=csv,noheader 2> /dev/null | head -n 1)"
}
echo "gpu state: $(gpu_state)"
# Packages the GPU machine lacks (nlohmann-json, sentencepiece; the CUTLASS wheel) come in .debs/
# (tests/fetch_gpu_deps.sh, run beforehand where there is a network): unpack them where CMake looks.
if ls .debs/*.deb > /dev/null 2>&1; then
  mkdir -p /tmp/llmint8-debs
  for deb in .debs/*.deb; do dpkg -x "$deb" /tmp/llmint8-debs; done
  export LLMINT8_CMAKE_ARGS="${LLMINT8_CMAKE_ARGS:-} -DCMAKE_PREFIX_PATH=/tmp/llmint8-debs/usr"
  export PKG_CONFIG_PATH="/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu/pkgconfig:${PKG_CONFIG_PATH:-}"
  export PKG_CONFIG_SYSROOT_DIR=/tmp/llmint8-debs  # the .pc files say /usr: look under the unpacked tree
  export LD_LIBRARY_PATH="/tmp/llmint8-debs/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
fi
if ls .debs/nvidia_cutlass-*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-deps .debs/nvidia_cutlass-*.whl
else  # said at once: a call that forgot to carry .debs builds without the Hopper GEMM
  echo "warning: no .debs/nvidia_cutlass-*.whl (carry .debs): the CUTLASS GEMM will not be built"
fi
export LLMINT8_REQUIRE_FUSED_GEMM=1  # on an sm_90 card the tests fail if CUTLASS was not built in
export LLMINT8_BUILD_DIR=build-gpu CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" LLMINT8_BUILD_TESTS=1
# Device time is short: compile for this card only (sm_90: the sm_80 code is never loaded here).
# LLMINT8_ALL_ARCHITECTURES=1 builds the release set instead.
card_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d '. ')
if [ -z "${LLMINT8_ALL_ARCHITECTURES:-}" ] && [ -n "$card_arch" ]; then
  export LLMINT8_CMAKE_ARGS="${LLMINT8_CMAKE_ARGS:-} -DLLMINT8_CUDA_ARCHITECTURES=${card_arch}-real"
fi
# pytest in 4 processes when pytest-xdist is there (a file's tests stay in one process, so its
# module fixtures are built once), each with 4 CPU threads so that the CPU tests do not fight.
pytest_parallel="" pytest_threads=""
if python3 -c "import xdist" 2> /dev/null; then pytest_parallel="-n 4 --dist loadfile" pytest_threads="OMP_NUM_THREADS=4"; fi
# The trees of .ab/ (tests/make_ab_tree.sh: tree, tree2, ...), each built apart into /tmp/llmint8-ab<i>
# (ahead of the installed package on PYTHONPATH), once a call for the ab and ab_e2e steps.
ab_refs=() ab_trees=() ab_built=""
build_ab_trees() {
  [ -z "$ab_built" ] || return 0
  ab_built=1
  mapfile -t ab_refs < <(cut -d' ' -f1 .ab/REF 2> /dev/null)
  ab_trees=()
  for j in "${!ab_refs[@]}"; do
    tree=.ab/tree; [ "$j" = 0 ] || tree=.ab/tree$((j + 1))
    step ab_build env LLMINT8_BUILD_DIR=build-gpu-ab$j LLMINT8_BUILD_TESTS=0 \
      python3 -m pip install -q --no-build-isolation --no-deps --target /tmp/llmint8-ab$j $tree
    [ "${status[ab_build]}" = pass ] || break
    PYTHONPATH=/tmp/llmint8-ab$j python3 -c "import llmint8; assert llmint8.__file__.startswith('/tmp/llmint8-ab$j/')" \
      && ab_trees+=("$j")
  done
}
step build python3 -m pip install --no-build-isolation --no-deps -v .
for name in $steps; do
  [ "${status[build]}" = pass ] || break
  case $name in
    catch2) step catch2 build-gpu/tests/cpp/llmint8_tests ;;  # its summary counts the cases run
    pytest) step pytest bash -c "cd tests/python && env $pytest_threads LLMINT8_REQUIRE_CPP_TOOL=1 python3 -m pytest -q -rsx -p no:cacheprovider $pytest_parallel ${PYTEST_ARGS:-.}" ;;
    sanitizers)  # the CUDA paths suite reaches every kernel and product backend (tests/cpp/test_cuda_paths.cpp);
      # racecheck takes only it ("[cuda_paths]"): over both "[cuda]" cases it had not ended after 5 minutes
      step memcheck compute-sanitizer --tool memcheck --error-exitcode 1 build-gpu/tests/cpp/llmint8_tests "[cuda]"
      step racecheck compute-sanitizer --tool racecheck --error-exitcode 1 build-gpu/tests/cpp/llmint8_tests "[cuda_paths]" ;;
    profile) step profile bash -c "python3 benchmarks/bench_linear.py --profile ${PROFILE_ARGS:-}" ;;
    ncu)  # hardware counters of the kernels the profile step runs (matching NCU_KERNEL), clocks left alone
      step ncu bash -c "ncu --clock-control none --kernel-name regex:'${NCU_KERNEL:-gemv_fused}' ${NCU_ARGS:---launch-count 16 --section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats} python3 benchmarks/bench_linear.py --profile --no-torch-profiler ${PROFILE_ARGS:-}" ;;
    bench) step bench bash -c "python3 benchmarks/bench_linear.py ${BENCH_ARGS:-} --json $out/bench.json" ;;
    e2e) step e2e bash -c "python3 benchmarks/bench_e2e.py ${E2E_ARGS:-} --json $out/e2e.json" ;;
    guards) step guards bash -c "python3 benchmarks/bench_guards.py ${GUARDS_ARGS:-}" ;;
    ab)  # the same bench_linear.py (this tree's) times A (this tree) and every tree of .ab/ in turns,
      # twice, and compares A with each
      build_ab_trees
      # BENCH_ARGS is the first set of bench_linear.py arguments; AB_MORE_ARGS adds more, ';'-separated
      # (e.g. "--graph --shapes 11008x4096 --outlier-columns 1080"), each compared on its own
      # (ab<set>.json, or ab<set>_<tree>.json past the first tree)
      [ ${#ab_trees[@]} -gt 0 ] && step ab bash -c "set -e; mkdir -p /tmp/ab
        refs=(${ab_refs[*]}); trees=(${ab_trees[*]})
        IFS=';' read -ra configs <<< '${BENCH_ARGS:-};${AB_MORE_ARGS:-}'
        i=0
        for args in \"\${configs[@]}\"; do
          [ \$i = 0 ] || [ -n \"\${args// }\" ] || continue
          i=\$((i + 1))
          for round in 1 2; do
            python3 benchmarks/bench_linear.py \$args --json /tmp/ab/a\$i-\$round.json > /dev/null
            for j in \"\${trees[@]}\"; do
              PYTHONPATH=/tmp/llmint8-ab\$j python3 benchmarks/bench_linear.py \$args --json /tmp/ab/b\$j-\$i-\$round.json > /dev/null
            done
          done
          for j in \"\${trees[@]}\"; do
            name=ab\$i; [ \$j = 0 ] || name=ab\${i}_\$((j + 1))
            echo \"== bench_linear.py \$args (B = \${refs[\$j]})\"
            python3 benchmarks/compare_runs.py --a /tmp/ab/a\$i-1.json /tmp/ab/a\$i-2.json \\
              --b /tmp/ab/b\$j-\$i-1.json /tmp/ab/b\$j-\$i-2.json --labels \"this tree,\${refs[\$j]}\" --json $out/\$name.json
          done
        done" ;;
    ab_e2e)  # the trees of the ab step (built once a call), bench_e2e.py $AB_E2E_ARGS in turns, twice each;
      # every run's JSON (load times, peak memory, --cpp-profile's kernel tables) kept in $out/ab_e2e_runs
      build_ab_trees
      [ ${#ab_trees[@]} -gt 0 ] && step ab_e2e bash -c "set -e; mkdir -p $out/ab_e2e_runs
        refs=(${ab_refs[*]}); trees=(${ab_trees[*]})
        for round in 1 2; do
          python3 benchmarks/bench_e2e.py ${AB_E2E_ARGS:-} --json $out/ab_e2e_runs/e2e-a-\$round.json > /dev/null
          for j in \"\${trees[@]}\"; do
            PYTHONPATH=/tmp/llmint8-ab\$j python3 benchmarks/bench_e2e.py ${AB_E2E_ARGS:-} --json $out/ab_e2e_runs/e2e-b\$j-\$round.json > /dev/null
          done
        done
        for j in \"\${trees[@]}\"; do
          name=ab_e2e; [ \$j = 0 ] || name=ab_e2e_\$((j + 1))
          echo \"== bench_e2e.py ${AB_E2E_ARGS:-} (B = \${refs[\$j]})\"
          python3 benchmarks/compare_runs.py --a $out/ab_e2e_runs/e2e-a-1.json $out/ab_e2e_runs/e2e-a-2.json \\
            --b $out/ab_e2e_runs/e2e-b\$j-1.json $out/ab_e2e_runs/e2e-b\$j-2.json --labels \"this tree,\${refs[\$j]}\" --json $out/\$name.json
        done" ;;
    *) echo "unknown step $name"; unknown_step=1 ;;
  esac
done

echo "== summary ($gpu_info; now: $(gpu_state))"
failed=0
[ -z "${unknown_step:-}" ] || failed=1
for name in build catch2 pytest memcheck racecheck profile ncu bench e2e guards ab_build ab ab_e2e; do
  [ -n "${status[$name]:-}" ] || continue
  echo "$name: ${status[$name]}"
  [ "${status[$name]}" = pass ] || failed=1
done
grep -E "passed|failed" "$out/pytest.log" 2>/dev/null | tail -n 1
grep -E "assertions|test cases" "$out/catch2.log" 2>/dev/null | tail -n 1
grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$out/memcheck.log" "$out/racecheck.log" 2>/dev/null
# The device tool brings back 8 files of $out at most: past that, one archive of them all
# (tar -xzf it here), named by time so that a second run in the same call keeps the first's.
mapfile -t outputs < <(find "$out" -maxdepth 1 -type f ! -name '*.tar.gz' -printf '%f\n' | sort)
if [ "${#outputs[@]}" -gt 8 ]; then
  archive="outputs-$(date +%s).tar.gz"
  tar -czf "$out/$archive" -C "$out" "${outputs[@]}" && (cd "$out" && rm -f "${outputs[@]}")
  echo "(${#outputs[@]} output files, more than the 8 that come back: all in $archive)"
fi
exit $failed
