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
