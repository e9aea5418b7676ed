"""The benchmark scripts run (on a tiny model, on the CPU): their figures come from the GPU machine,
but a script that no longer runs is caught here."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("transformers")


def run_bench_e2e(tmp_path, *args):
    """bench_e2e.py on a one-layer 64-wide model on the CPU, eager, batch 1, with args added; its JSON."""
    out = tmp_path / "e2e.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_e2e.py"), "--device", "cpu", "--layers", "1", "--hidden", "64",
         "--intermediate", "172", "--heads", "4", "--kv-heads", "4", "--vocab", "512", "--prompt-tokens", "4",
         "--batches", "1", "--modes", "eager", *args, "--json", str(out)],
        capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(out.read_text())


def test_bench_e2e_runs_on_a_tiny_model(tmp_path):
    data = run_bench_e2e(tmp_path, "--new-tokens", "4")
    assert {r["variant"] for r in data["python"]} == {"fp16", "int8 t=6", "int8 t=0"}
    assert all(r["tokens_per_s"] > 0 and r["load_s"] > 0 for r in data["python"])
    # Decode alone, the 3 tokens after the first (NaN, failing here, if fewer than 2 were timed).
    assert all(r["decode_tokens_per_s"] > 0 for r in data["python"])
    assert "decode alone" in data["summary"][0]
    # Every timed run kept (3 repeats by default), and the ratio of each run pair in the summary.
    assert all(len(r["tokens_per_s_each"]) == 3 and min(r["tokens_per_s_each"]) <= r["tokens_per_s"]
               <= max(r["tokens_per_s_each"]) and len(r["decode_tokens_per_s_each"]) == 3 for r in data["python"])
    assert data["summary"][0].count("x, ") == 2
    int8 = next(r for r in data["python"] if r["variant"] == "int8 t=6")
    fp16 = next(r for r in data["python"] if r["variant"] == "fp16")
    assert int8["weight_bytes"] < fp16["weight_bytes"]
    # The planted features reach every q_proj: at least one outlier column there, at most K.
    assert 1 <= int8["outlier_columns"]["prefill"]["q_proj"] <= 64 and "outlier_columns" not in fp16
    if data["cpp"]:  # the llmint8-generate installed with the package
        assert {r["variant"] for r in data["cpp"]} == {"fp16", "int8 t=6", "int8 t=0"}
        assert all(r["decode_tokens_per_s"] > 0 for r in data["cpp"])


def test_bench_e2e_runs_only_the_thresholds_asked(tmp_path):
    data = run_bench_e2e(tmp_path, "--new-tokens", "2", "--thresholds", "6", "--skip-cpp", "--repeats", "1")
    assert [r["variant"] for r in data["python"]] == ["fp16", "int8 t=6"] and data["cpp"] == []
    assert data["summary"] == [line for line in data["summary"] if "t=6" in line] and len(data["summary"]) == 1


def test_bench_e2e_times_the_decode_forward_alone(tmp_path):
    data = run_bench_e2e(tmp_path, "--new-tokens", "2", "--thresholds", "6", "--skip-cpp", "--repeats", "2",
                         "--decode-forwards", "3")
    for row in data["python"]:
        assert len(row["forward_ms_each"]) == 2 and all(ms > 0 for ms in row["forward_ms_each"])
        assert row["forward_ms"] in row["forward_ms_each"]
    assert [line for line in data["summary"] if "one-token forward alone" in line][0].count("x, ") == 1
    bad = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_e2e.py"), "--device", "cpu",
                          "--decode-forwards", "-1"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "--decode-forwards" in bad.stderr


def test_bench_e2e_runs_the_cpp_rows_alone(tmp_path):
    from llmint8._cli import tool_path
    if not Path(tool_path("llmint8-generate")).exists():
        pytest.skip("no llmint8-generate installed with the package")
    data = run_bench_e2e(tmp_path, "--new-tokens", "3", "--thresholds", "6", "--skip-python")
    assert data["python"] == [] and [r["variant"] for r in data["cpp"]] == ["fp16", "int8 t=6"]
    assert data["summary"] == [line for line in data["summary"] if line.startswith("c++ ")] and len(data["summary"]) == 1


def test_bench_e2e_profiles_the_cpp_runs(tmp_path):
    from llmint8._cli import tool_path
    if not Path(tool_path("llmint8-generate")).exists():
        pytest.skip("no llmint8-generate installed with the package")
    data = run_bench_e2e(tmp_path, "--new-tokens", "3", "--thresholds", "6", "--repeats", "1", "--cpp-profile")
    assert [r["variant"] for r in data["cpp"]] == ["fp16", "int8 t=6"]
    for row in data["cpp"]:
        profile = row["profile"]
        assert profile["generated_tokens"] == 3 and profile["total_us"] > 0 and 0 < len(profile["table"]) <= 40
    int8 = data["cpp"][1]["profile"]["table"]
    assert any("llmint8" in r["name"] for r in int8)  # on the CPU the op itself, on CUDA its kernels


def test_bench_guards_runs_on_the_cpu():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_guards.py"), "--device", "cpu",
                             "--blocks", "1", "--calls", "3"], capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("nn.Linear", "int8"))]
    assert [r[0] for r in rows] == ["nn.Linear", "int8", "int8"] and rows[0][-1] == "1.00x"
    assert all(float(r[-3]) > 0 for r in rows)  # lookup us


def test_bench_host_runs_on_the_cpu():
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_host.py"), "--device", "cpu",
                             "--blocks", "1", "--calls", "3"], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith(("nn.Linear", "int8"))]
    assert [r[0] for r in rows] == ["nn.Linear", "int8", "int8"] and rows[0][2] == rows[0][-1] == "1.00x"
    assert all(float(r[-4]) > 0 and float(r[-2]) > 0 for r in rows)  # us per layer call, both grad modes


def _sass_line(address, text, write_barrier=7, wait_mask=0):
    control = (write_barrier << 5) | (7 << 8) | (wait_mask << 11)
    return [f"        /*{address:04x}*/                   {text} ;   /* 0x0000000000000000 */",
            f"                                                      /* 0x{control << 41:016x} */"]


def test_sass_waits_names_the_first_waiting_instruction(tmp_path):
    sass = tmp_path / "k.sass"
    sass.write_text("\n".join(
        _sass_line(0x10, "LDG.E.S8.CONSTANT R7, desc[UR12][R6.64]", write_barrier=5)
        + _sass_line(0x20, "IMAD.MOV.U32 R6, RZ, RZ, R46", wait_mask=0b000010)  # waits on sb1: not it
        + _sass_line(0x30, "HADD2.F32 R7, -RZ, R6.H0_H0", wait_mask=0b100000)  # waits on sb5
        + _sass_line(0x40, "LDG.E R9, desc[UR12][R8.64]")) + "\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "sass_waits.py"), str(sass), "LDG"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "sb5 -> first wait at 00030 HADD2.F32" in lines[0]
    assert "(no write scoreboard)" in lines[1] and len(lines) == 2


def test_ncu_source_regions_splits_samples_at_barriers(tmp_path):
    header = ['"Address"', '"Source"', '"Warp Stall Sampling (All Samples)"', '"stall_long_sb"', '"stall_barrier"',
              '"stall_long_sb (Not Issued)"']
    rows = [("0x10", "LDG.E R4, desc[UR8][R2.64]", 1, 0, 0), ("0x20", "HADD2.F32 R5, -RZ, R4.H0_H0", 30, 29, 0),
            ("0x30", "BAR.SYNC.DEFER_BLOCKING 0x0", 9, 0, 9), ("0x40", "IDP.4A.S8.S8 R8, R8, R16, R51", 60, 55, 0)]
    lines = ['"Kernel Name","void k(int)",', ",".join(header)]
    lines += [",".join(f'"{v}"' for v in (a, s, n, lsb, bar, 0)) for a, s, n, lsb, bar in rows]
    log = tmp_path / "ncu.log"
    log.write_text("==PROF== Connected\n" + "\n".join(lines) + "\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ncu_source_regions.py"), str(log), "--top", "2"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "4 instructions, 100 stall samples" in out
    regions = [line.split()[:2] for line in out.splitlines() if line.strip().startswith(("0-", "3-"))]
    assert regions == [["0-2", "40"], ["3-3", "60"]]  # up to and including the barrier, then the rest
    top = [line for line in out.splitlines() if "long_sb:" in line]
    assert len(top) == 2 and "IDP.4A" in top[1] and "long_sb:55" in top[1] and "long_sb:29" in top[0]


def test_ncu_source_regions_refuses_a_log_without_the_source_page(tmp_path):
    log = tmp_path / "ncu.log"
    log.write_text("==PROF== Disconnected\n")
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "ncu_source_regions.py"), str(log)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "no kernel section" in result.stderr and str(log) in result.stderr
