"""MatmulLtState: what one 8-bit layer knows about its quantized weight (bitsandbytes' names)."""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass
class MatmulLtState:
    CB: Optional[torch.Tensor] = None  # int8 [out, in] weight codes
    SCB: Optional[torch.Tensor] = None  # fp32 [out] absmax of each weight row
    threshold: float = 0.0  # outlier threshold (0: pure int8)
    has_fp16_weights: bool = True  # training mode: a float master weight, quantized afresh each forward
    is_training: bool = False
    idx: Optional[torch.Tensor] = None  # outlier columns of the last forward (recorded with use_pool)
    use_pool: bool = False  # outlier pooling: remember outlier columns per hidden size across layers
