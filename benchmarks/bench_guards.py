"""Host time torch.compile spends checking guards before each call: Linear8bitLt against nn.Linear.

A compiled model (generate() with a static cache compiles the forward) checks the guards of its
whole module tree before every call, one token at batch 1, and the token waits for it. dynamo skips
a module whose __dict__ is unchanged and holds only immutable values; Linear8bitLt's compiled
forward reads plain nn.Parameter views of the weight's codes and scales and a float threshold for
that reason (python/llmint8/nn/modules.py). This measures, for a stack of --blocks Llama-like
blocks (seven small Linear layers each: the sizes do not matter to the guards), compiled with
fullgraph=True:
- lookup: the profiler's "TorchDynamo Cache Lookup" time per call (the guard check);
- call: the whole compiled call, guard check, graph and kernels.
Variants in the same run: nn.Linear in float, Linear8bitLt at thresholds 0 and 6. The ratio is
the variant's lookup over nn.Linear's (1.00x: no extra host time per call). Runs on the CPU or CUDA.

    python benchmarks/bench_guards.py [--blocks 32] [--device cpu] [--calls 300]
"""

import argparse
import time

import torch
from torch.profiler import profile

from llmint8.nn import Linear8bitLt

HIDDEN = 64


class Block(torch.nn.Module):
    """Seven Linear layers wired like a Llama block (q, k, v, o; gate, up, down), no attention."""

    def __init__(self, make_linear):
        super().__init__()
        self.q, self.k, self.v, self.o = (make_linear(HIDDEN, HIDDEN) for _ in range(4))
        self.gate, self.up = make_linear(HIDDEN, 2 * HIDDEN), make_linear(HIDDEN, 2 * HIDDEN)
        self.down = make_linear(2 * HIDDEN, HIDDEN)

    def forward(self, x):
        x = x + self.o(self.q(x) * self.k(x) + self.v(x))
        return x + self.down(self.gate(x) * self.up(x))


def build(variant: str, blocks: int, device: str, dtype: torch.dtype) -> torch.nn.Module:
    if variant == "nn.Linear":
        make = lambda i, o: torch.nn.Linear(i, o, bias=False)  # noqa: E731
    else:
        threshold = float(variant.split("=")[1])
        make = lambda i, o: Linear8bitLt(i, o, bias=False, has_fp16_weights=False, threshold=threshold)  # noqa: E731
    torch.manual_seed(0)
    model = torch.nn.Sequential(*[Block(make) for _ in range(blocks)])
    return model.to(device).to(dtype)  # the move quantizes the 8-bit layers; their codes stay int8


def measure(model, x, calls: int):
    compiled = torch.compile(model, fullgraph=True)
    with torch.no_grad():
        for _ in range(3):
            compiled(x)  # compile, then warm
        with profile() as prof:
            for _ in range(calls):
                compiled(x)
        lookup_us = sum(e.cpu_time_total for e in prof.key_averages() if "Cache Lookup" in e.key) / calls
        sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            compiled(x)
        sync()
    return lookup_us, (time.perf_counter() - start) / calls * 1e6


def stack_arguments(description: str, calls: int, calls_help: str):
    """The block-stack benchmarks' command line (--blocks, --device, --calls), their input row
    (fp16 on CUDA, fp32 on the CPU) and the device's name: (args, x, where)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=32, help="Llama-like blocks of seven Linear layers")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calls", type=int, default=calls, help=calls_help)
    args = parser.parse_args()
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    x = torch.randn(1, HIDDEN, device=args.device, dtype=dtype)
    return args, x, torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"


def main():
    args, x, where = stack_arguments(__doc__, 300, "timed calls per variant")
    dtype = x.dtype
    print(f"# {args.blocks} blocks x 7 layers, {dtype}, {where}, torch {torch.__version__}")
    print(f"{'variant':14s} {'lookup us':>10s} {'call us':>9s} {'lookup vs nn.Linear':>20s}")
    base = None
    for variant in ("nn.Linear", "int8 t=0", "int8 t=6"):
        torch._dynamo.reset()
        lookup, call = measure(build(variant, args.blocks, args.device, dtype), x, args.calls)
        base = base or lookup
        print(f"{variant:14s} {lookup:10.1f} {call:9.1f} {lookup / base:19.2f}x", flush=True)


if __name__ == "__main__":
    main()
