"""8-bit loading configuration: the 8-bit fields of transformers' BitsAndBytesConfig."""

import math
import numbers
from dataclasses import asdict, dataclass
from typing import List, Optional

try:  # with transformers installed, the config is one of its quantization configs ("llmint8")
    from transformers.utils.quantization_config import QuantizationConfigMixin as _ConfigBase
except ImportError:
    _ConfigBase = object

#: The outlier threshold's rule, in every message about one (as csrc/include/llmint8/checks.h's kThresholdRule).
THRESHOLD_RULE = "a finite number >= 0 (0 disables outlier handling)"

#: Modules kept in floating point whatever the configuration says: the output head.
DEFAULT_SKIP_MODULES = ("lm_head",)


@dataclass
class Int8Config(_ConfigBase):
    """How to load a model in 8 bits (names and defaults as BitsAndBytesConfig's 8-bit fields).

    load_in_8bit: swap Linear layers for Linear8bitLt.
    llm_int8_threshold: outlier threshold of LLM.int8() (6.0; 0 disables the float path).
    llm_int8_skip_modules: module names kept in floating point, in addition to lm_head.
    llm_int8_has_fp16_weight: keep a trainable float master weight (training mode).
    llm_int8_enable_fp32_cpu_offload: allow modules placed on the CPU to stay in fp32.
    """

    load_in_8bit: bool = True
    llm_int8_threshold: float = 6.0
    llm_int8_skip_modules: Optional[List[str]] = None
    llm_int8_has_fp16_weight: bool = False
    llm_int8_enable_fp32_cpu_offload: bool = False
    quant_method: str = "llmint8"

    def __post_init__(self):
        if not (isinstance(self.llm_int8_threshold, numbers.Real) and math.isfinite(self.llm_int8_threshold)
                and self.llm_int8_threshold >= 0.0):
            raise ValueError(f"Int8Config: llm_int8_threshold must be {THRESHOLD_RULE}, got {self.llm_int8_threshold!r}")
        if self.llm_int8_skip_modules is not None and isinstance(self.llm_int8_skip_modules, str):
            raise TypeError("Int8Config: llm_int8_skip_modules must be a list of module names, got a string")

    @property
    def skip_modules(self) -> List[str]:
        """lm_head plus the configured skip list."""
        return list(dict.fromkeys([*DEFAULT_SKIP_MODULES, *(self.llm_int8_skip_modules or [])]))

    def to_dict(self) -> dict:
        d = asdict(self)
        # transformers sends every saved config with load_in_8bit to bitsandbytes; the
        # quant_method "llmint8" alone says 8-bit (and from_dict restores the default True).
        d.pop("load_in_8bit")
        return d
