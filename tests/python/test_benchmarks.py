"""The benchmark scripts run (on a tiny model, on the CPU): their figures come from the GPU machine,
but a script that no longer runs is caught here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


def test_bench_e2e_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_e2e.py"), "--device", "cpu", "--layers", "1", "--hidden", "64",
         "--intermediate", "172", "--heads", "4", "--kv-heads", "4", "--vocab", "512", "--prompt-tokens", "4",
         "--new-tokens", "4", "--batches", "1", "--modes", "eager", "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert {r["variant"] for r in data["python"]} == {"fp16", "int8 t=6", "int8 t=0"}
    assert all(r["tokens_per_s"] > 0 and r["load_s"] > 0 for r in data["python"])
    int8 = next(r for r in data["python"] if r["variant"] == "int8 t=6")
    fp16 = next(r for r in data["python"] if r["variant"] == "fp16")
    assert int8["weight_bytes"] < fp16["weight_bytes"]
    # The planted features reach every q_proj: at least one outlier column there, at most K.
    assert 1 <= int8["outlier_columns"]["prefill"]["q_proj"] <= 64 and "outlier_columns" not in fp16
    if data["cpp"]:  # the llmint8-generate installed with the package
        assert {r["variant"] for r in data["cpp"]} == {"fp16", "int8 t=6", "int8 t=0"}
        assert all(r["decode_tokens_per_s"] > 0 for r in data["cpp"])


def test_bench_e2e_runs_only_the_thresholds_asked(tmp_path):
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_e2e.py"), "--device", "cpu", "--layers", "1", "--hidden", "64",
         "--intermediate", "172", "--heads", "4", "--kv-heads", "4", "--vocab", "512", "--prompt-tokens", "4",
         "--new-tokens", "2", "--batches", "1", "--modes", "eager", "--thresholds", "6", "--skip-cpp", "--repeats", "1",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(out.read_text())
    assert [r["variant"] for r in data["python"]] == ["fp16", "int8 t=6"] and data["cpp"] == []
    assert data["summary"] == [line for line in data["summary"] if "t=6" in line] and len(data["summary"]) == 1
