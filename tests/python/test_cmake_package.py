"""A LibTorch program finds the installed llmint8 with find_package(llmint8) and runs an op."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch.utils

import llmint8

CONSUMER = Path(__file__).resolve().parent.parent / "cpp" / "consumer"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_find_package_llmint8_builds_and_runs(tmp_path):
    prefix = f"{llmint8.cmake_prefix_path};{torch.utils.cmake_prefix_path}"
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2")
    subprocess.run(["cmake", "-S", str(CONSUMER), "-B", str(tmp_path), f"-DCMAKE_PREFIX_PATH={prefix}",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, env=env)
    subprocess.run(["cmake", "--build", str(tmp_path)], check=True, capture_output=True, env=env)
    result = subprocess.run([str(tmp_path / "consumer")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"llmint8 {llmint8.__version__} relative error" in result.stdout
