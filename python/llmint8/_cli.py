"""Console-script launchers for the native tools installed with the package."""

import os
import sys


def tool_path(name: str) -> str:
    """Path of a native tool installed in the package's bin/ folder."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin", name)


def generate_main() -> None:
    """llmint8-generate: the C++ generation CLI (see llmint8-generate --help)."""
    exe = tool_path("llmint8-generate")
    if not os.path.exists(exe):
        sys.exit(f"llmint8-generate: {exe} is missing; reinstall llmint8 with `pip install .`")
    os.execv(exe, [exe, *sys.argv[1:]])
