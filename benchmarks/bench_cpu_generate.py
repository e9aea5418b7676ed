"""Decode speed of llmint8-generate on the CPU: 8-bit (--int8) against float (--no-int8).

Writes a random-weight Hugging Face Llama folder with transformers (TinyLlama-1.1B's layer shape:
hidden 2048, MLP 5632, 32 query / 4 key-value heads, vocabulary 32000; a few layers, fp32), with
outlier features planted in the norm weights as in trained LLMs past 6.7B parameters (they make
the threshold-6 path take its float columns), then runs the same CLI on it with and without
--int8, alternating, and prints the median decode tokens/s of each and the ratio to float, with
the CPU other processes used meanwhile (in cores; not near 0 on a shared machine = disturbed).
lm_head stays in floating point in both (llmint8 skips it, as bitsandbytes does).

    python benchmarks/bench_cpu_generate.py [--layers 4] [--threads 2] [--runs 3] [--json out.json]

The folder goes to a temporary directory unless --folder names one (reused when it holds a model).
"""

import argparse
import datetime
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

import llmint8
from llmint8._cli import native_env, tool_path

OUTLIER_FEATURES = [3, 517, 1024, 1999]
OUTLIER_GAIN = 25.0


def write_folder(folder: Path, args) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.intermediate,
                         num_hidden_layers=args.layers, num_attention_heads=args.heads,
                         num_key_value_heads=args.kv_heads, vocab_size=args.vocab, max_position_embeddings=2048,
                         tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).float().eval()
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[[f for f in OUTLIER_FEATURES if f < args.hidden]] = OUTLIER_GAIN
    model.save_pretrained(folder, safe_serialization=True)


def busy_ticks():
    """(CPU ticks the machine spent busy, ticks of this process and its finished children), or None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return None
    own = os.times()
    hz = os.sysconf("SC_CLK_TCK")
    return sum(fields) - fields[3] - fields[4], (own.user + own.system + own.children_user + own.children_system) * hz


def decode(folder: Path, mode: list, args) -> dict:
    prompt = ",".join(str(i) for i in range(1, 9))
    cmd = [tool_path("llmint8-generate"), "-m", str(folder), "--tokens", prompt, "-n", str(args.steps), "-t", "0",
           "--device", "cpu", "--json", *mode]
    env = native_env(dict(os.environ, OMP_NUM_THREADS=str(args.threads)))  # finds the torch Python imports
    before, start = busy_ticks(), time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    after, wall = busy_ticks(), time.monotonic() - start
    result = json.loads(out.stdout)
    # CPU other processes used during the run, in cores: on a shared machine, runs to distrust.
    result["other_load_cores"] = (None if before is None or after is None else
                                  max(0.0, (after[0] - before[0]) - (after[1] - before[1])) / os.sysconf("SC_CLK_TCK") / wall)
    return result


def cpu_name() -> str:
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", help="model folder to write (or reuse); default: a temporary one")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--steps", type=int, default=64, help="tokens to generate per run")
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of the CLI")
    parser.add_argument("--runs", type=int, default=3, help="runs of each mode, alternating")
    parser.add_argument("--json", help="write the figures and the environment to this file")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.folder) if args.folder else Path(tmp) / "llama"
        if not (folder / "config.json").exists():
            write_folder(folder, args)
        modes = {"float": ["--no-int8"], "int8 t=6": ["--int8", "--threshold", "6"],
                 "int8 t=0": ["--int8", "--threshold", "0"]}
        results = {name: [] for name in modes}
        for _ in range(args.runs):
            for name, mode in modes.items():
                results[name].append(decode(folder, mode, args))

    env = {"cpu": cpu_name(), "threads": args.threads, "torch": torch.__version__,
           "cpu_gemv_isa": llmint8.build_info()["cpu_gemv_isa"], "date": datetime.date.today().isoformat(),
           "model": {k: getattr(args, k) for k in ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab")},
           "steps": args.steps, "runs": args.runs}
    print(f"cpu: {env['cpu']}, {args.threads} threads, torch {env['torch']}, llmint8 GEMV {env['cpu_gemv_isa']}, "
          f"{env['date']}; Llama {env['model']}, {args.steps} greedy tokens, median of {args.runs} runs")
    print("| mode | decode tok/s | vs float | weight bytes | load s | other load (max) |")
    print("|---|---|---|---|---|---|")
    summary = {}
    for name, runs in results.items():
        summary[name] = {"decode_tokens_per_s": statistics.median(r["decode_tokens_per_s"] for r in runs),
                         "load_seconds": statistics.median(r["load_seconds"] for r in runs),
                         "weight_bytes": runs[0]["weight_bytes_after"],
                         "all_decode_tokens_per_s": [r["decode_tokens_per_s"] for r in runs],
                         "generated_tokens": runs[0]["generated_tokens"],
                         "other_load_cores": [r["other_load_cores"] for r in runs]}
    base = summary["float"]["decode_tokens_per_s"]
    for name, s in summary.items():
        other = [o for o in s["other_load_cores"] if o is not None]
        other = f"{max(other):.2f}" if other else "-"
        print(f"| {name} | {s['decode_tokens_per_s']:.2f} | {s['decode_tokens_per_s'] / base:.2f}x | "
              f"{s['weight_bytes'] / 1e6:.0f} MB | {s['load_seconds']:.1f} | {other} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "results": summary}, f, indent=1)


if __name__ == "__main__":
    main()
