"""int8_linear_matmul (+ .out), int8_mm_dequant and int8_scaled_mm against the reference."""

import pytest
import torch

import llmint8
from llmint8 import reference as ref

from conftest import assert_matches_reference

ops = torch.ops.llmint8

# (M, K, N) over the awkward sizes 1, 7, 17, 1025, 5137.
# (2, 4096, 36) takes the 16-byte path of the CUDA decode kernel, (64, 4096, 36) cuBLASLt.
MKN = [(1, 1, 1), (7, 17, 1025), (1025, 7, 17), (17, 5137, 1025), (1, 1025, 5137), (1025, 1025, 7), (2, 4096, 36),
       (64, 4096, 36)]


def _codes(*shape, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-127, 128, shape, generator=g, dtype=torch.int8).to(device)


def _stats(n, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, generator=g) * 4 + 0.01).to(device)


@pytest.mark.parametrize("M,K,N", MKN)
def test_linear_matmul_exact(M, K, N, device):
    A, B = _codes(M, K, device=device), _codes(N, K, device=device, seed=1)
    out = ops.int8_linear_matmul(A, B)
    assert out.dtype == torch.int32 and out.shape == (M, N)
    assert torch.equal(out.cpu(), ref.int8_linear_matmul(A.cpu(), B.cpu()))


def test_linear_matmul_full_scale_at_k_limit(device):
    K = 133144  # the largest K whose full-scale dot product fits int32
    A = torch.full((2, K), -127, dtype=torch.int8, device=device)
    B = torch.full((3, K), -127, dtype=torch.int8, device=device)
    out = ops.int8_linear_matmul(A, B)
    assert (out == 127 * 127 * K).all()


def test_linear_matmul_out_and_batched_and_noncontiguous(device):
    A = _codes(2, 3, 19, device=device)
    B = _codes(11, 19, device=device, seed=1)
    expected = ref.int8_linear_matmul(A.cpu(), B.cpu())
    out = torch.full((2, 3, 11), -1, dtype=torch.int32, device=device)
    llmint8.functional.int8_linear_matmul(A, B, out=out)
    assert torch.equal(out.cpu(), expected)
    # strided out and strided inputs
    out_t = torch.full((11, 6), -1, dtype=torch.int32, device=device).t()
    ops.int8_linear_matmul.out(A.reshape(6, 19), B, out_t)
    assert torch.equal(out_t.cpu(), expected.reshape(6, 11))
    A_t = _codes(19, 6, device=device).t()
    B_t = _codes(19, 11, device=device, seed=2).t()
    assert torch.equal(ops.int8_linear_matmul(A_t, B_t).cpu(), ref.int8_linear_matmul(A_t.cpu(), B_t.cpu()))


def test_linear_matmul_empty(device):
    out = ops.int8_linear_matmul(_codes(0, 8, device=device), _codes(5, 8, device=device))
    assert out.shape == (0, 5)
    out = ops.int8_linear_matmul(_codes(4, 8, device=device), _codes(0, 8, device=device))
    assert out.shape == (4, 0)


@pytest.mark.parametrize("M,N", [(1, 1), (7, 1025), (1025, 17), (17, 5137)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_mm_dequant_matches_reference(M, N, with_bias, dtype, device):
    g = torch.Generator().manual_seed(3)
    A = torch.randint(-(2**24), 2**24, (M, N), generator=g, dtype=torch.int32).to(device)
    row, col = _stats(M, device), _stats(N, device, seed=1)
    bias = torch.randn(N, generator=g).to(dtype=dtype, device=device) if with_bias else None
    out = ops.int8_mm_dequant(A, row, col, dtype=dtype, bias=bias)
    assert out.dtype == dtype
    assert_matches_reference(out, ref.int8_mm_dequant(A.cpu(), row.cpu(), col.cpu(), bias=bias.cpu() if with_bias else None))


def test_mm_dequant_defaults_to_fp16_and_handles_strides(device):
    A = torch.randint(-1000, 1000, (9, 6), dtype=torch.int32, device=device)
    row, col = _stats(6, device), _stats(9, device)
    out = ops.int8_mm_dequant(A.t(), row, col)
    assert out.dtype == torch.float16
    assert_matches_reference(out, ref.int8_mm_dequant(A.t().contiguous().cpu(), row.cpu(), col.cpu()))
    empty = ops.int8_mm_dequant(torch.empty(0, 4, dtype=torch.int32, device=device),
                                torch.empty(0, device=device), _stats(4, device))
    assert empty.shape == (0, 4)


@pytest.mark.parametrize("M,K,N", MKN)
def test_scaled_mm_matches_reference(M, K, N, dtype, device):
    A, B = _codes(M, K, device=device), _codes(N, K, device=device, seed=1)
    row, col = _stats(M, device), _stats(N, device, seed=1)
    bias = torch.randn(N).to(dtype=dtype, device=device)
    out = ops.int8_scaled_mm(A, B, row, col, bias=bias, dtype=dtype)
    assert out.dtype == dtype and out.shape == (M, N)
    assert_matches_reference(out, ref.int8_scaled_mm(A.cpu(), B.cpu(), row.cpu(), col.cpu(), bias=bias.cpu()))


def test_scaled_mm_equals_matmul_then_dequant(device):
    A, B = _codes(2, 5, 33, device=device), _codes(10, 33, device=device, seed=1)
    row, col = _stats(10, device), _stats(10, device, seed=1)
    fused = ops.int8_scaled_mm(A, B, row, col, dtype=torch.float32)
    split = ops.int8_mm_dequant(ops.int8_linear_matmul(A, B), row, col, dtype=torch.float32)
    assert fused.shape == (2, 5, 10)
    assert torch.equal(fused, split)
