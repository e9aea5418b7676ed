"""Where a kernel's warps wait, from Nsight Compute's source page (SASS, CSV).

Reads the output of `ncu ... --section WarpStateStats --section SourceCounters --page source
--print-source sass --csv` (the `ncu` step of tests/run_gpu.sh writes it to ncu.log) and prints, for
each profiled kernel, its warp stall samples split into regions at the block barriers (BAR.SYNC),
then the instructions holding the most samples with their two largest stall reasons.

    python benchmarks/ncu_source_regions.py ncu.log [--kernel 0] [--top 15]
"""
import argparse
import csv
import io

SAMPLES = "Warp Stall Sampling (All Samples)"


def kernels(text):
    """(name, rows as dicts) for each kernel section of the CSV."""
    lines = text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith('"Kernel Name"')]
    for n, start in enumerate(starts):
        end = starts[n + 1] if n + 1 < len(starts) else len(lines)
        name = next(csv.reader([lines[start]]))[1]
        table = list(csv.reader(io.StringIO("\n".join(lines[start + 1:end]))))
        header = table[0]
        rows = [dict(zip(header, r)) for r in table[1:] if len(r) == len(header)]
        yield name, rows


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def report(name, rows, top):
    total = sum(number(r[SAMPLES]) for r in rows)
    print(f"{name}\n  {len(rows)} instructions, {total:.0f} stall samples")
    stalls = [k for k in rows[0] if k.startswith("stall_") and "Not Issued" not in k]
    begin, acc = 0, 0.0
    print("  regions (split after each BAR.SYNC): instructions, samples, share")
    for i, r in enumerate(rows):
        acc += number(r[SAMPLES])
        if "BAR.SYNC" in r["Source"] or i == len(rows) - 1:
            print(f"    {f'{begin}-{i}':>11s}  {acc:6.0f}  {100 * acc / max(total, 1):5.1f} %")
            begin, acc = i + 1, 0.0
    print(f"  top {top} instructions: index, samples, SASS, largest stall reasons")
    ranked = sorted(range(len(rows)), key=lambda i: -number(rows[i][SAMPLES]))[:top]
    for i in sorted(ranked):
        r = rows[i]
        reasons = sorted(((number(r[s]), s[len("stall_"):]) for s in stalls), reverse=True)[:2]
        why = " ".join(f"{s}:{v:.0f}" for v, s in reasons if v > 0)
        print(f"    {i:5d} {number(r[SAMPLES]):5.0f}  {r['Source'].strip()[:60]:60s} {why}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("log", help="ncu --page source --csv output")
    parser.add_argument("--kernel", type=int, help="only the kernel section with this index (0 = first)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    with open(args.log) as f:
        sections = list(kernels(f.read()))
    if not sections:
        raise SystemExit(f"{args.log}: no kernel section (was ncu run with --page source --csv?)")
    for n, (name, rows) in enumerate(sections):
        if args.kernel is None or n == args.kernel:
            print(f"[{n}] ", end="")
            report(name, rows, args.top)


if __name__ == "__main__":
    main()
