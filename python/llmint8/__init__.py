"""llmint8: LLM.int8() 8-bit inference for PyTorch, as a LibTorch C++/CUDA extension.

Importing the package loads the native library, which registers every operator
under ``torch.ops.llmint8``. A library that cannot be loaded raises ImportError.
"""

import importlib.util
import os

import torch

# The native library is llmint8's ops and modules only: the C++ tokenizers (and libsentencepiece)
# are in libllmint8_models, which the Python package does not load.
try:
    from . import _C
except ImportError as error:  # fail loudly: every op depends on the native library
    raise ImportError(
        "llmint8: could not load the native library (llmint8/_C and llmint8/lib/libllmint8.so). "
        "Install the package with `pip install .` from the repository root, against torch "
        f"{torch.__version__}. Cause: {error}"
    ) from error

from . import _fake  # noqa: E402,F401  (fake kernels of the data-dependent ops)
from . import functional, nn, reference  # noqa: E402,F401
from .autograd import matmul  # noqa: E402
from .config import Int8Config  # noqa: E402
from .replace import replace_linear_with_8bit  # noqa: E402
from .state import MatmulLtState  # noqa: E402

if importlib.util.find_spec("transformers") is not None:
    from . import hf_quantizer  # noqa: E402,F401  (registers the "llmint8" quantizer with transformers)

__version__ = _C.__version__

#: Folder to put on CMAKE_PREFIX_PATH so that CMake's find_package(llmint8) finds the C++ library.
cmake_prefix_path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "share", "cmake")


def build_info() -> dict:
    """How the native library was built: version, CUDA on/off, CUDA architectures, LibTorch version."""
    return _C.build_info()


__all__ = [
    "Int8Config",
    "MatmulLtState",
    "build_info",
    "cmake_prefix_path",
    "functional",
    "matmul",
    "nn",
    "reference",
    "replace_linear_with_8bit",
    "__version__",
]
