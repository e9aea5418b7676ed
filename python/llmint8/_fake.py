"""Fake (meta) kernels of the two ops whose output size depends on the data.

Every other op has its Meta kernel in C++ (csrc/meta). Here the number of
outlier columns is unknown until the data is seen, so it becomes an unbacked
symbolic size, which only Python's torch.library.get_ctx() can allocate.
The schema's set_python_module points torch at this module.
"""

import torch

from .config import THRESHOLD_RULE

_FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check_quant_args(op: str, A: torch.Tensor, threshold: float) -> None:
    torch._check(
        A.dtype in _FLOAT_DTYPES,
        lambda: f"llmint8::{op}: argument 'A' must have dtype float16, bfloat16 or float32, got {A.dtype}",
    )
    torch._check(A.dim() >= 1, lambda: f"llmint8::{op}: argument 'A' must have at least 1 dimension(s), got {A.dim()}")
    torch._check(
        threshold >= 0.0,
        lambda: f"llmint8::{op}: argument 'threshold' must be {THRESHOLD_RULE}, got {threshold}",
    )


def _outlier_cols(A: torch.Tensor, threshold: float):
    if threshold == 0.0:
        return None
    K = A.shape[-1]
    # new_dynamic_size takes only static bounds; a symbolic K is bounded by a check instead.
    count = torch.library.get_ctx().new_dynamic_size(max=K if isinstance(K, int) else None)
    torch._check(count <= K)
    return A.new_empty((count,), dtype=torch.int64)


def _rows(A: torch.Tensor):
    rows = 1
    for size in A.shape[:-1]:
        rows = rows * size
    return rows


@torch.library.register_fake("llmint8::int8_vectorwise_quant")
def _int8_vectorwise_quant_fake(A, threshold=0.0):
    _check_quant_args("int8_vectorwise_quant", A, threshold)
    CA = A.new_empty(A.shape, dtype=torch.int8)
    SCA = A.new_empty((_rows(A),), dtype=torch.float32)
    return CA, SCA, _outlier_cols(A, threshold)


@torch.library.register_fake("llmint8::int8_double_quant")
def _int8_double_quant_fake(A, threshold=0.0):
    _check_quant_args("int8_double_quant", A, threshold)
    CA = A.new_empty(A.shape, dtype=torch.int8)
    CAt = A.new_empty(A.shape, dtype=torch.int8)
    row_stats = A.new_empty((_rows(A),), dtype=torch.float32)
    col_stats = A.new_empty((A.shape[-1],), dtype=torch.float32)
    return CA, CAt, row_stats, col_stats, _outlier_cols(A, threshold)
