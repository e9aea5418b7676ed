"""Compares bench_linear.py runs, or bench_e2e.py runs, of two builds made in the same GPU call
(tests/run_gpu.sh's `ab` and `ab_e2e` steps: this tree's build and another tree's, taking turns
run after run, so that a drift during the call falls on both).

    python benchmarks/compare_runs.py --a a1.json a2.json --b b1.json b2.json \
        [--labels branch,main] [--json ab.json]

bench_linear.py runs: for each layer, size and dtype, fp16 time (median over all runs), then each
build's t=0 and t=6 time (median over its runs, with the spread max - min in brackets) and B's
time over A's (above 1: A is faster).
bench_e2e.py runs: for each row (C++ decode, Python generate by mode and batch) and variant, each
build's tokens/s (median [spread]), A's over B's (above 1: A is faster), and each build's ratio to
its own fp16 row.
"""

import argparse
import json
import statistics
import sys


# What must agree between the runs compared (else their times measure different things).
SAME_SETUP = ("card", "timing", "outlier_columns")


def load_rows(paths, env=None):
    """key -> list of rows, one per run; and the runs' environment (each checked against `env`,
    or the first run's)."""
    runs = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        run_env = data.get("env") or {}
        env = env or run_env
        for field in SAME_SETUP:
            if run_env.get(field) != env.get(field):
                sys.exit(f"compare_runs.py: {path} has {field} = {run_env.get(field)!r}, "
                         f"the other runs {env.get(field)!r}")
        for row in data["rows"]:
            runs.setdefault((row["K"], row["N"], row["M"], row["dtype"]), []).append(row)
    return runs, env


def median_spread(values):
    return statistics.median(values), max(values) - min(values)


def summary(rows, key):
    return median_spread([r[key] for r in rows])


def both_sides(load, a_paths, b_paths, what):
    """Each side's runs by key (B's set-up checked against A's) and the keys both hold."""
    a, env = load(a_paths)
    b, _ = load(b_paths, env)
    common = [k for k in a if k in b]
    if not common:
        sys.exit(f"compare_runs.py: the two sides share no {what}")
    return a, b, env, common


def compare(a_paths, b_paths, labels):
    a, b, env, common = both_sides(load_rows, a_paths, b_paths, "(K, N, M, dtype) row")
    name_a, name_b = labels
    print(f"card: {env.get('card')}, {env.get('timing')}, {env.get('outlier_columns')} outlier columns; "
          f"A = {name_a} ({len(a_paths)} runs), B = {name_b} ({len(b_paths)} runs); times in us, median [spread]")
    print(f"| K x N | dtype | M | fp16 | {name_a} t=0 | {name_b} t=0 | B / A t=0 | {name_a} t=6 | {name_b} t=6 | "
          "B / A t=6 |")
    print("|---" * 10 + "|")
    out = []
    for key in common:
        K, N, M, dtype = key
        fp16 = statistics.median([r["float_ms"] for r in a[key] + b[key]])
        row = {"K": K, "N": N, "M": M, "dtype": dtype, "float_ms": fp16}
        cells = []
        for t in ("t0", "t6"):
            (ta, sa), (tb, sb) = summary(a[key], f"{t}_ms"), summary(b[key], f"{t}_ms")
            row.update({f"a_{t}_ms": ta, f"b_{t}_ms": tb, f"a_{t}_spread_ms": sa, f"b_{t}_spread_ms": sb})
            cells.append(f"{ta * 1e3:.1f} [{sa * 1e3:.1f}] | {tb * 1e3:.1f} [{sb * 1e3:.1f}] | {tb / ta:.2f}")
        print(f"| {K} x {N} | {dtype} | {M} | {fp16 * 1e3:.1f} | {cells[0]} | {cells[1]} |")
        out.append(row)
    return {"env": env, "a": name_a, "b": name_b, "rows": out}


# bench_e2e.py: the arguments that must agree (the model and the tokens generated).
SAME_E2E_ARGS = ("layers", "hidden", "intermediate", "heads", "kv_heads", "vocab", "outlier_features", "prompt_tokens",
                 "new_tokens")


def e2e_setup(env):
    """What must agree between bench_e2e.py runs: the card and the model's arguments."""
    args = env.get("args", {})
    return {"card": env.get("card"), **{name: args.get(name) for name in SAME_E2E_ARGS}}


def load_e2e(paths, env=None):
    """(row, variant) -> tokens/s of each run; and the runs' environment (checked as load_rows does)."""
    runs = {}
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        run_env = data["env"]
        env = env or run_env
        mine, theirs = e2e_setup(run_env), e2e_setup(env)
        for field, value in mine.items():
            if value != theirs[field]:
                sys.exit(f"compare_runs.py: {path} has {field} = {value!r}, the other runs {theirs[field]!r}")
        for row in data["cpp"]:
            runs.setdefault(("c++ decode", row["variant"]), []).append(row["decode_tokens_per_s"])
        for row in data["python"]:
            runs.setdefault((f"python {row['mode']} batch {row['batch']}", row["variant"]), []).append(row["tokens_per_s"])
    return runs, env


def compare_e2e(a_paths, b_paths, labels):
    a, b, env, common = both_sides(load_e2e, a_paths, b_paths, "(row, variant)")
    name_a, name_b = labels
    args = env.get("args", {})
    print(f"card: {env.get('card')}, {args.get('layers')} layers of {args.get('hidden')} x {args.get('intermediate')}, "
          f"{args.get('prompt_tokens')} prompt + {args.get('new_tokens')} new tokens; A = {name_a} ({len(a_paths)} runs), "
          f"B = {name_b} ({len(b_paths)} runs); tokens/s, median [spread]")
    print(f"| row | variant | {name_a} | {name_b} | A / B | {name_a} vs fp16 | {name_b} vs fp16 |")
    print("|---" * 7 + "|")
    median = {side: {k: statistics.median(v) for k, v in runs.items()} for side, runs in (("a", a), ("b", b))}
    out = []
    for key in common:
        row_name, variant = key
        (ta, sa), (tb, sb) = median_spread(a[key]), median_spread(b[key])
        vs = [m[key] / m[(row_name, "fp16")] if (row_name, "fp16") in m else None for m in (median["a"], median["b"])]
        out.append({"row": row_name, "variant": variant, "a_tokens_per_s": ta, "b_tokens_per_s": tb,
                    "a_spread": sa, "b_spread": sb, "a_vs_fp16": vs[0], "b_vs_fp16": vs[1]})
        vs_cells = " | ".join("-" if v is None else f"{v:.2f}x" for v in vs)
        print(f"| {row_name} | {variant} | {ta:.1f} [{sa:.1f}] | {tb:.1f} [{sb:.1f}] | {ta / tb:.2f} | {vs_cells} |")
    return {"env": env, "a": name_a, "b": name_b, "rows": out}


def is_e2e(path):
    with open(path) as f:
        return "cpp" in json.load(f)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--a", nargs="+", required=True, help="bench_linear.py (or bench_e2e.py) --json files of build A")
    parser.add_argument("--b", nargs="+", required=True, help="the same kind of files of build B")
    parser.add_argument("--labels", default="A,B", help="names of the two builds, comma-separated")
    parser.add_argument("--json", help="write the compared rows to this file")
    args = parser.parse_args()
    labels = args.labels.split(",")
    if len(labels) != 2:
        sys.exit("compare_runs.py: --labels takes two names, e.g. branch,main")
    result = (compare_e2e if is_e2e(args.a[0]) else compare)(args.a, args.b, labels)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
