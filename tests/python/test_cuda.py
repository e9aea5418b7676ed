"""CUDA-only behaviour: CPU/GPU bit equality, CUDA graph capture of a decode step, sync-free layer op."""

import os

import pytest
import torch

import llmint8
from conftest import assert_matches_reference, make_activations, make_weight

ops = torch.ops.llmint8

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_codes_and_int32_products_equal_cpu_bit_for_bit(dtype, threshold):
    A = make_activations((33, 4099), dtype, "cpu", outlier_cols=[0, 7, 4098])
    _, CB, _ = make_weight(520, 4099, "cpu")
    cpu = ops.int8_vectorwise_quant(A, threshold)
    gpu = ops.int8_vectorwise_quant(A.cuda(), threshold)
    assert torch.equal(cpu[0], gpu[0].cpu()) and torch.equal(cpu[1], gpu[1].cpu())
    for K in (4096, 4099):  # cuBLASLt path and the exact fallback
        a, b = cpu[0][:, :K].contiguous(), CB[:, :K].contiguous()
        assert torch.equal(ops.int8_linear_matmul(a, b), ops.int8_linear_matmul(a.cuda(), b.cuda()).cpu())


def capture_and_replay(M, dtype, with_bias, threshold, seed):
    """Captures the layer op in a CUDA graph, then replays it with new inputs carrying 0, 1 and 9
    outlier columns (the count lives on the device): each replay equals an eager call."""
    K, N = 4096, 1024
    _, CB, SCB = make_weight(N, K, "cuda")
    bias = torch.randn(N, device="cuda", dtype=dtype) if with_bias else None
    static_x = make_activations((M, K), dtype, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLASLt plans, workspace)
        for _ in range(2):
            ops.int8_linear(static_x, CB, SCB, bias, threshold)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # fails if the op synchronizes with the host
        static_y = ops.int8_linear(static_x, CB, SCB, bias, threshold)
    for i, cols in enumerate([[], [5], list(range(100, 4000, 440))]):
        x = make_activations((M, K), dtype, "cuda", outlier_cols=cols, seed=seed + i)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, ops.int8_linear(x, CB, SCB, bias, threshold))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_decode_step_captured_in_cuda_graph_and_replayed(threshold):
    capture_and_replay(1, torch.float16, True, threshold, seed=10)


def test_layer_op_does_not_synchronize():
    A = make_activations((16, 1024), torch.bfloat16, "cuda", outlier_cols=[1, 2, 3])
    _, CB, SCB = make_weight(256, 1024, "cuda")
    ops.int8_linear(A, CB, SCB, None, 6.0)  # warm-up
    torch.cuda.set_sync_debug_mode("error")
    try:
        ops.int8_linear(A, CB, SCB, None, 6.0)
        ops.int8_linear(A, CB, SCB, None, 0.0)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# The fused Hopper GEMM (CUTLASS, sm_90a) takes M >= 3 with K % 16 == 0 and 16-byte output rows.
def on_hopper():
    return torch.cuda.is_available() and torch.cuda.get_device_capability() == (9, 0)


needs_fused_gemm = pytest.mark.skipif(
    not (on_hopper() and llmint8.build_info()["fused_sm90_gemm"]), reason="needs the fused GEMM and an sm_90 card")


def test_fused_gemm_is_built_where_required():
    # tests/run_gpu.sh sets this on the GPU machine, so that a build that silently lost CUTLASS fails.
    if os.environ.get("LLMINT8_REQUIRE_FUSED_GEMM") == "1" and on_hopper():
        assert llmint8.build_info()["fused_sm90_gemm"]


@needs_fused_gemm
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("M,K,N", [(3, 256, 136), (64, 1024, 1000), (300, 4096, 520), (1030, 2048, 4104)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_scaled_mm_matches_reference(dtype, M, K, N, with_bias):
    A = make_activations((M, K), torch.float32, "cuda")
    _, CB, SCB = make_weight(N, K, "cuda")
    CA, SCA, _ = ops.int8_vectorwise_quant(A, 0.0)
    bias = torch.randn(N, device="cuda", dtype=dtype) if with_bias else None
    out = ops.int8_scaled_mm(CA, CB, SCA, SCB, bias, dtype)
    assert out.dtype == dtype
    expected = llmint8.reference.int8_scaled_mm(CA.cpu(), CB.cpu(), SCA.cpu(), SCB.cpu(),
                                                bias.cpu() if with_bias else None)
    assert_matches_reference(out, expected)


@needs_fused_gemm
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("n_outliers", [0, 8, 80])  # 80: past the 64 gathered columns
@pytest.mark.parametrize("M", [3, 16, 257])
def test_fused_layer_op_with_outliers_matches_reference(dtype, n_outliers, M):
    K, N = 2048, 1032
    cols = list(range(3, 3 + 25 * n_outliers, 25))
    A = make_activations((M, K), dtype, "cuda", outlier_cols=cols, seed=M)
    _, CB, SCB = make_weight(N, K, "cuda")
    bias = torch.randn(N, device="cuda", dtype=dtype)
    for threshold in (0.0, 6.0):
        out = ops.int8_linear(A, CB, SCB, bias, threshold)
        expected = llmint8.reference.int8_linear(A.cpu(), CB.cpu(), SCB.cpu(), bias.cpu(), threshold)
        assert_matches_reference(out, expected)


@needs_fused_gemm
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_fused_layer_op_keeps_no_int32_product_in_memory(threshold):
    # PERF.md: the forward allocates nothing that grows with M*N beyond the output. An int32
    # product would add 4*M*N bytes (64 MiB here); the scratch that remains is O(M*K + N).
    M, K, N = 2048, 1024, 8192
    A = make_activations((M, K), torch.float16, "cuda", outlier_cols=[1, 500, 900])
    _, CB, SCB = make_weight(N, K, "cuda")
    ops.int8_linear(A, CB, SCB, None, threshold)  # warm-up
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    out = ops.int8_linear(A, CB, SCB, None, threshold)
    extra = torch.cuda.max_memory_allocated() - before - out.numel() * out.element_size()
    assert extra < 8 * 2**20, f"{extra / 2**20:.1f} MiB of scratch beyond the output"


@needs_fused_gemm
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_fused_prefill_captured_in_cuda_graph_and_replayed(threshold):
    capture_and_replay(16, torch.bfloat16, False, threshold, seed=20)
