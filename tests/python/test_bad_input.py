"""Bad input: every op rejects it with an error naming the argument, the expected and the actual value."""

import pytest
import torch

ops = torch.ops.llmint8


def _f(*shape, dtype=torch.float16, device="cpu"):
    return torch.randn(*shape).to(dtype=dtype, device=device)


def _i8(*shape, device="cpu"):
    return torch.randint(-127, 128, shape, dtype=torch.int8, device=device)


def _s(n, device="cpu"):
    return torch.rand(n, device=device) + 0.1


# (id, call, exception type, substrings the message must contain)
CASES = [
    # wrong dtype
    ("quant_dtype", lambda d: ops.int8_vectorwise_quant(_i8(2, 3, device=d)), TypeError,
     ["int8_vectorwise_quant", "'A'", "float16, bfloat16 or float32", "got int8"]),
    ("quant_float64", lambda d: ops.int8_vectorwise_quant(_f(2, 3, dtype=torch.float64, device=d)), TypeError,
     ["'A'", "got float64"]),
    ("dequant_dtype", lambda d: ops.int8_vectorwise_dequant(_f(2, 3, device=d), _s(2, d)), TypeError,
     ["'A'", "dtype int8", "got float16"]),
    ("dequant_stats_dtype", lambda d: ops.int8_vectorwise_dequant(_i8(2, 3, device=d), _s(2, d).half()), TypeError,
     ["'stats'", "dtype float32", "got float16"]),
    ("matmul_dtype_B", lambda d: ops.int8_linear_matmul(_i8(2, 3, device=d), _f(4, 3, device=d)), TypeError,
     ["int8_linear_matmul", "'B'", "dtype int8", "got float16"]),
    ("mm_dequant_dtype", lambda d: ops.int8_mm_dequant(_i8(2, 3, device=d), _s(2, d), _s(3, d)), TypeError,
     ["'A'", "dtype int32", "got int8"]),
    ("mm_dequant_out_dtype", lambda d: ops.int8_mm_dequant(torch.zeros(2, 3, dtype=torch.int32, device=d), _s(2, d),
                                                           _s(3, d), torch.int8), TypeError,
     ["'dtype'", "float16, bfloat16 or float32"]),
    ("linear_CB_dtype", lambda d: ops.int8_linear(_f(2, 3, device=d), _f(4, 3, device=d), _s(4, d)), TypeError,
     ["int8_linear", "'CB'", "dtype int8", "got float16"]),
    ("linear_SCB_dtype", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(4, d).double()),
     TypeError, ["'SCB'", "dtype float32", "got float64"]),
    ("linear_bias_dtype", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(4, d),
                                                    torch.zeros(4, dtype=torch.int32, device=d)), TypeError,
     ["'bias'", "got int32"]),
    ("mixed_cols_dtype", lambda d: ops.int8_mixed_scaled_mm(_f(2, 3, device=d), _i8(2, 3, device=d),
                                                           _i8(4, 3, device=d), _s(2, d), _s(4, d),
                                                           torch.tensor([0], dtype=torch.int32, device=d)),
     TypeError, ["'outlier_cols'", "dtype int64", "got int32"]),
    ("double_quant_dtype", lambda d: ops.int8_double_quant(_i8(2, 3, device=d)), TypeError,
     ["int8_double_quant", "'A'", "got int8"]),
    # wrong rank
    ("quant_rank0", lambda d: ops.int8_vectorwise_quant(torch.tensor(1.0, device=d)), ValueError,
     ["'A'", "at least 1 dimension", "got 0"]),
    ("matmul_rank_B", lambda d: ops.int8_linear_matmul(_i8(2, 3, device=d), _i8(1, 4, 3, device=d)), ValueError,
     ["'B'", "2 dimension", "got 3"]),
    ("linear_rank_CB", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(12, device=d), _s(4, d)), ValueError,
     ["'CB'", "2 dimension", "got 1"]),
    ("linear_rank_SCB", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(4, d)[None]),
     ValueError, ["'SCB'", "1 dimension", "got 2"]),
    ("scaled_rank_row", lambda d: ops.int8_scaled_mm(_i8(2, 3, device=d), _i8(4, 3, device=d), _s(2, d)[None],
                                                     _s(4, d)), ValueError, ["'row_stats'", "1 dimension", "got 2"]),
    # shape mismatch
    ("matmul_K", lambda d: ops.int8_linear_matmul(_i8(2, 3, device=d), _i8(4, 5, device=d)), ValueError,
     ["'B'", "size 3", "got 5", "K"]),
    ("dequant_stats_len", lambda d: ops.int8_vectorwise_dequant(_i8(2, 3, device=d), _s(3, d)), ValueError,
     ["'stats'", "size 2", "got 3"]),
    ("mm_dequant_col_len", lambda d: ops.int8_mm_dequant(torch.zeros(2, 3, dtype=torch.int32, device=d), _s(2, d),
                                                         _s(4, d)), ValueError, ["'col_stats'", "size 3", "got 4"]),
    ("scaled_bias_len", lambda d: ops.int8_scaled_mm(_i8(2, 3, device=d), _i8(4, 3, device=d), _s(2, d), _s(4, d),
                                                     _f(5, device=d)), ValueError, ["'bias'", "size 4", "got 5"]),
    ("linear_in_features", lambda d: ops.int8_linear(_f(2, 7, device=d), _i8(4, 3, device=d), _s(4, d)), ValueError,
     ["'CB'", "size 7", "got 3"]),
    ("linear_SCB_len", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(5, d)), ValueError,
     ["'SCB'", "size 4", "got 5"]),
    ("linear_weight_shape", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(4, d), None, 0.0,
                                                      _f(3, 4, device=d)), ValueError, ["'weight'", "size 4", "got 3"]),
    ("mixed_CA_shape", lambda d: ops.int8_mixed_scaled_mm(_f(2, 3, device=d), _i8(3, 3, device=d),
                                                         _i8(4, 3, device=d), _s(2, d), _s(4, d)), ValueError,
     ["'CA'", "size 2", "got 3"]),
    ("mixed_cols_range", lambda d: ops.int8_mixed_scaled_mm(_f(2, 3, device=d), _i8(2, 3, device=d),
                                                           _i8(4, 3, device=d), _s(2, d), _s(4, d),
                                                           torch.tensor([0, 3], device=d)), IndexError,
     ["'outlier_cols'", "[0, 3)", "[0, 3]"]),
    # negative or invalid threshold
    ("quant_negative_threshold", lambda d: ops.int8_vectorwise_quant(_f(2, 3, device=d), -1.0), ValueError,
     ["'threshold'", ">= 0", "got -1"]),
    ("double_quant_nan_threshold", lambda d: ops.int8_double_quant(_f(2, 3, device=d), float("nan")), ValueError,
     ["'threshold'", "got nan"]),
    ("linear_negative_threshold", lambda d: ops.int8_linear(_f(2, 3, device=d), _i8(4, 3, device=d), _s(4, d), None,
                                                            -6.0), ValueError, ["'threshold'", "got -6"]),
    # K over the int32 limit
    ("matmul_K_limit", lambda d: ops.int8_linear_matmul(_i8(1, 133145, device=d), _i8(1, 133145, device=d)),
     ValueError, ["'A'", "K = 133145", "133144"]),
    ("linear_K_limit", lambda d: ops.int8_linear(_f(1, 133145, device=d), _i8(1, 133145, device=d), _s(1, d)),
     ValueError, ["K = 133145", "133144"]),
    ("scaled_K_limit", lambda d: ops.int8_scaled_mm(_i8(1, 133145, device=d), _i8(2, 133145, device=d), _s(1, d),
                                                    _s(2, d)), ValueError, ["K = 133145"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_named_error(case, device):
    _, call, error_type, substrings = case
    with pytest.raises(error_type) as info:
        call(device)
    message = str(info.value)
    for s in substrings:
        assert s in message, f"{s!r} not in {message!r}"


def test_wrong_device_is_named():
    """A tensor on another device (here: meta, which every machine has) is named with both devices."""
    with pytest.raises(ValueError) as info:
        ops.int8_linear(_f(2, 3), _i8(4, 3).to("meta"), _s(4))
    assert "'CB'" in str(info.value) and "meta" in str(info.value) and "cpu" in str(info.value)
    with pytest.raises(ValueError, match="'row_stats'.*same device"):
        ops.int8_mm_dequant(torch.zeros(2, 3, dtype=torch.int32), _s(2).to("meta"), _s(3))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cpu_gpu_mix_is_named():
    with pytest.raises(ValueError) as info:
        ops.int8_linear(_f(2, 3, device="cuda"), _i8(4, 3), _s(4, "cuda"))
    assert "'CB'" in str(info.value) and "cuda" in str(info.value) and "cpu" in str(info.value)
    with pytest.raises(ValueError, match="'B'.*same device"):
        ops.int8_linear_matmul(_i8(2, 3, device="cuda"), _i8(4, 3))


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_two_gpus_mix_is_named():
    with pytest.raises(ValueError, match="'SCB'.*cuda:0.*cuda:1"):
        ops.int8_linear(_f(2, 3, device="cuda:0"), _i8(4, 3, device="cuda:0"), _s(4, "cuda:1"))


def test_failed_out_call_leaves_out_unchanged(device):
    out = torch.full((2, 4), 7, dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="'out'.*size 5.*got 4"):
        ops.int8_linear_matmul.out(_i8(2, 3, device=device), _i8(5, 3, device=device), out)
    with pytest.raises(TypeError, match="'out'.*int32.*got int64"):
        ops.int8_linear_matmul.out(_i8(2, 3, device=device), _i8(4, 3, device=device), out.long())
    assert (out == 7).all()


def test_bad_input_leaves_inputs_unchanged(device):
    A = _f(3, 5, device=device)
    before = A.clone()
    with pytest.raises(ValueError):
        ops.int8_linear(A, _i8(4, 6, device=device), _s(4, device))
    assert torch.equal(A, before)
