"""8-bit modules: Int8Params and Linear8bitLt, with bitsandbytes' names and defaults."""

from .modules import Int8Params, Linear8bitLt, OutlierPooler

__all__ = ["Int8Params", "Linear8bitLt", "OutlierPooler"]
