"""Swapping a model's Linear layers for Linear8bitLt."""

from typing import List, Optional

import torch

from .config import Int8Config
from .nn import Linear8bitLt


def _conv1d_class():
    """transformers' GPT-2 style Conv1D (a Linear with its weight stored [in, out]), when installed."""
    try:
        from transformers.pytorch_utils import Conv1D
    except ImportError:
        return None
    return Conv1D


def _is_skipped(name: str, skip_modules) -> bool:
    """name (dotted path) is skipped when a skip entry is one of its path components or runs of them."""
    padded = f".{name}."
    return any(f".{s}." in padded for s in skip_modules)


def replace_linear_with_8bit(model: torch.nn.Module, config: Optional[Int8Config] = None, **kwargs) -> List[str]:
    """Replaces every torch.nn.Linear (and transformers' GPT-2 Conv1D) of model (except lm_head and config's skip list) by a
    Linear8bitLt holding the same weight and bias, in place. Works on models built on the
    meta device (nothing is quantized until the weights are placed). Returns the dotted
    names of the replaced modules.

        replace_linear_with_8bit(model, Int8Config(llm_int8_threshold=6.0))
        replace_linear_with_8bit(model, llm_int8_threshold=6.0, llm_int8_skip_modules=["mlp"])
    """
    if config is not None and kwargs:
        raise TypeError("replace_linear_with_8bit: give either an Int8Config or keyword arguments, not both")
    cfg = config if config is not None else Int8Config(**kwargs)
    skip = cfg.skip_modules
    conv1d = _conv1d_class()
    kinds = (torch.nn.Linear,) if conv1d is None else (torch.nn.Linear, conv1d)
    targets = []
    for parent_name, parent in model.named_modules():
        for child_name, child in parent.named_children():
            full = f"{parent_name}.{child_name}" if parent_name else child_name
            if isinstance(child, kinds) and not isinstance(child, Linear8bitLt) and not _is_skipped(full, skip):
                targets.append((parent, child_name, child, full))
    for parent, child_name, child, _ in targets:
        make = Linear8bitLt.from_conv1d if conv1d is not None and isinstance(child, conv1d) else Linear8bitLt.from_linear
        layer = make(child, threshold=cfg.llm_int8_threshold, has_fp16_weights=cfg.llm_int8_has_fp16_weight)
        layer.train(child.training)
        setattr(parent, child_name, layer)
    return [full for *_, full in targets]
