"""int8_vectorwise_quant, int8_vectorwise_dequant and int8_double_quant against the reference."""

import pytest
import torch

import llmint8
from llmint8 import reference as ref

from conftest import assert_matches_reference, make_activations

ops = torch.ops.llmint8

SHAPES = [(1, 1), (7, 17), (17, 1025), (1025, 7), (3, 5137), (2, 3, 17)]


def _planted(K):
    return sorted({0, K // 3, K - 1}) if K > 1 else []


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_vectorwise_quant_matches_reference(shape, threshold, dtype, device):
    A = make_activations(shape, dtype, device, outlier_cols=_planted(shape[-1]))
    CA, SCA, cols = ops.int8_vectorwise_quant(A, threshold)
    rCA, rSCA, rcols = ref.int8_vectorwise_quant(A.cpu(), threshold)
    assert CA.dtype == torch.int8 and CA.shape == A.shape and CA.device == A.device
    assert torch.equal(CA.cpu(), rCA)  # codes: bit for bit
    assert torch.equal(SCA.cpu(), rSCA)  # stats: an absmax is exact
    if threshold == 0.0:
        assert cols is None
    else:
        assert torch.equal(cols.cpu(), rcols)
        assert cols.dtype == torch.int64
        assert (CA.reshape(-1, shape[-1])[:, cols] == 0).all()
        assert set(cols.tolist()) >= set(_planted(shape[-1]))


def test_vectorwise_quant_codes_in_range_and_round_half_even(device):
    # Row max 127 makes the scale exactly 1: the codes are rint of the values themselves.
    A = torch.tensor([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -127.0]], device=device)
    CA, SCA, _ = ops.int8_vectorwise_quant(A)
    assert CA.cpu().tolist() == [[127, 0, 2, 2, 0, -2, -127]]
    assert SCA.item() == 127.0
    big = make_activations((64, 256), torch.float32, device) * 1e4
    CA, _, _ = ops.int8_vectorwise_quant(big)
    assert CA.min().item() >= -127 and CA.max().item() <= 127


def test_vectorwise_quant_no_outliers_gives_empty_cols(device):
    A = make_activations((5, 9), torch.float32, device) * 0.1
    _, _, cols = ops.int8_vectorwise_quant(A, 6.0)
    assert cols is not None and cols.numel() == 0 and cols.dtype == torch.int64


def test_vectorwise_quant_zero_rows_and_all_outlier_rows(device):
    A = torch.zeros(3, 4, device=device)
    A[1] = 10.0  # every column of row 1 is an outlier: all columns go, every stat is 0
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    assert torch.equal(cols.cpu(), torch.arange(4))
    assert (CA == 0).all() and (SCA == 0).all()
    CA, SCA, _ = ops.int8_vectorwise_quant(torch.zeros(2, 5, device=device))
    assert (CA == 0).all() and (SCA == 0).all()


def test_vectorwise_quant_nonfinite_rows_stay_nonfinite(device):
    A = make_activations((4, 16), torch.float32, device)
    A[1, 3] = float("nan")
    A[2, 5] = float("inf")
    CA, SCA, _ = ops.int8_vectorwise_quant(A)
    assert torch.isnan(SCA[1]) and torch.isinf(SCA[2])
    assert torch.isfinite(SCA[[0, 3]]).all()
    assert (CA[1:3] == 0).all()
    deq = ops.int8_vectorwise_dequant(CA, SCA)
    assert not torch.isfinite(deq[1:3]).any()
    assert torch.isfinite(deq[[0, 3]]).all()


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_vectorwise_quant_empty_batch(threshold, dtype, device):
    A = torch.empty(0, 17, dtype=dtype, device=device)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, threshold)
    assert CA.shape == (0, 17) and SCA.shape == (0,)
    assert (cols is None) if threshold == 0 else cols.numel() == 0


def test_vectorwise_quant_non_contiguous(device):
    base = make_activations((33, 40), torch.float16, device, outlier_cols=[5])
    A = base.t()  # [40, 33], strided
    assert not A.is_contiguous()
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    rCA, rSCA, rcols = ref.int8_vectorwise_quant(A.contiguous().cpu(), 6.0)
    assert torch.equal(CA.cpu(), rCA) and torch.equal(SCA.cpu(), rSCA) and torch.equal(cols.cpu(), rcols)


@pytest.mark.parametrize("shape", SHAPES)
def test_vectorwise_dequant_matches_reference(shape, device):
    A = make_activations(shape, torch.float32, device)
    CA, SCA, _ = ops.int8_vectorwise_quant(A)
    out = ops.int8_vectorwise_dequant(CA, SCA)
    assert out.dtype == torch.float32 and out.shape == A.shape
    assert_matches_reference(out, ref.int8_vectorwise_dequant(CA.cpu(), SCA.cpu()))
    # And it undoes the quantization to within half a code.
    step = (SCA / 127).reshape(*shape[:-1], 1)
    assert ((out - A).abs() <= step * 0.5 + 1e-6).all()


def test_vectorwise_dequant_non_contiguous_and_empty(device):
    CA = torch.randint(-127, 128, (9, 12), dtype=torch.int8, device=device)
    stats = torch.rand(12, device=device) + 0.5
    out = ops.int8_vectorwise_dequant(CA.t(), stats)
    assert_matches_reference(out, ref.int8_vectorwise_dequant(CA.t().contiguous().cpu(), stats.cpu()))
    empty = ops.int8_vectorwise_dequant(torch.empty(0, 4, dtype=torch.int8, device=device),
                                        torch.empty(0, device=device))
    assert empty.shape == (0, 4)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_double_quant_matches_reference(shape, threshold, dtype, device):
    A = make_activations(shape, dtype, device, outlier_cols=_planted(shape[-1]))
    CA, CAt, row_stats, col_stats, cols = ops.int8_double_quant(A, threshold)
    r = ref.int8_double_quant(A.cpu(), threshold)
    assert torch.equal(CA.cpu(), r[0])
    assert torch.equal(CAt.cpu(), r[1])
    assert torch.equal(row_stats.cpu(), r[2])
    assert torch.equal(col_stats.cpu(), r[3])
    assert (cols is None) if threshold == 0 else torch.equal(cols.cpu(), r[4])
    assert CAt.shape == A.shape and col_stats.shape == (shape[-1],)


def test_functional_api_mirrors_ops(device):
    A = make_activations((5, 33), torch.float16, device, outlier_cols=[2])
    for got, want in zip(llmint8.functional.int8_vectorwise_quant(A, 6.0), ops.int8_vectorwise_quant(A, 6.0)):
        assert torch.equal(got, want)
