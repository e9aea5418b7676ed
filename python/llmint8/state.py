"""MatmulLtState: what one 8-bit layer knows about its quantized weight (bitsandbytes' names)."""

import warnings
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import torch

# Fields that decide how a Linear8bitLt holding this state computes: setting one tells the layer
# (Linear8bitLt._follow_weight), whose compiled forward reads a copy of them.
_LAYER_FIELDS = frozenset({"threshold", "has_fp16_weights", "use_pool"})


def tell_on_change(holder, layer) -> None:
    """Registers layer with an Int8Params or a MatmulLtState, which call tell_layers() when what the
    layer's compiled forward copies from them changes (weakly held: no cycle, no leak)."""
    holder.__dict__.setdefault("_layers", weakref.WeakSet()).add(layer)


def tell_layers(holder) -> None:
    """Has every layer registered with holder follow its weight again (Linear8bitLt._follow_weight)."""
    for layer in list(holder.__dict__.get("_layers", ())):
        layer._follow_weight()


# Fields of bitsandbytes' state for its retired tiled layouts: always None there, read by older
# serving code (TGI, vLLM). Reading one warns, as in bitsandbytes.
_RETIRED_FIELDS = frozenset({"CxB", "CxBt", "formatB", "_tile_indices"})


@dataclass
class MatmulLtState:
    CB: Optional[torch.Tensor] = None  # int8 [out, in] weight codes
    SCB: Optional[torch.Tensor] = None  # fp32 [out] absmax of each weight row
    threshold: float = 0.0  # outlier threshold (0: pure int8)
    has_fp16_weights: bool = True  # training mode: a float master weight, quantized afresh each forward
    is_training: bool = False
    # Outlier columns of the last forward. Recorded only with use_pool: the default forward never
    # synchronizes with the host, and their count is known only there (README, differences).
    idx: Optional[torch.Tensor] = None
    use_pool: bool = False  # outlier pooling: remember outlier columns per hidden size across layers
    # bitsandbytes' names with nothing behind them here, kept so that code setting or reading them runs:
    # the column-major copies of its older training path (CBt, SB, SBt, subB), its pooler object
    # (pooling is use_pool here), and switches of kernels that no longer exist.
    CBt: Optional[torch.Tensor] = None
    SB: Optional[torch.Tensor] = None
    SBt: Optional[torch.Tensor] = None
    subB: Optional[torch.Tensor] = None
    outlier_pool: Any = None
    has_accumulated_gradients: bool = False
    force_no_igemmlt: bool = False

    def __setattr__(self, name, value):
        object.__setattr__(self, name, value)
        if name in _LAYER_FIELDS:
            tell_layers(self)

    def __getstate__(self):
        # The layers holding this state are not part of it (a copy or an unpickled state has none yet).
        return {k: v for k, v in self.__dict__.items() if k != "_layers"}

    def __getattr__(self, name):
        if name in _RETIRED_FIELDS:
            warnings.warn(f"MatmulLtState.{name} belongs to bitsandbytes' retired tiled weight layouts and is always "
                          "None; stop reading it", FutureWarning, stacklevel=2)
            return None
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def reset_grads(self) -> None:
        """Forgets the quantized weight (CB, SCB and the unused copies): the next forward quantizes afresh."""
        self.CB = self.SCB = self.CBt = self.SB = self.SBt = None
