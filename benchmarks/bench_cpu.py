"""CPU benchmark of the 8-bit layer against fp32 and bf16 torch.nn.Linear and torch._int_mm.

Layer time of Linear8bitLt (its forward is the layer op torch.ops.llmint8.int8_linear:
activation quantization, outlier columns, int8 product, dequantization and bias all inside the
timed call) for Llama-2-7B layer shapes (K x N) and token counts M, at thresholds 0 and 6, with
fp32 and bf16 activations. Activations are x ~ N(0, 1) clipped to [-5, 5] with 8 planted outlier
columns of magnitude about 30 (the same x at both thresholds), weights ~ N(0, 1/K), bias on.
torch._int_mm times the int8 GEMM alone (oneDNN) on already quantized codes [M, K] x [K, N].

Every figure of a row is measured in the same run, the variants interleaved (in each round a
block of back-to-back calls of each, after one untimed call), so that load from other processes
hits them alike. Ratios are fp32 Linear time over the variant's time: above 1.00x the variant is
faster than fp32. Times are medians of the timed calls (--stat min for the minimum). The last
column is the CPU other processes used during the row, in cores: on a shared machine, rows
where it is not near 0 are disturbed.

    python benchmarks/bench_cpu.py [--threads 2] [--quick] [--json results.json]
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import time

import torch

import llmint8
from llmint8.nn import Linear8bitLt

SHAPES = [(4096, 4096), (4096, 11008)]
TOKENS = [1, 2, 4, 8, 16, 32, 128]
OUTLIER_COLUMNS = 8
OUTLIER_MAGNITUDE = 30.0
LAYER_VARIANTS = [("t0", 0.0, torch.float32), ("t6", 6.0, torch.float32),
                  ("t0_bf16", 0.0, torch.bfloat16), ("t6_bf16", 6.0, torch.bfloat16)]


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or "unknown"


def activations(M, K, gen):
    # The other values clipped to [-5, 5], as bench_linear.py does: no draw adds an unplanted
    # column past threshold 6, so every row sees exactly the planted columns.
    x = torch.randn(M, K, generator=gen).clamp_(-5.0, 5.0)
    cols = torch.randperm(K, generator=gen)[:OUTLIER_COLUMNS]
    signs = torch.randint(0, 2, (M, OUTLIER_COLUMNS), generator=gen) * 2 - 1
    x[:, cols] = OUTLIER_MAGNITUDE * signs + torch.randn(M, OUTLIER_COLUMNS, generator=gen)
    return x


def interleaved(fns: dict, seconds: float, rounds: int, stat: str) -> dict:
    """Median (or min) time per call of each fn in ms. Round after round, each fn runs a block of
    calls, untimed first call included: that one pays for waking torch's idle worker threads, which
    the calls before it (another variant) left asleep; the timed calls after it are the steady
    state a model's back-to-back layers see. The blocks of all fns alternate, so load from other
    processes that comes and goes hits them alike."""
    per_call = {}
    for name, fn in fns.items():  # warm-up (oneDNN primitives, allocator, caches) and a first estimate
        fn()
        t0 = time.perf_counter()
        fn()
        per_call[name] = time.perf_counter() - t0
    block_seconds = seconds / (rounds * len(fns))
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            fn()
            for _ in range(max(2, int(block_seconds / max(per_call[name], 1e-6)))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    pick = statistics.median if stat == "median" else min
    return {name: pick(ts) * 1e3 for name, ts in times.items()}


class OtherLoad:
    """CPU time other processes used while a row was measured, in cores (0 = the machine was ours,
    1 = one core busy elsewhere): on a shared machine, the rows to distrust. Linux only (None elsewhere)."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
            with open("/proc/self/stat") as f:
                own = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        busy = sum(fields) - fields[3] - fields[4]  # all but idle and iowait, in clock ticks
        return busy, int(own[11]) + int(own[12]), time.monotonic()  # this process's utime + stime

    def cores(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        return max(0.0, ((end[0] - self.start[0]) - (end[1] - self.start[1])) / hz / (end[2] - self.start[2]))


def rel_err(out, ref):
    return ((out.double() - ref).norm() / ref.norm()).item()


@torch.inference_mode()
def run(shapes, tokens, args):
    gen = torch.Generator().manual_seed(0)
    rows = []
    for K, N in shapes:
        fp32 = torch.nn.Linear(K, N)
        with torch.no_grad():
            fp32.weight.copy_(torch.randn(N, K, generator=gen) / K**0.5)
            fp32.bias.copy_(torch.randn(N, generator=gen) * 0.1)
        bf16 = torch.nn.Linear(K, N, dtype=torch.bfloat16)
        bf16.load_state_dict(fp32.state_dict())
        layers = {}
        for threshold in (0.0, 6.0):
            layer = Linear8bitLt(K, N, has_fp16_weights=False, threshold=threshold)
            layer.load_state_dict(fp32.state_dict())
            layers[threshold] = layer.to("cpu")  # quantizes: int8 weight and its row scales
        CB = layers[0.0].weight.data
        CBt = CB.t()  # [K, N] view: _int_mm's layout, no copy
        for M in tokens:
            x = activations(M, K, gen)
            xs = {torch.float32: x, torch.bfloat16: x.bfloat16()}
            xq = torch.randint(-127, 128, (M, K), generator=gen, dtype=torch.int8)
            fns = {"fp32": lambda: fp32(x), "bf16": lambda: bf16(xs[torch.bfloat16]),
                   "int_mm": lambda: torch._int_mm(xq, CBt)}
            for key, threshold, dtype in LAYER_VARIANTS:
                fns[key] = (lambda layer, xin: lambda: layer(xin))(layers[threshold], xs[dtype])
            load = OtherLoad()
            ms = interleaved(fns, args.seconds, args.rounds, args.stat)
            other = load.cores()
            ref = x.double() @ fp32.weight.double().t() + fp32.bias.double()
            row = {"K": K, "N": N, "M": M, **{f"{k}_ms": v for k, v in ms.items()},
                   "err_bf16": rel_err(bf16(xs[torch.bfloat16]), ref), "other_load_cores": other}
            for key, threshold, dtype in LAYER_VARIANTS:
                row[f"err_{key}"] = rel_err(layers[threshold](xs[dtype]), ref)
            rows.append(row)
            print(format_row(row), flush=True)
    return rows


COLUMNS = ["bf16", "int_mm", "t0", "t6", "t0_bf16", "t6_bf16"]
HEADER = ("| K x N | M | fp32 ms | bf16 Linear | _int_mm (GEMM only) | int8 t=0 | int8 t=6 | "
          "int8 t=0, bf16 x | int8 t=6, bf16 x | rel. err t=0 / t=6 / bf16 Linear | other load |")


def format_row(r):
    ratios = " | ".join(f"{r['fp32_ms'] / r[f'{c}_ms']:.2f}x" for c in COLUMNS)
    other = "-" if r["other_load_cores"] is None else f"{r['other_load_cores']:.2f}"
    return (f"| {r['K']} x {r['N']} | {r['M']} | {r['fp32_ms']:.3f} | {ratios} | "
            f"{r['err_t0']:.1e} / {r['err_t6']:.1e} / {r['err_bf16']:.1e} | {other} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="M = 1, 16, 128 only")
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent per row (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="blocks of calls per variant and row (default 5)")
    parser.add_argument("--stat", choices=["median", "min"], default="median")
    parser.add_argument("--json", help="write the rows and the environment to this file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = llmint8.build_info()
    env = {
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "onednn": torch.backends.mkldnn.is_available(),
        "cpu_gemv_isa": info["cpu_gemv_isa"],
        "llmint8": info["version"],
        "date": datetime.date.today().isoformat(),
        "stat": args.stat,
    }
    print(f"cpu: {env['cpu']}, {env['threads']} threads, torch {env['torch']} (oneDNN {env['onednn']}), "
          f"llmint8 GEMV {env['cpu_gemv_isa']}, {env['date']}; {args.stat} ms; ratios: fp32 time / time")
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    rows = run(SHAPES, [1, 16, 128] if args.quick else TOKENS, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
