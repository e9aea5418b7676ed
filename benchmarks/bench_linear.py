"""Benchmark of the 8-bit layer op against fp16 F.linear and torch._int_mm, on the GPU.

Follows ../shared/docs/PERF.md: the shapes (K, N) of Llama layers, token counts M,
thresholds 0 and 6 with 8 planted outlier columns of magnitude 30, weights
~ N(0, 1/K). Times are device-event medians (triton.testing.do_bench), with
activation quantization, outliers, dequantization and bias inside the timed
region. Ratios are fp16_ms / ms (above 1 = faster than fp16), measured in the
same run on the same card. Relative error is against an fp32 reference.

    python benchmarks/bench_linear.py [--quick] [--json results.json]
"""

import argparse
import json
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
import triton.testing

import llmint8  # noqa: F401

SHAPES = [(4096, 4096), (4096, 11008), (11008, 4096), (5120, 13824), (8192, 8192), (8192, 28672), (28672, 8192)]
TOKENS = [1, 2, 4, 8, 16, 32, 128, 512, 1024, 4096]
OUTLIER_COLUMNS = 8
OUTLIER_MAGNITUDE = 30.0

# bitsandbytes 0.50.2 on an H200, from PERF.md: (K, N, M) -> (t=0 ms, t=6 ms).
BNB_H200 = {
    (4096, 4096, 1): (0.203, 0.756), (4096, 4096, 4096): (0.243, 0.785),
    (4096, 11008, 1): (0.206, 0.795), (4096, 11008, 4096): (0.578, 1.185),
    (8192, 28672, 1): (0.080, 0.375), (8192, 28672, 128): (0.105, 0.495),
    (8192, 28672, 4096): (2.386, 3.190), (28672, 8192, 4096): (2.333, 2.995),
}


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def activations(M, K, gen):
    x = torch.randn(M, K, device="cuda", generator=gen)
    cols = torch.randperm(K, device="cuda", generator=gen)[:OUTLIER_COLUMNS]
    signs = torch.randint(0, 2, (M, OUTLIER_COLUMNS), device="cuda", generator=gen) * 2 - 1
    x[:, cols] = OUTLIER_MAGNITUDE * signs + torch.randn(M, OUTLIER_COLUMNS, device="cuda", generator=gen)
    return x.half()


def rel_err(out, ref):
    return ((out.float() - ref).norm() / ref.norm()).item()


def run(shapes, tokens):
    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    for K, N in shapes:
        W = torch.randn(N, K, device="cuda", generator=gen) / K**0.5
        W16 = W.half()
        bias = torch.randn(N, device="cuda", generator=gen).half()
        CB, SCB, _ = torch.ops.llmint8.int8_vectorwise_quant(W)
        for M in tokens:
            x = activations(M, K, gen)
            ref = x.float() @ W.t() + bias.float()
            row = {"K": K, "N": N, "M": M}
            row["fp16_ms"] = bench(lambda: F.linear(x, W16, bias))
            row["fp16_err"] = rel_err(F.linear(x, W16, bias), ref)
            if M > 16 and K % 8 == 0 and N % 8 == 0:
                xq = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
                row["int_mm_ms"] = bench(lambda: torch._int_mm(xq, CB.t()))
            for t in (0.0, 6.0):
                key = f"t{int(t)}"
                row[f"{key}_ms"] = bench(lambda: torch.ops.llmint8.int8_linear(x, CB, SCB, bias, t))
                row[f"{key}_err"] = rel_err(torch.ops.llmint8.int8_linear(x, CB, SCB, bias, t), ref)
            bnb = BNB_H200.get((K, N, M))
            if bnb:
                row["bnb_h200_t0_ms"], row["bnb_h200_t6_ms"] = bnb
            rows.append(row)
            print(format_row(row), flush=True)
        del W, W16, CB, SCB
        torch.cuda.empty_cache()
    return rows


HEADER = ("| K x N | M | fp16 ms | int_mm ms | t=0 ms | t=0 vs fp16 | t=6 ms | t=6 vs fp16 | "
          "err fp16 / t=0 / t=6 | bnb H200 t=0 / t=6 ms |")


def format_row(r):
    int_mm = f"{r['int_mm_ms']:.3f}" if "int_mm_ms" in r else "-"
    bnb = f"{r['bnb_h200_t0_ms']:.3f} / {r['bnb_h200_t6_ms']:.3f}" if "bnb_h200_t0_ms" in r else "-"
    return (f"| {r['K']} x {r['N']} | {r['M']} | {r['fp16_ms']:.3f} | {int_mm} | {r['t0_ms']:.3f} | "
            f"{r['fp16_ms'] / r['t0_ms']:.2f}x | {r['t6_ms']:.3f} | {r['fp16_ms'] / r['t6_ms']:.2f}x | "
            f"{r['fp16_err']:.1e} / {r['t0_err']:.1e} / {r['t6_err']:.1e} | {bnb} |")


def driver_version() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, check=True)
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.CalledProcessError, IndexError):
        return "unknown"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="two shapes and four token counts")
    parser.add_argument("--json", help="write the rows and the environment to this file")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("bench_linear.py needs a CUDA GPU")
    shapes = SHAPES[:1] + SHAPES[5:6] if args.quick else SHAPES
    tokens = [1, 16, 128, 4096] if args.quick else TOKENS
    env = {
        "card": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "llmint8": llmint8.build_info(),
        "date": time.strftime("%Y-%m-%d"),
        "driver": driver_version(),
    }
    print(f"card: {env['card']}, driver {env['driver']}, torch {env['torch']}, {env['date']}")
    print(HEADER)
    print("|---" * (HEADER.count("|") - 1) + "|")
    rows = run(shapes, tokens)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
