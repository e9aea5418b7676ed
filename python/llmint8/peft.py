"""PEFT's LoRA on llmint8's Linear8bitLt: merging and unmerging adapters into the int8 base.

PEFT wraps any torch.nn.Linear subclass, so LoRA trains, saves and reloads on Linear8bitLt as it
is; only merging needs to know about int8 weights (PEFT adds the delta to weight.data in place).
Its dedicated path is for bitsandbytes' classes, so this module gives PEFT a LoRA layer for
Linear8bitLt through PEFT's own extension point, the custom module mapping of a LoraConfig:

    config = llmint8.peft.register(LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    model = get_peft_model(model, config)
    ...
    model = model.merge_and_unload()  # Linear8bitLt layers holding the merged weights, in int8

Merging dequantizes the weight, lets PEFT add the delta (plain LoRA, safe_merge, lora_bias and
its variants), and quantizes the result again; unmerging does the same with the delta subtracted.
Each requantization rounds the weight to int8 once more, as with bitsandbytes.
"""

import contextlib

import torch
from peft import LoraConfig
from peft.tuners.lora.layer import Linear as LoraLinear

from .nn import Int8Params, Linear8bitLt


@contextlib.contextmanager
def _float_weight(layer: Linear8bitLt):
    """Within the block, layer.weight is the float32 dequantized weight (a plain Parameter PEFT may
    change in place); after it, the weight is quantized again. An error inside restores the
    int8 weight as it was."""
    weight = layer.weight
    if not weight.is_int8:  # has_fp16_weights: already float
        yield
        return
    float_weight = torch.ops.llmint8.int8_vectorwise_dequant(weight.detach(), weight.SCB)
    layer.weight = torch.nn.Parameter(float_weight, requires_grad=False)
    try:
        yield
    except BaseException:
        layer.weight = weight
        raise
    merged = layer.weight.detach()
    layer.weight = Int8Params(merged, requires_grad=False, has_fp16_weights=False).to(merged.device)
    layer.state.reset_grads()  # the state pointed at the old codes


class Linear8bitLtLora(LoraLinear):
    """PEFT's LoRA Linear around an llmint8 Linear8bitLt: forward and training as PEFT's; merge and
    unmerge go through the dequantized weight and quantize the result again."""

    def merge(self, safe_merge: bool = False, adapter_names=None) -> None:
        with _float_weight(self.get_base_layer()):
            super().merge(safe_merge=safe_merge, adapter_names=adapter_names)

    def unmerge(self) -> None:
        if not self.merged:  # PEFT warns and returns: nothing to quantize again
            return super().unmerge()
        with _float_weight(self.get_base_layer()):
            super().unmerge()


def register(config: LoraConfig) -> LoraConfig:
    """Makes PEFT wrap Linear8bitLt layers in Linear8bitLtLora for this config; returns the config.
    The mapping is not saved with an adapter: pass a registered config when loading one
    (PeftModel.from_pretrained(model, path, config=register(LoraConfig.from_pretrained(path))))."""
    if not isinstance(config, LoraConfig):
        raise TypeError(f"llmint8.peft.register: argument 'config' must be a peft.LoraConfig, "
                        f"got {type(config).__name__}")
    config._register_custom_module({Linear8bitLt: Linear8bitLtLora})
    return config


__all__ = ["Linear8bitLtLora", "register"]
