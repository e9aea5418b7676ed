"""bitsandbytes-style functional API over ``torch.ops.llmint8``.

Names, argument order and defaults follow ``bitsandbytes.functional`` so that
code ports by changing the import.
"""

from typing import Optional, Tuple

import torch

_ops = torch.ops.llmint8


def int8_vectorwise_quant(A: torch.Tensor, threshold: float = 0.0):
    """Row-wise absmax quantization: ``(CA int8, SCA fp32 [rows], outlier_cols or None)``."""
    return _ops.int8_vectorwise_quant(A, threshold)


def int8_vectorwise_dequant(A: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    """``A * stats[row] / 127`` in fp32."""
    return _ops.int8_vectorwise_dequant(A, stats)


def int8_linear_matmul(A: torch.Tensor, B: torch.Tensor, out: Optional[torch.Tensor] = None,
                       dtype: torch.dtype = torch.int32) -> torch.Tensor:
    """Exact int32 ``A @ B.T`` for int8 ``A [..., K]`` and ``B [N, K]``; writes into ``out`` when given.
    ``dtype`` is bitsandbytes' argument: int32, the only type that holds the product exactly."""
    if dtype != torch.int32:
        raise ValueError(f"int8_linear_matmul: argument 'dtype' must be torch.int32 (the exact product), got {dtype}")
    if out is None:
        return _ops.int8_linear_matmul(A, B)
    _ops.int8_linear_matmul.out(A, B, out)
    return out


def _as_vector(stats: torch.Tensor) -> torch.Tensor:
    """A 2-D stats tensor with one dimension of size 1 as 1-D; anything else as given (the op checks it)."""
    if isinstance(stats, torch.Tensor) and stats.dim() == 2 and 1 in stats.shape:
        return stats.reshape(-1)
    return stats


def int8_mm_dequant(
    A: torch.Tensor,
    row_stats: torch.Tensor,
    col_stats: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``A * row_stats * col_stats / 127**2 + bias`` (fp32 math), as ``dtype`` (default fp16).
    The stats may also come as column vectors ([rows, 1], [N, 1]) or rows ([1, N]), as the
    keepdim reductions that produce them leave them; they are flattened."""
    result = _ops.int8_mm_dequant(A, _as_vector(row_stats), _as_vector(col_stats), dtype=dtype, bias=bias)
    if out is None:
        return result
    return out.copy_(result)


def int8_scaled_mm(
    A: torch.Tensor,
    B: torch.Tensor,
    row_stats: torch.Tensor,
    col_stats: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    dtype: Optional[torch.dtype] = None,
) -> torch.Tensor:
    """``int8_linear_matmul`` and ``int8_mm_dequant`` fused."""
    return _ops.int8_scaled_mm(A, B, row_stats, col_stats, bias=bias, dtype=dtype)


def int8_mixed_scaled_mm(
    A: torch.Tensor,
    CA: torch.Tensor,
    CB: torch.Tensor,
    SCA: torch.Tensor,
    SCB: torch.Tensor,
    outlier_cols: Optional[torch.Tensor] = None,
    bias: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """LLM.int8() forward from a quantized A: ``(Y, A[:, outlier_cols] or None)``."""
    return _ops.int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols, bias)


def int8_double_quant(
    A: torch.Tensor,
    col_stats: Optional[torch.Tensor] = None,
    row_stats: Optional[torch.Tensor] = None,
    out_col: Optional[torch.Tensor] = None,
    out_row: Optional[torch.Tensor] = None,
    threshold: float = 0.0,
):
    """Row- and column-wise quantization: ``(CA, CAt, row_stats, col_stats, outlier_cols)``.

    bitsandbytes' argument order; its preallocated outputs (col_stats, row_stats, out_col, out_row)
    are refused there too, and stay None here: pass threshold by name."""
    for name, value in (("col_stats", col_stats), ("row_stats", row_stats), ("out_col", out_col),
                        ("out_row", out_row)):
        if value is not None:
            raise ValueError(f"int8_double_quant: argument '{name}' must be None (preallocated outputs are not "
                             f"supported; pass threshold by name), got {type(value).__name__}")
    return _ops.int8_double_quant(A, threshold)


def int8_linear(
    A: torch.Tensor,
    CB: torch.Tensor,
    SCB: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    threshold: float = 0.0,
    weight: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """The layer op of Linear8bitLt (differentiable in A, bias and, when given, the float ``weight``)."""
    return _ops.int8_linear(A, CB, SCB, bias, threshold, weight)


__all__ = [
    "int8_vectorwise_quant",
    "int8_vectorwise_dequant",
    "int8_linear_matmul",
    "int8_mm_dequant",
    "int8_scaled_mm",
    "int8_mixed_scaled_mm",
    "int8_double_quant",
    "int8_linear",
]
