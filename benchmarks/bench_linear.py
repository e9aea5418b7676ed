"""Benchmark of the 8-bit layer op against F.linear in the same dtype and torch._int_mm, on the GPU.

Follows ../shared/docs/PERF.md: the shapes (K, N) of Llama layers, token counts M = 1 to
4096, thresholds 0 and 6 with 8 planted outlier columns of magnitude 30, weights ~ N(0, 1/K),
fp16 and bf16 activations. Times are device-event medians (triton.testing.do_bench) of eager
calls, with activation quantization, outliers, dequantization and bias inside the timed
region; --graph times CUDA graph replays instead (what compiled models see), each call on the
next of enough weight copies that no weight is still in L2 when it comes round again, as in a
model, which reads ~200 MB of other layers between two calls of one (--warm-l2: one copy, so
layers up to the L2's size stay there between replays and look faster than a model sees
them). Ratios are float_ms / ms (above 1 = faster than F.linear), measured in the same run
on the same card. Relative error is against an fp32 reference. The last lines check PERF.md's
per-layer targets.

    python benchmarks/bench_linear.py [--quick] [--tokens 1,2,4,8,16] [--graph] [--dtypes fp16,bf16] [--json results.json]
    python benchmarks/bench_linear.py --profile [--tokens 1,8]   # kernel times of one call per shape and M
    python benchmarks/bench_linear.py --graph --shapes 11008x4096 --outlier-columns 1080 --tokens 1,8   # chosen layers
    python benchmarks/bench_linear.py --graph --producer --tokens 1   # each call after a kernel writing its input
"""

import argparse
import contextlib
import itertools
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import triton.testing

import llmint8

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (5120, 13824), (8192, 8192), (8192, 28672), (28672, 8192)]
TOKENS = [1, 2, 4, 8, 16, 32, 128, 512, 1024, 4096]
QUICK_TOKENS = [1, 16, 128, 1024, 4096]  # --quick, and --profile's default
OUTLIER_COLUMNS = 8
OUTLIER_MAGNITUDE = 30.0
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

# bitsandbytes 0.50.2 on an H200, from PERF.md: (K, N, M) -> (t=0 ms, t=6 ms), fp16.
BNB_H200 = {
    (4096, 4096, 1): (0.203, 0.756), (4096, 4096, 4096): (0.243, 0.785),
    (4096, 11008, 1): (0.206, 0.795), (4096, 11008, 4096): (0.578, 1.185),
    (8192, 28672, 1): (0.080, 0.375), (8192, 28672, 128): (0.105, 0.495),
    (8192, 28672, 4096): (2.386, 3.190), (28672, 8192, 4096): (2.333, 2.995),
}


def timer(graph: bool):
    if graph:
        return lambda fn: triton.testing.do_bench_cudagraph(fn, rep=100, return_mode="median")
    return lambda fn: triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def weight_copies(nbytes: int, graph: bool, warm_l2: bool) -> int:
    """Copies of a weight of `nbytes` to take turns: under graph replay (no L2 flush between
    calls) enough that the weights read between two calls of one copy fill L2 twice over. Eager
    timing (do_bench) flushes L2 before each call itself."""
    if not graph or warm_l2:
        return 1
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    return max(2, -(-2 * l2 // nbytes) + 1)


def in_turns(call, copies):
    """A function that calls call(copy) on the next copy each time (CUDA graph capture records
    each call's own copy)."""
    turn = itertools.cycle(copies)
    return lambda: call(next(turn))


def activations(M, K, gen, dtype, outliers=OUTLIER_COLUMNS):
    """N(0, 1) activations with `outliers` planted columns. The other values are clipped to
    [-5, 5] so that no draw adds a column past threshold 6 (about 3 % of 4096 x 4096 draws
    would): an unplanted column changes which path runs and makes runs of one point differ
    (nineteenth session, benchmarks/NOTES.md)."""
    outliers = min(outliers, K)
    x = torch.randn(M, K, device="cuda", generator=gen).clamp_(-5.0, 5.0)
    cols = torch.randperm(K, device="cuda", generator=gen)[:outliers]
    signs = torch.randint(0, 2, (M, outliers), device="cuda", generator=gen) * 2 - 1
    x[:, cols] = OUTLIER_MAGNITUDE * signs + torch.randn(M, outliers, device="cuda", generator=gen)
    return x.to(dtype)


def rel_err(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


def run(shapes, tokens, dtypes, graph, outliers=OUTLIER_COLUMNS, warm_l2=False, producer=False):
    bench = timer(graph)
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for K, N in shapes:
        W = torch.randn(N, K, device="cuda", generator=gen) / K**0.5
        CB, SCB, _ = torch.ops.llmint8.int8_vectorwise_quant(W)
        copies = weight_copies(CB.numel(), graph, warm_l2)  # the int8 weight's count serves fp16 too
        int8_weights = [(CB, SCB)] + [(CB.clone(), SCB.clone()) for _ in range(copies - 1)]
        for dname in dtypes:
            dtype = DTYPES[dname]
            Wf = W.to(dtype)
            float_weights = [Wf] + [Wf.clone() for _ in range(copies - 1)]
            bias = torch.randn(N, device="cuda", generator=gen).to(dtype)
            for M in tokens:
                x = activations(M, K, gen, dtype, outliers)
                ref = x.float() @ W.t() + bias.float()
                row = {"K": K, "N": N, "M": M, "dtype": dname, "weight_copies": copies,
                       "outlier_columns_found": int((x.abs() >= 6.0).any(0).sum())}
                # --producer: a small kernel writes x (in place, times 1: exact) before each call, as
                # a model's norm or activation does; its own time (measured alone) is subtracted.
                produce = (lambda: x.mul_(1.0)) if producer else (lambda: None)
                producer_ms = row["producer_ms"] = bench(produce) if producer else 0.0
                layer_time = lambda fn: bench(fn) - producer_ms  # noqa: E731
                row["float_ms"] = layer_time(in_turns(lambda w: (produce(), F.linear(x, w, bias)), float_weights))
                row["float_err"] = rel_err(F.linear(x, Wf, bias), ref)
                if M > 16 and K % 8 == 0 and N % 8 == 0:
                    xq = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
                    row["int_mm_ms"] = bench(in_turns(lambda w: torch._int_mm(xq, w[0].t()), int8_weights))
                for t in (0.0, 6.0):
                    key = f"t{int(t)}"
                    row[f"{key}_ms"] = layer_time(in_turns(
                        lambda w: (produce(), torch.ops.llmint8.int8_linear(x, w[0], w[1], bias, t)), int8_weights))
                    row[f"{key}_err"] = rel_err(torch.ops.llmint8.int8_linear(x, CB, SCB, bias, t), ref)
                bnb = BNB_H200.get((K, N, M)) if dname == "fp16" else None
                if bnb:
                    row["bnb_h200_t0_ms"], row["bnb_h200_t6_ms"] = bnb
                rows.append(row)
                print(format_row(row), flush=True)
            del Wf, float_weights
        del W, CB, SCB, int8_weights
        torch.cuda.empty_cache()
    return rows


HEADER = ("| K x N | dtype | M | float ms | int_mm ms | t=0 ms | t=0 vs float | t=6 ms | t=6 vs float | "
          "t=6 / t=0 time | err float / t=0 / t=6 | bnb H200 t=0 / t=6 ms |")


def format_row(r):
    int_mm = f"{r['int_mm_ms']:.3f}" if "int_mm_ms" in r else "-"
    bnb = f"{r['bnb_h200_t0_ms']:.3f} / {r['bnb_h200_t6_ms']:.3f}" if "bnb_h200_t0_ms" in r else "-"
    return (f"| {r['K']} x {r['N']} | {r['dtype']} | {r['M']} | {r['float_ms']:.4f} | {int_mm} | {r['t0_ms']:.4f} | "
            f"{r['float_ms'] / r['t0_ms']:.2f}x | {r['t6_ms']:.4f} | {r['float_ms'] / r['t6_ms']:.2f}x | "
            f"{r['t6_ms'] / r['t0_ms']:.2f} | "
            f"{r['float_err']:.1e} / {r['t0_err']:.1e} / {r['t6_err']:.1e} | {bnb} |")


def check_targets(rows):
    """PERF.md's per-layer targets; returns the lines that miss."""
    misses = []
    for r in rows:
        where = f"{r['K']} x {r['N']} {r['dtype']} M={r['M']}"
        big = r["K"] * r["N"] >= 4096 * 11008
        for t in ("t0", "t6"):
            speed = r["float_ms"] / r[f"{t}_ms"]
            if speed < 1.0:
                misses.append(f"{where} {t}: {speed:.2f}x, slower than float")
            if r["M"] <= 16:
                need = 1.6 if big else (1.3 if r["K"] * r["N"] >= 4096 * 4096 else 1.0)
                if speed < need:
                    misses.append(f"{where} {t}: decode {speed:.2f}x < {need}x")
            if r["M"] >= 1024 and big and speed < 1.7:
                misses.append(f"{where} {t}: prefill {speed:.2f}x < 1.7x")
        if r["t6_ms"] > 1.15 * r["t0_ms"]:
            misses.append(f"{where}: t=6 takes {r['t6_ms'] / r['t0_ms']:.2f}x the time of t=0 (> 1.15)")
    return misses


def profile(shapes, tokens, outliers=OUTLIER_COLUMNS, torch_profiler=True):
    """Kernel names and device times of one layer call at each size (t=0 and t=6, fp16): 3 calls
    to warm up, then 5 under torch.profiler. Without it (torch_profiler=False) the same 8 calls
    run plain, for an outside profiler (ncu and torch.profiler both go through CUPTI: not
    something to count on together)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    for K, N in shapes:
        W = torch.randn(N, K, device="cuda", generator=gen) / K**0.5
        CB, SCB, _ = torch.ops.llmint8.int8_vectorwise_quant(W)
        bias = torch.randn(N, device="cuda", generator=gen).half()
        for M in tokens:
            x = activations(M, K, gen, torch.float16, outliers)
            for t in (0.0, 6.0):
                for _ in range(3):
                    torch.ops.llmint8.int8_linear(x, CB, SCB, bias, t)
                torch.cuda.synchronize()
                watch = (torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) if torch_profiler
                         else contextlib.nullcontext())
                with watch as prof:
                    for _ in range(5):
                        torch.ops.llmint8.int8_linear(x, CB, SCB, bias, t)
                    torch.cuda.synchronize()
                if prof is None:
                    print(f"{K} x {N} M={M} t={t:g}: 8 calls", flush=True)
                    continue
                kernels = {}
                for e in prof.events():
                    if e.device_type == torch.autograd.DeviceType.CUDA:
                        kernels.setdefault(e.name[:60], []).append(e.device_time)
                parts = ", ".join(f"{name} {sum(v) / len(v):.1f}us" for name, v in kernels.items())
                print(f"{K} x {N} M={M} t={t:g}: {parts}", flush=True)


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="three shapes and five token counts")
    parser.add_argument("--tokens", help="comma-separated token counts M in place of the default ones")
    parser.add_argument("--graph", action="store_true", help="time CUDA graph replays instead of eager calls")
    parser.add_argument("--warm-l2", action="store_true",
                        help="with --graph: one weight copy, replayed back to back "
                             "(layers up to the L2's size stay in it)")
    parser.add_argument("--dtypes", default="fp16,bf16", help="activation dtypes (fp16, bf16)")
    parser.add_argument("--profile", action="store_true", help="print kernel times per call instead")
    parser.add_argument("--no-torch-profiler", action="store_true",
                        help="with --profile: make the calls without torch.profiler (under ncu)")
    parser.add_argument("--shapes", help="comma-separated KxN layer shapes in place of the default ones (e.g. 11008x4096)")
    parser.add_argument("--outlier-columns", type=int, default=OUTLIER_COLUMNS,
                        help="planted outlier columns of the activations (the e2e model's down_proj sees ~1080)")
    parser.add_argument("--producer", action="store_true",
                        help="a small kernel writes the activations before each call, as in a model (its own "
                             "time subtracted): a layer op cannot then overlap its start with the previous "
                             "call of itself")
    parser.add_argument("--json", help="write the rows and the environment to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_linear.py needs a CUDA GPU")
    shapes = SHAPES[:2] + SHAPES[5:6] if args.quick else SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in shape.split("x")) for shape in args.shapes.split(",") if shape]
    tokens = QUICK_TOKENS if args.quick else TOKENS
    if args.tokens:
        tokens = [int(m) for m in args.tokens.split(",") if m]
    if args.profile:
        profile(shapes if args.shapes else shapes[:2], tokens if args.tokens else QUICK_TOKENS, args.outlier_columns,
                not args.no_torch_profiler)
        return
    dtypes = [d for d in args.dtypes.split(",") if d]
    if args.graph:
        timing = "CUDA graph replay, " + ("warm L2 (one weight copy)" if args.warm_l2 else "weights in turns (cold L2)")
    else:
        timing = "eager (do_bench, L2 flushed)"
    if args.producer:
        timing += ", each call after a kernel writing its input (its time subtracted)"
    env = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "llmint8": llmint8.build_info(),
        "date": time.strftime("%Y-%m-%d"),
        "driver": driver_version(),
        "timing": timing,
        "outlier_columns": args.outlier_columns,
    }
    print(f"card: {env['card']}, driver {env['driver']}, torch {env['torch']}, {env['date']}, {env['timing']}, "
          f"{args.outlier_columns} planted outlier columns")
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    rows = run(shapes, tokens, dtypes, args.graph, args.outlier_columns, args.warm_l2, args.producer)
    for r in rows:  # every point should see exactly the planted columns
        if r["outlier_columns_found"] != min(args.outlier_columns, r["K"]):
            print(f"note: {r['K']} x {r['N']} M={r['M']}: {r['outlier_columns_found']} outlier columns, "
                  f"{args.outlier_columns} planted")
    misses = check_targets(rows)
    print(f"PERF.md targets: {len(misses)} misses" + "".join(f"\n  {m}" for m in misses))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows, "target_misses": misses}, f, indent=1)


if __name__ == "__main__":
    main()
