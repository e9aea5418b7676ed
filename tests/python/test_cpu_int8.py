"""The CPU int8 paths by row count: the VNNI GEMV (M <= 4, tiles dequantized as they are made) and
oneDNN through ATen's _int_mm (M > 4), against the float64 reference, on awkward K and outlier sets."""

import pytest
import torch

from llmint8 import reference as ref

from conftest import FLOAT_DTYPES, assert_matches_reference

ops = torch.ops.llmint8

GEMV_ROWS = [1, 2, 3, 4]
ONEDNN_ROWS = [5, 16, 33]
# Not multiples of 4, 16 or 64 (the VNNI steps) except 64 itself, and below one vector.
ODD_K = [1, 3, 17, 63, 64, 65, 100, 1025, 5137]
# Up to 64 outlier columns the GEMV path gathers them from the weight rows it streams; 80 takes its GEMM.
OUTLIER_COUNTS = [0, 1, 9, 64, 80]
N = 67  # one 64-column tile plus a remainder, and not a multiple of the 4/8-row register blocks


def _weight(N, K, seed=1):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(N, K, generator=g) / K**0.5
    CB, SCB, _ = ref.int8_vectorwise_quant(W, 0.0)
    return CB, SCB


def _outlier_columns(K, count, seed):
    """`count` columns (all K when count >= K): the last alone for one, else the first, the last
    and random others."""
    count = min(count, K)
    if count == 0:
        return []
    if count == 1:
        return [K - 1]
    g = torch.Generator().manual_seed(seed)
    others = [c for c in torch.randperm(K, generator=g).tolist() if c not in (0, K - 1)]
    return sorted([0, K - 1] + others[: count - 2])


def _activations(M, K, cols, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(M, K, generator=g)
    for c in cols:
        x[:, c] = 30.0 * (torch.randint(0, 2, (M,), generator=g) * 2 - 1) + torch.randn(M, generator=g)
    return x.to(dtype)


@pytest.mark.parametrize("M", GEMV_ROWS + ONEDNN_ROWS)
@pytest.mark.parametrize("K", ODD_K)
@pytest.mark.parametrize("count", OUTLIER_COUNTS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_int8_linear_matches_reference(M, K, count, dtype):
    cols = _outlier_columns(K, count, seed=K + count)
    A = _activations(M, K, cols, dtype, seed=M)
    CB, SCB = _weight(N, K)
    bias = torch.randn(N, generator=torch.Generator().manual_seed(2)).to(dtype)
    for threshold in (0.0, 6.0):
        out = ops.int8_linear(A, CB, SCB, bias, threshold)
        assert out.dtype == dtype and out.shape == (M, N)
        expected = ref.int8_linear(A, CB, SCB, bias, threshold)
        assert_matches_reference(out, expected)
        if threshold > 0:
            _, _, found = ops.int8_vectorwise_quant(A, threshold)
            assert found.tolist() == cols  # every planted column, and no other, went the float way


@pytest.mark.parametrize("M", GEMV_ROWS + ONEDNN_ROWS)
@pytest.mark.parametrize("K", ODD_K)
def test_int8_matmul_exact_on_every_path(M, K):
    g = torch.Generator().manual_seed(M * 1000 + K)
    A = torch.randint(-128, 128, (M, K), generator=g, dtype=torch.int8)  # -128 included
    B = torch.randint(-128, 128, (N, K), generator=g, dtype=torch.int8)
    expected = ref.int8_linear_matmul(A, B)
    assert torch.equal(ops.int8_linear_matmul(A, B), expected)
    out = torch.full((M, N), -1, dtype=torch.int32)
    ops.int8_linear_matmul.out(A, B, out)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("M", GEMV_ROWS + ONEDNN_ROWS)
def test_scaled_mm_and_mixed_match_reference(M):
    K = 1025
    A = _activations(M, K, [0, 500, K - 1], torch.float32)
    CB, SCB = _weight(N, K)
    bias = torch.randn(N)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    out = ops.int8_scaled_mm(CA, CB, SCA, SCB, bias, torch.float32)
    assert_matches_reference(out, ref.int8_scaled_mm(CA, CB, SCA, SCB, bias))
    Y, _ = ops.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, bias)
    rY, _ = ref.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, bias)
    assert_matches_reference(Y, rY)


@pytest.mark.parametrize("M", [1, 4, 16, 128])
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_thread_count_does_not_change_results(M, threshold):
    """Work is split over torch's threads by output column: every split gives the same bits."""
    K = 4096
    A = _activations(M, K, [7, 4000], torch.float32)
    CB, SCB = _weight(300, K)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = ops.int8_linear(A, CB, SCB, None, threshold)
        torch.set_num_threads(2)
        two = ops.int8_linear(A, CB, SCB, None, threshold)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)
    assert_matches_reference(one, ref.int8_linear(A, CB, SCB, None, threshold))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=lambda d: str(d).replace("torch.", ""))
def test_quantization_matches_reference_on_long_rows(dtype):
    """The vectorized row quantization: codes and stats bit for bit, 16-element steps plus a tail."""
    for M, K in [(1, 4096), (4, 4099), (33, 5137)]:
        A = _activations(M, K, [0, 1234, K - 1], dtype, seed=K)
        for threshold in (0.0, 6.0):
            CA, SCA, cols = ops.int8_vectorwise_quant(A, threshold)
            rCA, rSCA, rcols = ref.int8_vectorwise_quant(A, threshold)
            assert torch.equal(CA, rCA) and torch.equal(SCA, rSCA)
            if threshold > 0:
                assert torch.equal(cols, rcols)
