"""Which instruction first waits for each global load of a kernel (SASS scoreboards, sm_70 and later).

A load sets a scoreboard (a counter) when issued; a later instruction that needs its result, or
any other load's on the same scoreboard, waits for the counter to drain. ptxas has six of them
and shares them between loads, so a warp can end up waiting for a DRAM load it does not need
yet. This prints, for every instruction matching the given patterns, its write scoreboard and
the first instruction after it, in program order, that waits on that scoreboard (not following
branches: a wait on a path rarely taken, such as a division's slow-path CALL, shows too).

    nvcc -std=c++17 -O3 --expt-relaxed-constexpr -gencode arch=compute_90,code=sm_90 -I. \
        -c cuda/backend_gemv_fused.cu -o /tmp/gf.o
    cuobjdump -sass -fun '<mangled kernel name>' /tmp/gf.o > /tmp/gf.sass
    # (pip: nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm, which cuobjdump runs: put their bin/ on PATH)
    python benchmarks/sass_waits.py /tmp/gf.sass LDG.E.S8 "LDG.E.NA.128"
"""

import argparse
import re

INSTRUCTION = re.compile(r"\s*/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;\s*/\* (0x[0-9a-f]{16}) \*/")
CONTROL = re.compile(r"/\* (0x[0-9a-f]{16}) \*/")


def instructions(lines):
    """(address, text, control bits) of each instruction; the control bits are the top 23 bits of
    the instruction's second 64-bit word: stall 0-3, yield 4, write barrier 5-7, read barrier
    8-10, wait mask 11-16 (7 means no barrier)."""
    for i, line in enumerate(lines[:-1]):
        m = INSTRUCTION.match(line)
        second = CONTROL.search(lines[i + 1])
        if m and second:
            yield int(m.group(1), 16), m.group(2), int(second.group(1), 16) >> 41


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sass", help="cuobjdump -sass output of one kernel")
    parser.add_argument("patterns", nargs="+", help="substrings of the instructions to follow (e.g. LDG)")
    args = parser.parse_args()
    with open(args.sass) as f:
        code = list(instructions(f.read().splitlines()))
    for index, (address, text, control) in enumerate(code):
        if not any(p in text for p in args.patterns):
            continue
        barrier = (control >> 5) & 7
        if barrier == 7:
            print(f"{address:05x} {text[:64]:64s} (no write scoreboard)")
            continue
        waiter = next(((a, t) for a, t, c in code[index + 1:] if (c >> 11) & 0x3F & (1 << barrier)), None)
        where = f"{waiter[0]:05x} {waiter[1][:48]}" if waiter else "none"
        print(f"{address:05x} {text[:64]:64s} sb{barrier} -> first wait at {where}")


if __name__ == "__main__":
    main()
