"""CUDA-only behaviour: CPU/GPU bit equality, CUDA graph capture of a decode step, sync-free layer op."""

import pytest
import torch

from conftest import make_activations, make_weight

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


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_decode_step_captured_in_cuda_graph_and_replayed(threshold):
    K, N = 4096, 1024
    _, CB, SCB = make_weight(N, K, "cuda")
    bias = torch.randn(N, device="cuda", dtype=torch.float16)
    static_x = make_activations((1, K), torch.float16, "cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (cuBLASLt plans, workspace)
        for _ in range(2):
            ops.int8_linear(static_x, CB, SCB, bias, threshold)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):  # fails if the op synchronizes with the host
        static_y = ops.int8_linear(static_x, CB, SCB, bias, threshold)
    # New inputs with 0, 1 and 9 outlier columns: the count lives on the device.
    for seed, cols in enumerate([[], [5], list(range(100, 4000, 440))]):
        x = make_activations((1, K), torch.float16, "cuda", outlier_cols=cols, seed=seed + 10)
        static_x.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(static_y, ops.int8_linear(x, CB, SCB, bias, threshold))


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
