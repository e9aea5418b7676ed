"""Host time of an eager forward: Linear8bitLt against nn.Linear, per layer call.

Eager generation at batch 1 waits on the host: each of a 7B model's 224 Linear calls a token is
Python, the dispatcher and a kernel launch, and the GPU work is shorter than that. This runs the
same stack of Llama-like blocks as bench_guards.py (seven Linear layers a block, hidden size 64 so
that the kernels are shorter than the host's work) eagerly and reports the wall time of a forward
divided by its layer calls, under torch.no_grad() (as generate() runs) and with grad mode on (a
plain model(x) call). Variants in the same run: nn.Linear in float, Linear8bitLt at thresholds 0
and 6; the ratio is nn.Linear's time over the variant's (above 1.00x: less host time than fp16).

    python benchmarks/bench_host.py [--blocks 32] [--device cpu] [--calls 200]
"""

import contextlib
import time

import torch

from bench_guards import HIDDEN, build, stack_arguments


def per_layer_us(model, x, calls: int, grad: bool) -> float:
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    layers = sum(1 for m in model.modules() if hasattr(m, "in_features"))
    with contextlib.nullcontext() if grad else torch.no_grad():
        for _ in range(10):
            model(x)
        best = float("inf")
        for _ in range(3):  # the best of three rounds: host timings have one-sided noise
            sync()
            start = time.perf_counter()
            for _ in range(calls):
                model(x)
            sync()
            best = min(best, (time.perf_counter() - start) / (calls * layers) * 1e6)
    return best


def main():
    args, x, where = stack_arguments(__doc__, 200, "timed forwards per round (three rounds)")
    dtype = x.dtype
    print(f"# eager, {args.blocks} blocks x 7 layers of {HIDDEN}-{2 * HIDDEN} features, one row, {dtype}, {where}, "
          f"torch {torch.__version__}; us per layer call, best of 3 rounds")
    print(f"{'variant':10s} {'no_grad us':>11s} {'vs nn.Linear':>13s} {'grad us':>9s} {'vs nn.Linear':>13s}")
    base = {}
    for variant in ("nn.Linear", "int8 t=0", "int8 t=6"):
        model = build(variant, args.blocks, args.device, dtype)
        times = {grad: per_layer_us(model, x, args.calls, grad) for grad in (False, True)}
        base = base or times
        print(f"{variant:10s} {times[False]:11.2f} {base[False] / times[False]:12.2f}x "
              f"{times[True]:9.2f} {base[True] / times[True]:12.2f}x", flush=True)


if __name__ == "__main__":
    main()
