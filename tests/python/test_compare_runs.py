"""benchmarks/compare_runs.py on hand-made bench_linear.py results: medians, ratios, and a refusal
to compare runs made under different set-ups."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "compare_runs.py"


def write_run(path, t0_ms, t6_ms, outlier_columns=8):
    env = {"card": "test card", "timing": "CUDA graph replay", "outlier_columns": outlier_columns}
    rows = [{"K": 64, "N": 32, "M": 1, "dtype": "fp16", "float_ms": 0.010, "t0_ms": t0_ms, "t6_ms": t6_ms}]
    path.write_text(json.dumps({"env": env, "rows": rows}))
    return str(path)


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_compare_takes_each_sides_median_and_their_ratio(tmp_path):
    a = [write_run(tmp_path / f"a{i}.json", t0, t6) for i, (t0, t6) in enumerate([(0.004, 0.006), (0.006, 0.008),
                                                                                  (0.005, 0.007)])]
    b = [write_run(tmp_path / f"b{i}.json", t0, t6) for i, (t0, t6) in enumerate([(0.010, 0.014), (0.010, 0.014)])]
    out = tmp_path / "ab.json"
    result = run("--a", *a, "--b", *b, "--labels", "branch,main", "--json", str(out))
    assert result.returncode == 0, result.stderr
    row = json.loads(out.read_text())["rows"][0]
    assert row["a_t0_ms"] == pytest.approx(0.005) and row["a_t0_spread_ms"] == pytest.approx(0.002)
    assert row["b_t6_ms"] == pytest.approx(0.014) and row["b_t0_spread_ms"] == 0.0
    assert "| 64 x 32 | fp16 | 1 | 10.0 | 5.0 [2.0] | 10.0 [0.0] | 2.00 | 7.0 [2.0] | 14.0 [0.0] | 2.00 |" in result.stdout
    assert "A = branch (3 runs), B = main (2 runs)" in result.stdout


def test_compare_refuses_runs_with_other_outlier_counts(tmp_path):
    a = write_run(tmp_path / "a.json", 0.005, 0.007)
    b = write_run(tmp_path / "b.json", 0.005, 0.020, outlier_columns=1080)
    result = run("--a", a, "--b", b)
    assert result.returncode != 0 and "outlier_columns" in result.stderr and "1080" in result.stderr


def test_compare_refuses_a_bad_labels_argument(tmp_path):
    a = write_run(tmp_path / "a.json", 0.005, 0.007)
    result = run("--a", a, "--b", a, "--labels", "only-one")
    assert result.returncode != 0 and "--labels" in result.stderr


def write_e2e_run(path, cpp, python_eager=None, layers=8):
    """A bench_e2e.py result: C++ decode tokens/s by variant (and Python eager batch-1 tokens/s)."""
    env = {"card": "test card", "args": {"layers": layers, "hidden": 64, "intermediate": 172, "new_tokens": 4}}
    rows = [{"variant": v, "decode_tokens_per_s": t} for v, t in cpp.items()]
    py = [{"variant": v, "mode": "eager", "batch": 1, "tokens_per_s": t} for v, t in (python_eager or {}).items()]
    path.write_text(json.dumps({"env": env, "python": py, "cpp": rows, "summary": []}))
    return str(path)


def test_compare_e2e_runs_by_row_and_variant(tmp_path):
    a = [write_e2e_run(tmp_path / f"a{i}.json", {"fp16": 500.0, "int8 t=6": t}, {"fp16": 100.0, "int8 t=6": 120.0})
         for i, t in enumerate([900.0, 880.0])]
    b = [write_e2e_run(tmp_path / f"b{i}.json", {"fp16": 520.0, "int8 t=6": 600.0}) for i in range(2)]
    out = tmp_path / "ab.json"
    result = run("--a", *a, "--b", *b, "--labels", "branch,main", "--json", str(out))
    assert result.returncode == 0, result.stderr
    rows = {(r["row"], r["variant"]): r for r in json.loads(out.read_text())["rows"]}
    t6 = rows[("c++ decode", "int8 t=6")]
    assert t6["a_tokens_per_s"] == pytest.approx(890.0) and t6["a_spread"] == pytest.approx(20.0)
    assert t6["a_vs_fp16"] == pytest.approx(1.78) and t6["b_vs_fp16"] == pytest.approx(600 / 520)
    assert "| c++ decode | int8 t=6 | 890.0 [20.0] | 600.0 [0.0] | 1.48 | 1.78x | 1.15x |" in result.stdout
    # Rows only one side ran (B had no Python rows) are left out.
    assert set(rows) == {("c++ decode", "fp16"), ("c++ decode", "int8 t=6")}


def test_compare_refuses_e2e_runs_of_other_models(tmp_path):
    a = write_e2e_run(tmp_path / "a.json", {"fp16": 500.0})
    b = write_e2e_run(tmp_path / "b.json", {"fp16": 900.0}, layers=32)
    result = run("--a", a, "--b", b)
    assert result.returncode != 0 and "layers = 32" in result.stderr
