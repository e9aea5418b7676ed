"""The package itself: native library loaded, build info, CMake prefix, every op registered."""

import importlib.util
import os
import shutil

import torch

import llmint8

EXPECTED_OPS = {
    "int8_vectorwise_quant", "int8_vectorwise_dequant", "int8_linear_matmul", "int8_mm_dequant",
    "int8_scaled_mm", "int8_mixed_scaled_mm", "int8_double_quant", "int8_linear",
}


def test_build_info_reports_version_cuda_and_architectures():
    info = llmint8.build_info()
    assert info["version"] == llmint8.__version__
    assert info["torch_version"] == torch.__version__.split("+")[0]
    assert isinstance(info["cuda"], bool) and isinstance(info["sentencepiece"], bool)
    if info["cuda"] and torch.cuda.is_available():
        # A build for the card alone (tests/run_gpu.sh) holds at least the card's architecture.
        major, minor = torch.cuda.get_device_capability()
        assert f"{major}{minor}" in info["cuda_architectures"], info["cuda_architectures"]
    elif info["cuda"]:  # the default build: Ampere and Hopper
        assert "80" in info["cuda_architectures"] and "90" in info["cuda_architectures"]


def test_cmake_prefix_path_holds_the_package_config():
    config = os.path.join(llmint8.cmake_prefix_path, "llmint8", "llmint8Config.cmake")
    assert os.path.isfile(config), config
    header = os.path.join(os.path.dirname(llmint8.__file__), "include", "llmint8", "llmint8.h")
    assert os.path.isfile(header)


def test_every_op_is_registered_with_cpu_and_meta_kernels():
    for name in EXPECTED_OPS:
        op = getattr(torch.ops.llmint8, name).default
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "CPU"), name
        has_meta = torch._C._dispatch_has_kernel_for_dispatch_key(op.name(), "Meta")
        has_fake = torch._library.simple_registry.singleton.find(op.name()).fake_impl.kernel is not None
        assert has_meta or has_fake, name
    assert torch._C._dispatch_has_kernel_for_dispatch_key("llmint8::int8_linear", "Autograd")


def test_cuda_backend_compiled_wherever_the_toolkit_is():
    """CI has nvcc but no GPU: the CUDA sources must still have been compiled in."""
    if shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"):
        assert llmint8.build_info()["cuda"]
        assert torch._C._dispatch_has_kernel_for_dispatch_key("llmint8::int8_linear", "CUDA")
        names = [b.split(":")[0] for b in llmint8.build_info()["cuda_product_backends"]]
        assert names[:3] == ["gemv_fused", "gemv_dp4a", "small_m_mma"] and names[-1] == "int32_gemm"
        if importlib.util.find_spec("cutlass_library") is not None:  # nvidia-cutlass: the sm_90a GEMM too
            assert llmint8.build_info()["fused_sm90_gemm"] and "sm90_cutlass" in names and "sm90_dequantized" in names
