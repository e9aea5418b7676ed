#!/usr/bin/env bash
# The main job: on a fresh machine, install what is missing, build llmint8, then
# run the whole workflow (load a pretrained llama2.c model, swap its Linear
# layers for Linear8bitLt, quantize, tokenize, generate) in float and in 8 bits,
# and show both texts and the memory saved.
#   bash csrc/tools/demo.sh [--model M.bin] [--tokenizer T.bin] [--prompt TEXT] [--device DEV] [-n N]
set -euo pipefail
cd "$(dirname "$0")/../.."
models=../shared/models/aidreams260K
model="$models/aidreams260K.bin" tokenizer="$models/tok512.bin" prompt="Once upon a time" device=cpu steps=80
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model=$2; shift 2 ;;
    --tokenizer) tokenizer=$2; shift 2 ;;
    --prompt) prompt=$2; shift 2 ;;
    --device) device=$2; shift 2 ;;
    -n) steps=$2; shift 2 ;;
    *) echo "demo.sh: unknown option '$1'" >&2; exit 2 ;;
  esac
done

bash tests/install_deps.sh
echo "== building llmint8 (first time: a few minutes)"
python3 -m pip install -q --no-build-isolation --no-deps .
# The console-script launcher, which finds the torch Python imports, run by this Python.
cli=(python3 -c "from llmint8._cli import generate_main; generate_main()")

run() { "${cli[@]}" -m "$model" -z "$tokenizer" -p "$prompt" -n "$steps" -t 0 --device "$device" --json "$@"; }
float_json=$(run --no-int8)
int8_json=$(run --int8 --threshold 6.0)
python3 - "$float_json" "$int8_json" <<'PY'
import json, sys
f, q = (json.loads(a) for a in sys.argv[1:])
for label, r in (("float32", f), ("int8 (LLM.int8(), threshold 6)", q)):
    print(f"\n== {label}: {r['layers_quantized']} layers quantized")
    print(r["prompt"] + r["text"])
    print(f"   time to first token {r['time_to_first_token_s'] * 1e3:.1f} ms, "
          f"decode {r['decode_tokens_per_s']:.0f} tok/s")
before, after = f["weight_bytes_after"], q["weight_bytes_after"]
print(f"\nweights: {before:,} bytes in float32 -> {after:,} bytes with int8 Linear layers "
      f"({100 * (1 - after / before):.0f}% saved; embeddings, norms and lm_head stay float)")
pairs = list(zip(f["generated_tokens"], q["generated_tokens"]))
prefix = next((i for i, (a, b) in enumerate(pairs) if a != b), len(pairs))
print(f"greedy tokens identical to float for the first {prefix} of {len(f['generated_tokens'])}")
PY
