"""C++ and Python read and write the same checkpoints: a layer saved on one side loads on the other
and gives the same outputs. Drives tests/cpp/checkpoint_tool.cpp (built with the Catch2 suite)."""

import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmint8.nn import Linear8bitLt

from conftest import make_activations

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMINT8_BUILD_DIR", "build"))  # relative to the repository, as setup.py reads it
TOOL = (BUILD if BUILD.is_absolute() else ROOT / BUILD) / "tests" / "cpp" / "llmint8_checkpoint_tool"

if not TOOL.exists():
    if os.environ.get("LLMINT8_REQUIRE_CPP_TOOL") == "1":
        raise RuntimeError(f"{TOOL} was not built (LLMINT8_BUILD_TESTS=1 builds it)")
    pytest.skip(f"{TOOL} not built (build with LLMINT8_BUILD_TESTS=1)", allow_module_level=True)


def _tool(*args):
    result = subprocess.run([str(TOOL), *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_python_checkpoint_runs_in_cpp(threshold, tmp_path):
    torch.manual_seed(0)
    layer = Linear8bitLt(48, 24, has_fp16_weights=False, threshold=threshold).to("cpu")
    save_file({k: v.contiguous() for k, v in layer.state_dict().items()}, str(tmp_path / "layer.safetensors"))
    x = make_activations((5, 48), torch.float32, "cpu", outlier_cols=[4, 30])
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    _tool("run", tmp_path / "layer.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors", threshold)
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["y"], layer(x))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_cpp_checkpoint_runs_in_python(threshold, tmp_path):
    _tool("make", tmp_path / "layer.safetensors", 48, 24, threshold, 7)
    state = load_file(str(tmp_path / "layer.safetensors"))
    assert state["weight"].dtype == torch.int8 and state["SCB"].dtype == torch.float32
    assert state["weight_format"].dtype == torch.uint8 and int(state["weight_format"]) == 0
    layer = Linear8bitLt(48, 24, has_fp16_weights=False, threshold=threshold)
    layer.load_state_dict(state)
    x = make_activations((5, 48), torch.float32, "cpu", outlier_cols=[11])
    save_file({"x": x}, str(tmp_path / "x.safetensors"))
    _tool("run", tmp_path / "layer.safetensors", tmp_path / "x.safetensors", tmp_path / "y.safetensors", threshold)
    assert torch.equal(load_file(str(tmp_path / "y.safetensors"))["y"], layer(x))
