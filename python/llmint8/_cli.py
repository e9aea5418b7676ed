"""Console-script launchers for the native tools installed with the package."""

import importlib.util
import os
import sys


def tool_path(name: str) -> str:
    """Path of a native tool installed in the package's bin/ folder."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", name)


def _package_folders(name: str):
    spec = importlib.util.find_spec(name)  # found, not imported: the launcher stays fast
    return list(spec.submodule_search_locations or []) if spec is not None else []


def native_env(environ=None) -> dict:
    """environ (default: os.environ) with the library folders of the torch this Python imports, and
    of NVIDIA's CUDA wheels beside it, ahead of LD_LIBRARY_PATH. The native tools link LibTorch;
    their RUNPATH finds it only where torch sits beside llmint8 in one site-packages, not after
    pip install --target or --prefix, nor in a venv that sees a system torch."""
    env = dict(os.environ if environ is None else environ)
    folders = [os.path.join(p, "lib") for p in _package_folders("torch")]
    for nvidia in _package_folders("nvidia"):
        folders += [os.path.join(nvidia, d, "lib") for d in sorted(os.listdir(nvidia))
                    if os.path.isdir(os.path.join(nvidia, d, "lib"))]
    if env.get("LD_LIBRARY_PATH"):
        folders.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(folders)
    return env


def generate_main() -> None:
    """llmint8-generate: the C++ generation CLI (see llmint8-generate --help)."""
    exe = tool_path("llmint8-generate")
    if not os.path.exists(exe):
        sys.exit(f"llmint8-generate: {exe} is missing; reinstall llmint8 with `pip install .`")
    os.execve(exe, [exe, *sys.argv[1:]], native_env())
