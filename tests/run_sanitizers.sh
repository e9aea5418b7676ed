#!/usr/bin/env bash
# The sanitizer job (CI runs it after tests/run_all.sh): builds the Catch2 suite and the
# libFuzzer targets with AddressSanitizer and UndefinedBehaviorSanitizer (clang, CPU only) in
# build-asan/, runs the suite, then each fuzz target for FUZZ_SECONDS seconds (default 120) from
# seeds made out of the shared models. Fails on a failing test, a sanitizer report, a crash, a
# hang (10 s per input), a leak, or an error message that does not name its file.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install_deps.sh --sanitizers

build=build-asan
models="${LLMINT8_MODELS:-../shared/models}"
seconds="${FUZZ_SECONDS:-120}"
targets=(fuzz_llama2c_checkpoint fuzz_llama2c_tokenizer fuzz_safetensors fuzz_shard_index fuzz_hf_config)

echo "== sanitized build (clang, ASan + UBSan, CPU only, build folder: $build/)"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DLLMINT8_ENABLE_CUDA=OFF -DLLMINT8_BUILD_PYTHON=OFF -DLLMINT8_BUILD_TESTS=ON -DLLMINT8_SANITIZE=ON \
  -DPython3_EXECUTABLE="$(command -v python3)"
cmake --build "$build"

# An impossible allocation must reach the code as a failure (the suite checks that it becomes an
# error) rather than stop the process inside the sanitizer.
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"

echo "== Catch2 suite under ASan + UBSan"
ctest --test-dir "$build" --output-on-failure

echo "== fuzz targets, ${seconds} s each (seeds from $models)"
corpus="$build/fuzz-corpus"
findings="$build/fuzz-findings"
rm -rf "$corpus" "$findings"
python3 tests/fuzz/make_seeds.py "$models" "$corpus"
for target in "${targets[@]}"; do
  mkdir -p "$findings/$target"
  log="$findings/$target.log"
  if ! "$build/tests/fuzz/$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 \
      -print_final_stats=1 -artifact_prefix="$findings/$target/" "$corpus/$target" >"$log" 2>&1; then
    tail -n 80 "$log"
    echo "== $target found a problem: the input is in $findings/$target/ (see tests/fuzz/README.md)"
    exit 1
  fi
  echo "$target: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') inputs, $(grep -E '^#[0-9]+.*DONE' "$log" | grep -oE 'cov: [0-9]+' || true)"
done
echo "== sanitizer job passed"
