"""Builds libllmint8 and llmint8._C with CMake and installs the Python package.

    pip install .                                      # isolated build (fetches torch==2.11.0)
    pip install --no-build-isolation --no-deps .       # build against the torch already installed

Environment:
    LLMINT8_BUILD_DIR    CMake build folder (default: build/ in the repository), kept between builds
    LLMINT8_BUILD_TESTS  1 to build the Catch2 suite too (run it with ctest --test-dir build)
    LLMINT8_CMAKE_ARGS   extra arguments for the CMake configure step
"""

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


class CMakeBuild(build_ext):
    """Configures, builds and installs the CMake project into the package folder."""

    def build_extension(self, ext: Extension) -> None:
        build_dir = Path(os.environ.get("LLMINT8_BUILD_DIR", ROOT / "build")).resolve()
        package_dir = Path(self.get_ext_fullpath(ext.name)).parent.resolve()
        generator = ["-G", "Ninja"] if _has_ninja() else []
        configure = [
            "cmake", "-S", str(ROOT), "-B", str(build_dir), *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            f"-DPython3_EXECUTABLE={sys.executable}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DLLMINT8_BUILD_TESTS={'ON' if os.environ.get('LLMINT8_BUILD_TESTS') == '1' else 'OFF'}",
            *shlex.split(os.environ.get("LLMINT8_CMAKE_ARGS", "")),
        ]
        jobs = os.environ.get("CMAKE_BUILD_PARALLEL_LEVEL", str(os.cpu_count() or 2))
        subprocess.check_call(configure)
        subprocess.check_call(["cmake", "--build", str(build_dir), "--parallel", jobs])
        # The staging folder outlives builds: files an older build installed (a moved header)
        # would otherwise reach the wheel.
        for folder in ("bin", "include", "lib", "share"):
            shutil.rmtree(package_dir / folder, ignore_errors=True)
        subprocess.check_call(["cmake", "--install", str(build_dir), "--prefix", str(package_dir)])


def _has_ninja() -> bool:
    try:
        subprocess.check_call(["ninja", "--version"], stdout=subprocess.DEVNULL)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


setup(
    name="llmint8",
    version="0.1.0",
    description="LLM.int8() 8-bit inference for PyTorch: custom ops, Linear8bitLt, C++ and CUDA",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    package_dir={"": "python"},
    packages=["llmint8", "llmint8.nn"],
    ext_modules=[CMakeExtension("llmint8._C")],
    cmdclass={"build_ext": CMakeBuild},
    install_requires=["torch==2.11.0"],
    entry_points={"console_scripts": ["llmint8-generate=llmint8._cli:generate_main"]},
    zip_safe=False,
)
