"""torch.library.opcheck on every op: schema, fake/meta kernels, autograd registration, AOT dispatch."""

import pytest
import torch

from conftest import make_activations, make_weight

ops = torch.ops.llmint8


def _samples(device):
    A = make_activations((5, 40), torch.float16, device, outlier_cols=[3, 17])
    A3 = make_activations((2, 3, 40), torch.bfloat16, device, outlier_cols=[1])
    _, CB, SCB = make_weight(24, 40, device)
    CA, SCA, cols = ops.int8_vectorwise_quant(A, 6.0)
    acc = ops.int8_linear_matmul(CA, CB)
    bias = torch.randn(24, dtype=torch.float16, device=device)
    out = torch.empty(5, 24, dtype=torch.int32, device=device)
    return [
        ("int8_vectorwise_quant", ops.int8_vectorwise_quant.default, (A, 0.0)),
        ("int8_vectorwise_quant_t6", ops.int8_vectorwise_quant.default, (A3, 6.0)),
        ("int8_vectorwise_dequant", ops.int8_vectorwise_dequant.default, (CA, SCA)),
        ("int8_linear_matmul", ops.int8_linear_matmul.default, (CA, CB)),
        ("int8_linear_matmul_out", ops.int8_linear_matmul.out, (CA, CB, out)),
        ("int8_mm_dequant", ops.int8_mm_dequant.default, (acc, SCA, SCB, torch.bfloat16, bias)),
        ("int8_scaled_mm", ops.int8_scaled_mm.default, (CA, CB, SCA, SCB, bias, torch.float32)),
        ("int8_mixed_scaled_mm", ops.int8_mixed_scaled_mm.default, (A, CA, CB, SCA, SCB, cols, bias)),
        ("int8_mixed_scaled_mm_none", ops.int8_mixed_scaled_mm.default, (A, CA, CB, SCA, SCB, None, None)),
        ("int8_double_quant", ops.int8_double_quant.default, (A, 0.0)),
        ("int8_double_quant_t6", ops.int8_double_quant.default, (A3, 6.0)),
        ("int8_linear_t0", ops.int8_linear.default, (A3, CB, SCB, None, 0.0, None)),
        ("int8_linear_t6", ops.int8_linear.default, (A, CB, SCB, bias, 6.0, None)),
        ("int8_linear_grad", ops.int8_linear.default,
         (A.clone().requires_grad_(), CB, SCB, bias.clone().requires_grad_(), 6.0, None)),
    ]


def test_opcheck_every_op(device):
    for name, op, args in _samples(device):
        try:
            torch.library.opcheck(op, args)
        except Exception as error:  # name the sample that failed
            raise AssertionError(f"opcheck failed for {name}: {error}") from error


def test_every_schema_op_is_checked(device):
    """Every operator of the library appears in the opcheck samples above."""
    checked = {op._schema.name.split("::")[1] for _, op, _ in _samples(device)}
    registered = {name for name in dir(ops) if not name.startswith("_")}
    missing = {n for n in registered if n not in checked and hasattr(getattr(ops, n), "default")}
    assert not missing, f"ops without an opcheck sample: {sorted(missing)}"
