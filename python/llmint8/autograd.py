"""bitsandbytes.matmul: the LLM.int8() product as a function of an input and a weight, with its state."""

from typing import Optional

import torch

from .nn.modules import check_threshold, quantize_weight
from .state import MatmulLtState


def matmul(
    A: torch.Tensor,
    B: torch.Tensor,
    out: Optional[torch.Tensor] = None,
    state: Optional[MatmulLtState] = None,
    threshold: float = 0.0,
    bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``A @ B.T + bias`` by LLM.int8(), in A's dtype: what a Linear8bitLt computes, for weight B [N, K].

    B is quantized into state.CB and state.SCB when the state has none yet, or at every call when
    state.has_fp16_weights (then gradients reach B if it requires them). A state holding the codes
    of a frozen weight (has_fp16_weights False) uses them and leaves B unread, as in bitsandbytes.
    A positive `threshold` replaces state.threshold. Differentiable in A and bias; written into
    `out` too when given.
    """
    check_threshold("matmul", threshold)
    state = state if state is not None else MatmulLtState()
    if threshold > 0.0:
        state.threshold = threshold
    weight = None
    if state.has_fp16_weights or state.CB is None:
        if not isinstance(B, torch.Tensor) or B.dim() != 2:
            got = f"{B.dim()} dimension(s)" if isinstance(B, torch.Tensor) else type(B).__name__
            raise ValueError(f"matmul: argument 'B' must be a weight [N, K] (2 dimensions) to quantize, got {got}")
        state.CB, state.SCB = quantize_weight(B)
        if state.has_fp16_weights and B.requires_grad:
            weight = B
    result = torch.ops.llmint8.int8_linear(A, state.CB, state.SCB, bias, state.threshold, weight)
    if out is not None:
        return out.copy_(result)
    return result


__all__ = ["matmul"]
