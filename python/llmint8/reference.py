"""Pure-PyTorch reference of every llmint8 op, written from SPEC.md.

Codes and stats follow the spec's fp32 recipe exactly (so kernels must match
bit for bit); every product and dequantization is done in float64, so the
kernels' float outputs can be judged against it. Slow and simple on purpose:
used by the tests and the benchmarks, never on a hot path.
"""

import math
from typing import Optional

import torch

INV_127 = 1.0 / 127.0


def _rows(A: torch.Tensor) -> torch.Tensor:
    # Rows counted, not inferred: reshape(-1, 0) is ambiguous when K = 0.
    return A.reshape(math.prod(A.shape[:-1]), A.shape[-1])


def outlier_column_mask(A: torch.Tensor, threshold: float) -> torch.Tensor:
    """bool [K]: columns where some row has |A| >= threshold (all False at threshold 0)."""
    A2 = _rows(A)
    if threshold == 0.0:
        return torch.zeros(A2.shape[1], dtype=torch.bool, device=A.device)
    return (A2.float().abs() >= threshold).any(dim=0)


def _nan_absmax(x: torch.Tensor, dim: int) -> torch.Tensor:
    # amax propagates NaN; an empty reduction is 0.
    if x.shape[dim] == 0:
        shape = list(x.shape)
        del shape[dim]
        return torch.zeros(shape, dtype=x.dtype, device=x.device)
    return x.abs().amax(dim=dim)


def _codes(x: torch.Tensor, stat: torch.Tensor) -> torch.Tensor:
    """rint(x * (127 / stat)) in fp32; 0 where stat is 0 or not finite."""
    usable = torch.isfinite(stat) & (stat > 0)
    # 127 / stat correctly rounded to fp32 (Python's `127.0 / tensor` multiplies by a reciprocal: 1 ulp off).
    safe = torch.where(usable, stat, torch.ones_like(stat)).double()
    scale = torch.where(usable, (127.0 / safe).float(), torch.zeros_like(stat))
    q = torch.round(x * scale).clamp(-127, 127)
    return torch.where(usable, q, torch.zeros_like(q)).to(torch.int8)


def int8_vectorwise_quant(A: torch.Tensor, threshold: float = 0.0):
    A2 = _rows(A).float()
    mask = outlier_column_mask(A, threshold)
    kept = A2.masked_fill(mask, 0.0)
    stats = _nan_absmax(kept, dim=1)
    CA = _codes(kept, stats.unsqueeze(1)).masked_fill(mask, 0)
    cols = torch.nonzero(mask).flatten() if threshold > 0 else None
    return CA.reshape(A.shape), stats, cols


def int8_vectorwise_dequant(A: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
    return (_rows(A).double() * stats.double().unsqueeze(1) / 127.0).reshape(A.shape)


def int8_linear_matmul(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Exact int32 product: float64 holds every partial sum exactly (|sum| <= 127^2 K < 2^53), and
    float64 matmul runs on any device (int64 matmul has no CUDA kernel). Fits int32 for K <= 133,144."""
    out = _rows(A).double() @ B.double().t()
    return out.to(torch.int32).reshape(*A.shape[:-1], B.shape[0])


def int8_mm_dequant(A, row_stats, col_stats, dtype=None, bias=None) -> torch.Tensor:
    """float64 result (cast to the op's dtype by the caller when comparing)."""
    out = _rows(A).double() * row_stats.double().unsqueeze(1) * col_stats.double().unsqueeze(0) / (127.0 * 127.0)
    if bias is not None:
        out = out + bias.double()
    return out.reshape(A.shape)


def int8_scaled_mm(A, B, row_stats, col_stats, bias=None, dtype=None) -> torch.Tensor:
    return int8_mm_dequant(int8_linear_matmul(A, B), row_stats, col_stats, bias=bias)


def dequantize_weight(CB: torch.Tensor, SCB: torch.Tensor) -> torch.Tensor:
    """float64 W = CB * SCB / 127."""
    return CB.double() * SCB.double().unsqueeze(1) * INV_127


def int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, outlier_cols=None, bias=None):
    A2 = _rows(A)
    out = _rows(int8_scaled_mm(CA, CB, SCA, SCB, bias=bias))
    sub_a = None
    if outlier_cols is not None:
        sub_a = A2[:, outlier_cols]
        out = out + sub_a.double() @ dequantize_weight(CB, SCB)[:, outlier_cols].t()
    return out.reshape(*A.shape[:-1], CB.shape[0]), sub_a


def int8_double_quant(A: torch.Tensor, threshold: float = 0.0):
    CA, row_stats, cols = int8_vectorwise_quant(A, threshold)
    A2 = _rows(A).float()
    mask = outlier_column_mask(A, threshold)
    kept = A2.masked_fill(mask, 0.0)
    col_stats = _nan_absmax(kept, dim=0)
    CAt = _codes(kept, col_stats.unsqueeze(0)).masked_fill(mask, 0)
    return CA, CAt.reshape(A.shape), row_stats, col_stats, cols


def int8_linear(A, CB, SCB, bias=None, threshold: float = 0.0, weight=None) -> torch.Tensor:
    """LLM.int8() forward of SPEC section 2, in float64."""
    CA, SCA, cols = int8_vectorwise_quant(A, threshold)
    out, _ = int8_mixed_scaled_mm(A, CA, CB, SCA, SCB, cols, bias)
    return out


def linear_float64(A: torch.Tensor, W: torch.Tensor, bias: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain float64 A @ W^T + bias: what an 8-bit layer approximates."""
    out = A.double() @ W.double().t()
    return out + bias.double() if bias is not None else out
