"""LibTorch programs find the installed llmint8 with find_package(llmint8): one links only
llmint8::llmint8 (no sentencepiece, no nlohmann-json reach it), one llmint8::llmint8_models. Torch is
found through the torch this Python imports: only llmint8's prefix is given."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import llmint8

CONSUMER = Path(__file__).resolve().parent.parent / "cpp" / "consumer"


@pytest.mark.skipif(shutil.which("cmake") is None, reason="needs cmake")
def test_find_package_llmint8_builds_and_runs(tmp_path):
    build = tmp_path / "build"
    env = dict(os.environ, CMAKE_BUILD_PARALLEL_LEVEL="2")
    subprocess.run(["cmake", "-S", str(CONSUMER), "-B", str(build), "-G", "Unix Makefiles", f"-DCMAKE_PREFIX_PATH={llmint8.cmake_prefix_path}",
                    f"-DPython3_EXECUTABLE={sys.executable}", "-DCMAKE_BUILD_TYPE=Release"],
                   check=True, capture_output=True, env=env)
    subprocess.run(["cmake", "--build", str(build)], check=True, capture_output=True, env=env)
    result = subprocess.run([str(build / "consumer")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"llmint8 {llmint8.__version__} relative error" in result.stdout
    result = subprocess.run([str(build / "consumer_models"), str(tmp_path / "model.safetensors")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reloaded model agrees: yes" in result.stdout

    # The ops-only program: no header it compiled and no library it linked is sentencepiece's,
    # nlohmann-json's or llmint8_models'.
    objects = build / "CMakeFiles" / "consumer.dir"
    headers = (objects / "main.cpp.o.d").read_text()
    link = (objects / "link.txt").read_text()
    assert "llmint8/include/llmint8/llmint8.h" in headers
    for name in ("nlohmann", "sentencepiece", "llmint8/models"):
        assert name not in headers, name
    for name in ("sentencepiece", "llmint8_models", "json"):
        assert name not in link, name
    needed = subprocess.run(["readelf", "-d", str(build / "consumer")], capture_output=True, text=True).stdout
    assert "libllmint8.so" in needed and not re.search(r"sentencepiece|llmint8_models", needed)
