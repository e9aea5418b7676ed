"""End-to-end generation benchmark: what users see, fp16 against llmint8 in the same run.

Builds a Llama-shaped model with random weights (Llama-2-7B's layer shape by default, a few
layers) whose RMSNorm weights carry a few large features, so that the activations entering
the Linear layers have outlier columns as in LLMs past 6.7B parameters. Saves it as a Hugging
Face folder, then measures, for fp16 and for llmint8 at thresholds 6 and 0:
- Python: transformers `from_pretrained` (load time, weight bytes), `generate` with greedy
  decoding (the median of --repeats timed runs, the variants taking turns run after run),
  eager (dynamic cache) and compiled (static cache: transformers compiles the forward itself,
  with CUDA graphs), at each batch size: tokens/s over whole calls and decode tokens/s (the
  tokens after the first, timed in the same runs), peak memory, and the outlier columns
  entering each kind of layer; with --decode-forwards, eager rows also time the one-token forward
  alone (the model called in a loop on its own cache, no generate() around it), which tells the
  model's per-token time from generate()'s own;
- C++: `llmint8-generate --json` on the same folder: load time and GB/s, the load's peak memory
  against the weights, first-call setup (a warm-up) apart from time to first token, decode
  tokens/s (on CUDA a replayed CUDA graph, its one-time capture timed apart), peak memory.
Ratios are against fp16 in the same run. Results go in benchmarks/RESULTS.md.

    python benchmarks/bench_e2e.py [--layers 8] [--new-tokens 64] [--batches 1,8] [--json out.json]
    python benchmarks/bench_e2e.py --layers 32 --batches 1          # the full 7B shape
    python benchmarks/bench_e2e.py --layers 32 --batches 1 --modes compiled --thresholds 6 --skip-cpp --repeats 1
    python benchmarks/bench_e2e.py --layers 32 --batches 1 --modes eager --thresholds 6 --skip-cpp --repeats 5 --decode-forwards 64
    python benchmarks/bench_e2e.py --layers 8 --batches 1 --modes eager --repeats 1 --cpp-profile   # C++ kernels a token
    python benchmarks/bench_e2e.py --layers 8 --skip-python   # llmint8-generate alone (as tests/run_gpu.sh's ab_e2e step)
"""

import argparse
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

import llmint8
from llmint8._cli import native_env, tool_path


def variants_of(thresholds) -> dict:
    """fp16 (every ratio's base) and llmint8 at each threshold: name -> threshold (None: fp16)."""
    return {"fp16": None, **{f"int8 t={t:g}": t for t in thresholds}}


def make_model_folder(args, folder: Path) -> None:
    """A random Llama with planted outlier features in its norms, saved in fp16."""
    config = transformers.LlamaConfig(
        hidden_size=args.hidden, intermediate_size=args.intermediate, num_hidden_layers=args.layers,
        num_attention_heads=args.heads, num_key_value_heads=args.kv_heads, vocab_size=args.vocab,
        max_position_embeddings=max(4096, args.prompt_tokens + args.new_tokens + 8), tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device(args.device):
        model = transformers.LlamaForCausalLM(config).to(torch.float16)
    features = torch.randperm(args.hidden)[: args.outlier_features]
    with torch.no_grad():
        for layer in model.model.layers:
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight[features] = 30.0
    model.save_pretrained(str(folder), safe_serialization=True)
    del model


def peak_bytes(device: str) -> int:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated()
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def release(device: str) -> None:
    """Frees what the last model left: compiled graphs (they hold its weights) and cached blocks."""
    torch._dynamo.reset()
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def report_outlier_columns(model, args, threshold: float) -> dict:
    """Mean count of outlier columns (any row at or above the threshold) entering each kind of
    8-bit layer, for the prompt (prefill) and for one token: what the t=6 kernels face."""
    counts = {}

    def hook(kind):
        def count(module, inputs):
            x = inputs[0].reshape(-1, inputs[0].shape[-1])
            counts.setdefault(kind, []).append(int((x.abs() >= threshold).any(0).sum()))
        return count

    handles = [module.register_forward_pre_hook(hook(name.rsplit(".", 1)[-1]))
               for name, module in model.named_modules() if isinstance(module, llmint8.nn.Linear8bitLt)]
    report = {}
    try:
        for stage, tokens in (("prefill", args.prompt_tokens), ("decode", 1)):
            counts.clear()
            with torch.no_grad():
                model(torch.randint(3, args.vocab, (1, tokens), device=args.device))
            report[stage] = {kind: sum(c) / len(c) for kind, c in counts.items()}
    finally:
        for handle in handles:
            handle.remove()
    for stage, kinds in report.items():
        print(f"outlier columns at t={threshold:g}, {stage}: " +
              ", ".join(f"{kind} {mean:.0f}" for kind, mean in kinds.items()), flush=True)
    return report


def profile_generation(model, args, name: str, mode: str, batch: int, prompt, options) -> None:
    """Top host and device entries of one timed-row generation (torch.profiler): where a token
    goes; in compiled mode, cudaGraphLaunch among the host entries shows the CUDA graphs ran."""
    activities = [torch.profiler.ProfilerActivity.CPU]
    if args.device.startswith("cuda"):
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.no_grad(), torch.profiler.profile(activities=activities) as prof:
        model.generate(prompt, **options)
        sync(args.device)
    averages = prof.key_averages()
    for key in ("self_cpu_time_total", "self_device_time_total"):
        print(f"profile {name}, {mode}, batch {batch}, {args.new_tokens} new tokens, by {key}:\n"
              f"{averages.table(sort_by=key, row_limit=12, max_name_column_width=60)}", flush=True)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def allocated(device: str) -> int:
    return torch.cuda.memory_allocated() if device.startswith("cuda") else 0


def load_variant(args, folder: Path, name: str, threshold):
    """One precision of the model through transformers, with its load time and what it holds."""
    sync(args.device)
    before = allocated(args.device)
    start = time.perf_counter()
    kwargs = {} if threshold is None else {"quantization_config": llmint8.Int8Config(llm_int8_threshold=threshold)}
    model = transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float16,
                                                              device_map=args.device, **kwargs).eval()
    sync(args.device)
    return {"name": name, "threshold": threshold, "model": model, "load_s": time.perf_counter() - start,
            "weight_bytes": sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()]),
            "resident_bytes": allocated(args.device) - before}


class TokenClock(transformers.StoppingCriteria):
    """Stops nothing: notes when each new token is ready (the device synchronized), so that a
    timed run also gives its decode speed, tokens after the first over the time they took, apart
    from the prefill and generate's setup, which whole-call times include. The sync adds no wait
    on CUDA: generate reads its stop flag on the host after every token there (transformers 5.17
    defers that read on "mps" only)."""

    def __init__(self, device: str):
        self.device, self.stamps = device, []

    def __call__(self, input_ids, scores, **kwargs):
        sync(self.device)
        self.stamps.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def decode_seconds_per_token(self) -> float:
        if len(self.stamps) < 2:
            return float("nan")
        return (self.stamps[-1] - self.stamps[0]) / (len(self.stamps) - 1)


def generate_options(args, mode: str, prompt) -> dict:
    options = dict(max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, do_sample=False)
    if mode == "compiled":
        options["cache_implementation"] = "static"
        config = transformers.CompileConfig(fullgraph=True)
        config._compile_all_devices = not args.device.startswith("cuda")  # on the CPU only when asked
        options["compile_config"] = config
    options["attention_mask"] = torch.ones_like(prompt)
    return options


def decode_forward_seconds(model, prompt, count: int, device: str) -> float:
    """Seconds per one-token eager forward: the prompt's prefill, then `count` forwards each taking
    the last token's greedy pick and the growing dynamic cache, synchronized only at the end, as
    generate() runs them but without its per-token work (logits processors, stopping criteria,
    input preparation)."""
    out = model(prompt, use_cache=True)
    past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    sync(device)
    start = time.perf_counter()
    for _ in range(count):
        out = model(token, past_key_values=past, use_cache=True)
        past, token = out.past_key_values, out.logits[:, -1:].argmax(-1)
    sync(device)
    return (time.perf_counter() - start) / count


def python_rows(args, folder: Path):
    """Every variant loaded at once and timed in turn, run after run (rotating which goes first),
    so that a drift of the card's clocks or of the host's load during the benchmark falls on all
    of them alike: the ratios compare runs minutes apart otherwise, and moved by 2x between calls."""
    release(args.device)
    variants = [load_variant(args, folder, name, threshold) for name, threshold in args.variants.items()]
    rows = []
    for mode in args.modes:
        for batch in args.batches:
            release(args.device)  # the previous row's compiled graphs (the models stay)
            prompt = torch.randint(3, args.vocab, (batch, args.prompt_tokens), device=args.device)
            options = generate_options(args, mode, prompt)
            peaks, times = {}, {v["name"]: [] for v in variants}
            decode_times = {v["name"]: [] for v in variants}  # seconds a token after the first
            forward_times = {v["name"]: [] for v in variants}  # seconds a one-token forward (--decode-forwards)
            with torch.no_grad():
                for v in variants:  # warm-up (and compilation), then one run for the peak
                    before = allocated(args.device)
                    v["model"].generate(prompt, **options)
                    reset_peak(args.device)
                    out = v["model"].generate(prompt, **options)
                    sync(args.device)
                    # What this model holds and allocates to generate (the other models' memory left out).
                    peaks[v["name"]] = v["resident_bytes"] + peak_bytes(args.device) - before
                for repeat in range(args.repeats):
                    shift = repeat % len(variants)
                    for v in variants[shift:] + variants[:shift]:
                        clock = TokenClock(args.device)
                        start = time.perf_counter()
                        out = v["model"].generate(prompt, stopping_criteria=transformers.StoppingCriteriaList([clock]), **options)
                        sync(args.device)
                        times[v["name"]].append(time.perf_counter() - start)
                        decode_times[v["name"]].append(clock.decode_seconds_per_token())
                    if mode == "eager" and args.decode_forwards > 0:  # the same turns, forwards alone
                        for v in variants[shift:] + variants[:shift]:
                            forward_times[v["name"]].append(
                                decode_forward_seconds(v["model"], prompt, args.decode_forwards, args.device))
            generated = (out.shape[1] - args.prompt_tokens) * batch
            for v in variants:
                # medians (the higher middle run of an even count: a run that took place)
                seconds = statistics.median_high(times[v["name"]])
                per_token = statistics.median_high(decode_times[v["name"]])
                row = {"variant": v["name"], "mode": mode, "batch": batch, "tokens_per_s": generated / seconds,
                       "decode_tokens_per_s": batch / per_token, "peak_bytes": peaks[v["name"]],
                       "load_s": v["load_s"], "weight_bytes": v["weight_bytes"],
                       # every timed run in order (repeat r of each variant ran back to back with the
                       # others' repeat r): the spread, and the ratios run by run, which the medians hide
                       "tokens_per_s_each": [generated / s for s in times[v["name"]]],
                       "decode_tokens_per_s_each": [batch / t for t in decode_times[v["name"]]]}
                if forward_times[v["name"]]:
                    row["forward_ms_each"] = [1e3 * t for t in forward_times[v["name"]]]
                    row["forward_ms"] = statistics.median_high(row["forward_ms_each"])
                rows.append(row)
                print(f"python {v['name']:9s} {mode:8s} batch {batch}: {row['tokens_per_s']:.1f} tok/s "
                      f"(decode {row['decode_tokens_per_s']:.1f}), peak {row['peak_bytes'] / 2**30:.2f} GiB, "
                      f"load {v['load_s']:.1f} s"
                      + (f", one-token forward alone {row['forward_ms']:.2f} ms" if "forward_ms" in row else ""),
                      flush=True)
                if args.profile:
                    profile_generation(v["model"], args, v["name"], mode, batch, prompt, options)
    for v in variants:
        if v["threshold"]:
            outlier_report = report_outlier_columns(v["model"], args, v["threshold"])
            for row in rows:
                if row["variant"] == v["name"]:
                    row["outlier_columns"] = outlier_report
    del variants
    release(args.device)
    return rows


def cpp_rows(args, folder: Path):
    # The CLI installed with the llmint8 imported here (one on PATH may be another version's).
    cli = tool_path("llmint8-generate")
    if not Path(cli).exists():
        print(f"{cli} is missing: no C++ rows", flush=True)
        return []
    prompt = ",".join(str(3 + i % (args.vocab - 3)) for i in range(args.prompt_tokens))
    rows = []
    for name, threshold in args.variants.items():
        command = [cli, "-m", str(folder), "--tokens", prompt, "-n", str(args.new_tokens), "-t", "0",
                   "--device", args.device, "--dtype", "fp16", "--json"]
        command += ["--no-int8"] if threshold is None else ["--int8", "--threshold", str(threshold)]
        command += ["--profile"] if args.cpp_profile else []
        result = subprocess.run(command, capture_output=True, text=True, env=native_env())
        if result.returncode != 0:
            print(f"c++ {name}: failed: {result.stderr.strip()[-500:]}", flush=True)
            continue
        out = json.loads(result.stdout.strip().splitlines()[-1])
        row = {"variant": name, "decode_tokens_per_s": out["decode_tokens_per_s"], "load_s": out["load_seconds"],
               "load_gb_per_s": out["load_gb_per_s"], "first_call_setup_s": out["first_call_setup_s"],
               "time_to_first_token_s": out["time_to_first_token_s"], "peak_bytes": out["peak_memory_bytes"],
               "load_peak_bytes": out.get("load_peak_cuda_bytes",
                                          out["load_peak_host_rss_bytes"] - out["host_rss_before_load_bytes"]),
               "weight_bytes": out.get("weight_bytes_after"), "cuda_graph": out.get("cuda_graph"),
               "cuda_graph_capture_s": out.get("cuda_graph_capture_s")}
        if args.cpp_profile:
            row["profile"] = dict(out["profile"], table=out["profile"]["table"][:40])
        rows.append(row)
        graph = f", CUDA graph captured in {row['cuda_graph_capture_s']:.3f} s" if row["cuda_graph"] else ""
        print(f"c++    {name:9s} decode {row['decode_tokens_per_s']:.1f} tok/s{graph}, load {row['load_s']:.1f} s "
              f"({row['load_gb_per_s']:.2f} GB/s, peak {row['load_peak_bytes'] / row['weight_bytes']:.2f}x the weights), "
              f"first-call setup {row['first_call_setup_s']:.3f} s, first token {row['time_to_first_token_s']:.3f} s, "
              f"peak {row['peak_bytes'] / 2**30:.2f} GiB", flush=True)
        if args.cpp_profile:
            print_cpp_profile(row["profile"])
    return rows


def print_cpp_profile(profile):
    """The C++ run's device time a generated token (prefill included), its 12 costliest kernels."""
    tokens = max(profile["generated_tokens"], 1)
    print(f"       {profile['events']}: {profile['total_us'] / tokens:.1f} us a generated token", flush=True)
    for row in profile["table"][:12]:
        print(f"       {row['total_us'] / tokens:9.2f} us  {row['calls'] / tokens:6.2f} calls  {row['name'][:100]}")


def summary(py, cpp):
    lines = []
    base = {(r["mode"], r["batch"]): r for r in py if r["variant"] == "fp16"}
    for r in py:
        if r["variant"] != "fp16":
            b = base[(r["mode"], r["batch"])]
            each = ", ".join(f"{x / y:.2f}x" for x, y in zip(r["tokens_per_s_each"], b["tokens_per_s_each"]))
            lines.append(f"python {r['variant']} {r['mode']} batch {r['batch']}: "
                         f"{r['tokens_per_s'] / b['tokens_per_s']:.2f}x fp16 "
                         f"(decode alone {r['decode_tokens_per_s'] / b['decode_tokens_per_s']:.2f}x; run by run {each})")
            if "forward_ms" in r and "forward_ms" in b:
                each = ", ".join(f"{y / x:.2f}x" for x, y in zip(r["forward_ms_each"], b["forward_ms_each"]))
                lines.append(f"python {r['variant']} {r['mode']} batch {r['batch']}, one-token forward alone: "
                             f"{b['forward_ms'] / r['forward_ms']:.2f}x fp16 (run by run {each})")
    cpp_base = next((r["decode_tokens_per_s"] for r in cpp if r["variant"] == "fp16"), None)
    for r in cpp:
        if r["variant"] != "fp16" and cpp_base:
            lines.append(f"c++ {r['variant']} decode: {r['decode_tokens_per_s'] / cpp_base:.2f}x fp16")
    return lines


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--outlier-features", type=int, default=7)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--thresholds", default="6,0",
                        help="llmint8 thresholds to run beside fp16 (fewer: less memory and time at 32 layers)")
    parser.add_argument("--modes", default="eager,compiled")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per row (the median is reported)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--decode-forwards", type=int, default=0,
                        help="eager rows: also time this many one-token forwards alone after each run (0: off)")
    parser.add_argument("--skip-cpp", action="store_true")
    parser.add_argument("--skip-python", action="store_true", help="the C++ rows only (llmint8-generate)")
    parser.add_argument("--cpp-profile", action="store_true",
                        help="run llmint8-generate with --profile: its kernels' device time a token (slower runs)")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top entries of each row's generation")
    parser.add_argument("--json", help="write the rows and the environment to this file")
    args = parser.parse_args()
    if args.decode_forwards < 0:
        parser.error(f"argument --decode-forwards: must be >= 0, got {args.decode_forwards}")
    args.batches = [int(b) for b in args.batches.split(",")]
    args.modes = [m for m in args.modes.split(",") if m]
    args.variants = variants_of(float(t) for t in args.thresholds.split(",") if t)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench_e2e.py: no CUDA device (use --device cpu for a smoke run)")
    env = {"card": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
           "torch": torch.__version__, "transformers": transformers.__version__,
           "date": time.strftime("%Y-%m-%d"), "args": vars(args)}
    print(f"{env['card']}, torch {env['torch']}, transformers {env['transformers']}, {env['date']}: {args.layers} "
          f"layers of {args.hidden} x {args.intermediate}, {args.prompt_tokens} prompt + {args.new_tokens} new tokens",
          flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        make_model_folder(args, folder)
        py = [] if args.skip_python else python_rows(args, folder)
        cpp = [] if args.skip_cpp else cpp_rows(args, folder)
    lines = summary(py, cpp)
    print("\n".join(lines))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "python": py, "cpp": cpp, "summary": lines}, f, indent=1)


if __name__ == "__main__":
    main()
