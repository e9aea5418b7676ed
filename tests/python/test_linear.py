"""The LLM.int8() forward: int8_mixed_scaled_mm and the layer op int8_linear."""

import pytest
import torch

import llmint8
from llmint8 import reference as ref

from conftest import assert_matches_reference, make_activations, make_weight, rel_err

ops = torch.ops.llmint8

# (rows, K, N) over the awkward sizes.
# (2, 4096, 300): the 16-byte path of the CUDA decode kernel (K % 16 == 0).
RKN = [(1, 1, 1), (7, 17, 1025), (1025, 7, 17), (17, 5137, 7), (1, 1025, 1025), (2, 1025, 5137), (2, 4096, 300)]


def _planted(K):
    return sorted({1, K // 2, K - 2}) if K > 4 else []


@pytest.mark.parametrize("rows,K,N", RKN)
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_linear_matches_reference(rows, K, N, threshold, dtype, device):
    A = make_activations((rows, K), dtype, device, outlier_cols=_planted(K))
    _, CB, SCB = make_weight(N, K, device)
    bias = torch.randn(N).to(dtype=dtype, device=device)
    out = ops.int8_linear(A, CB, SCB, bias, threshold)
    assert out.dtype == dtype and out.shape == (rows, N)
    assert_matches_reference(out, ref.int8_linear(A.cpu(), CB.cpu(), SCB.cpu(), bias.cpu(), threshold))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_linear_equals_quant_then_mixed_scaled_mm(threshold, device):
    A = make_activations((3, 4, 96), torch.float32, device, outlier_cols=[7, 50])
    _, CB, SCB = make_weight(40, 96, device)
    bias = torch.randn(40, device=device)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, threshold)
    Y, sub_a = ops.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, bias)
    assert Y.shape == (3, 4, 40)
    torch.testing.assert_close(ops.int8_linear(A, CB, SCB, bias, threshold), Y, rtol=1e-6, atol=1e-6)
    if threshold == 0:
        assert sub_a is None
    else:
        assert torch.equal(sub_a, A.reshape(12, 96)[:, cols])


@pytest.mark.parametrize("rows,K,N", RKN[:4])
def test_mixed_scaled_mm_matches_reference(rows, K, N, dtype, device):
    A = make_activations((rows, K), dtype, device, outlier_cols=_planted(K))
    _, CB, SCB = make_weight(N, K, device)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    Y, sub_a = ops.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, None)
    rY, rsub = ref.int8_mixed_scaled_mm(A.cpu(), CA.cpu(), CB.cpu(), SCA.cpu(), SCB.cpu(), cols.cpu(), None)
    assert_matches_reference(Y, rY)
    assert torch.equal(sub_a.cpu(), rsub)


def test_outliers_are_what_makes_int8_accurate(device):
    """With planted outliers, threshold 6 tracks the float layer closely; threshold 0 does not."""
    A = make_activations((64, 1024), torch.float32, device, outlier_cols=[3, 100, 517, 900])
    W, CB, SCB = make_weight(256, 1024, device)
    exact = ref.linear_float64(A.cpu(), W.cpu())
    err6 = rel_err(ops.int8_linear(A, CB, SCB, None, 6.0), exact)
    err0 = rel_err(ops.int8_linear(A, CB, SCB, None, 0.0), exact)
    assert err6 < 0.02, err6
    assert err0 > 3 * err6, (err0, err6)


@pytest.mark.parametrize("outliers", ["none", "all"])
def test_int8_linear_any_number_of_outliers(outliers, device):
    # 200 columns: more than the CUDA kernels' compact outlier buffer (64) holds.
    A = make_activations((5, 200), torch.float32, device) * (0.1 if outliers == "none" else 100.0)
    W, CB, SCB = make_weight(16, 200, device)
    out = ops.int8_linear(A, CB, SCB, None, 6.0)
    _, _, cols = ops.int8_vectorwise_quant(A, 6.0)
    assert cols.numel() == (0 if outliers == "none" else 200)
    assert_matches_reference(out, ref.int8_linear(A.cpu(), CB.cpu(), SCB.cpu(), None, 6.0))
    if outliers == "all":  # every column in floating point: the dequantized-weight product exactly
        assert_matches_reference(out, ref.linear_float64(A.cpu(), ref.dequantize_weight(CB.cpu(), SCB.cpu())))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_linear_empty_batch_and_noncontiguous(threshold, device):
    _, CB, SCB = make_weight(12, 20, device)
    out = ops.int8_linear(torch.empty(0, 20, device=device), CB, SCB, None, threshold)
    assert out.shape == (0, 12)
    out = ops.int8_linear(torch.empty(2, 0, 20, device=device), CB, SCB, None, threshold)
    assert out.shape == (2, 0, 12)
    A = make_activations((20, 9), torch.float16, device, outlier_cols=[4]).t()  # [9, 20] strided
    CBt = CB.t().contiguous().t()  # same values, column-major
    out = ops.int8_linear(A, CBt, SCB, None, threshold)
    assert_matches_reference(out, ref.int8_linear(A.contiguous().cpu(), CB.cpu(), SCB.cpu(), None, threshold))


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_linear_nonfinite_rows_stay_nonfinite(threshold, device):
    A = make_activations((4, 32), torch.float32, device)
    A[1, 3] = float("nan")
    A[2, 7] = float("inf")
    _, CB, SCB = make_weight(8, 32, device)
    out = ops.int8_linear(A, CB, SCB, None, threshold)
    assert not torch.isfinite(out[1]).any()
    assert not torch.isfinite(out[2]).any()
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[3]).all()


def test_bf16_activations_do_not_overflow(device):
    """bnb casts to fp16 and overflows bf16 models; values past fp16's range must survive."""
    A = make_activations((3, 64), torch.bfloat16, device) * 1e5
    W, CB, SCB = make_weight(8, 64, device)
    out = ops.int8_linear(A, CB, SCB, None, 6.0)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()
    assert_matches_reference(out, ref.int8_linear(A.cpu(), CB.cpu(), SCB.cpu(), None, 6.0))


def test_functional_int8_linear(device):
    A = make_activations((3, 16), torch.float32, device)
    _, CB, SCB = make_weight(4, 16, device)
    assert torch.equal(llmint8.functional.int8_linear(A, CB, SCB, threshold=6.0), ops.int8_linear(A, CB, SCB, None, 6.0))
