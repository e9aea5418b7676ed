"""transformers integration: the "llmint8" quantizer and quantization config, so that

    AutoModelForCausalLM.from_pretrained(path, quantization_config=llmint8.Int8Config(...), device_map=...)

builds the model on the meta device, swaps its Linear layers for Linear8bitLt and quantizes each
weight as it is placed. Registered when llmint8 is imported with transformers installed; where
bitsandbytes is not installed, its 8-bit checkpoints (and BitsAndBytesConfig(load_in_8bit=True))
go through llmint8 as well.
"""

import importlib.util
import sys

import torch
from tqdm import tqdm
from transformers.core_model_loading import ConversionOps, WeightConverter
from transformers.pytorch_utils import Conv1D
from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING, register_quantization_config, register_quantizer
from transformers.quantizers.base import HfQuantizer
from transformers.quantizers.quantizers_utils import get_module_from_name

from ._untrusted import INT8_CODES, check_layer_entries, entry_missing, entry_problem, non_finite
from .config import Int8Config
from .nn import Int8Params, Linear8bitLt
from .replace import replace_linear_with_8bit

register_quantization_config("llmint8")(Int8Config)


def _offloaded(device_map):
    """The device_map entries placed on the CPU or disk."""
    return [k for k, v in device_map.items() if str(v) in ("cpu", "disk")]


class QuantizeOnPlacement(ConversionOps):
    """A float weight arriving for a Linear8bitLt becomes its int8 codes and row scales, on its device."""

    def __init__(self, quantizer):
        self.quantizer = quantizer

    def convert(self, input_dict, model=None, full_layer_name=None, **kwargs):
        has_fp16 = self.quantizer.quantization_config.llm_int8_has_fp16_weight
        result = {}
        for name, value in input_dict.items():
            value = value[0] if isinstance(value, list) else value
            module, _ = get_module_from_name(model, name)
            if getattr(module, "source_cls", None) is Conv1D:  # GPT-2 checkpoints store [in, out]
                value = value.t()
            result[name] = Int8Params(value.contiguous(), requires_grad=has_fp16,
                                      has_fp16_weights=has_fp16).to(value.device)
        self.quantizer.quantized(len(result))
        return result


class LoadQuantized(ConversionOps):
    """weight (int8) + SCB (+ weight_format) of a saved 8-bit layer become one Int8Params."""

    def __init__(self, quantizer):
        self.quantizer = quantizer

    def convert(self, input_dict, model=None, full_layer_name=None, **kwargs):
        values = {k: (v[0] if isinstance(v, list) else v) for k, v in input_dict.items()}
        weight = next((v for k, v in values.items() if k.endswith("weight")), None)
        scb = next((v for k, v in values.items() if k.endswith("SCB")), None)
        fmt = next((v for k, v in values.items() if k.endswith("weight_format")), None)
        module, _ = get_module_from_name(model, full_layer_name)
        if not isinstance(module, Linear8bitLt):
            return input_dict  # embeddings, norms, lm_head, skipped layers: float as saved
        # Everything is checked before anything is set (the check Linear8bitLt.load_state_dict makes):
        # a bad checkpoint loads nothing of this layer. A pre-quantized layer needs its int8 codes.
        prefix = full_layer_name[: -len("weight")]
        keys = (prefix + "weight", prefix + "SCB", prefix + "weight_format")
        problem = check_layer_entries(weight, scb, fmt, keys, module.out_features, module.in_features)
        if not problem and (weight is None or weight.dtype != torch.int8):
            problem = entry_missing(keys[0]) if weight is None else entry_problem(keys[0], INT8_CODES, weight.dtype)
        if problem:
            raise ValueError(problem)
        module._is_hf_initialized = True
        return {"weight": Int8Params(weight, False, False, CB=weight, SCB=scb.to(weight.device, torch.float32))}


@register_quantizer("llmint8")
class LlmInt8HfQuantizer(HfQuantizer):
    """LLM.int8() through llmint8's Linear8bitLt (no bitsandbytes needed)."""

    requires_calibration = False

    def validate_environment(self, *args, **kwargs):
        # Called with the user's device_map, then again with the map "auto"/"balanced" inferred from max_memory.
        device_map = kwargs.get("device_map")
        if not isinstance(device_map, dict):
            return
        if self.quantization_config.llm_int8_enable_fp32_cpu_offload:
            self._keep_offloaded_modules_in_float(device_map)
            return
        places = {str(v) for v in device_map.values()}
        if places == {"cpu"} and not getattr(self, "_gpus_budgeted", False):
            return  # a CPU model asked for: int8 on the CPU is fine
        offloaded = [k or "(the whole model)" for k in _offloaded(device_map)]
        if offloaded:
            shown = ", ".join(offloaded[:4]) + (f" and {len(offloaded) - 4} more" if len(offloaded) > 4 else "")
            raise ValueError(f"llmint8: max_memory cannot hold the 8-bit model where device_map asks: {shown} would be "
                             f"offloaded to {' and '.join(sorted(places & {'cpu', 'disk'}))}; raise max_memory, or pass "
                             "Int8Config(llm_int8_enable_fp32_cpu_offload=True) to keep offloaded modules in fp32")

    def _keep_offloaded_modules_in_float(self, device_map):
        """An inferred map ("auto", "balanced") comes after the swap: put the float modules back
        (still on meta, weights not loaded) wherever it offloads to the CPU or disk."""
        model = getattr(self, "_model", None)
        if model is None:  # the user's own map: _process_model_before_weight_loading skips those modules
            return
        offloaded = _offloaded(device_map)
        for name, module in list(model.named_modules()):
            if isinstance(module, Linear8bitLt) and any(p == "" or name == p or name.startswith(p + ".")
                                                        for p in offloaded):
                parent, _, child = name.rpartition(".")
                setattr(model.get_submodule(parent), child, self._float_modules[name])
                self.modules_to_not_convert.append(name)
                if name in self._to_quantize:
                    self._to_quantize.remove(name)

    def update_device_map(self, device_map):
        if device_map is None:
            device_map = {"": torch.cuda.current_device() if torch.cuda.is_available() else "cpu"}
        return device_map

    def adjust_max_memory(self, max_memory):
        # "auto"/"balanced": remember whether GPUs were offered, so that a map that leaves them empty is an error.
        self._gpus_budgeted = any(not isinstance(k, str) and v > 0 for k, v in max_memory.items())
        return {key: val * 0.90 for key, val in max_memory.items()}  # room for activations' int8 copies

    def param_element_size(self, model, param_name, param):
        if self.param_needs_quantization(model, param_name):
            return 1
        return super().param_element_size(model, param_name, param)

    def param_needs_quantization(self, model, param_name, **kwargs) -> bool:
        module, name = get_module_from_name(model, param_name)
        return isinstance(module, Linear8bitLt) and name != "bias"

    def _process_model_before_weight_loading(self, model, device_map=None, **kwargs):
        cfg = self.quantization_config
        skip = self.get_modules_to_not_convert(model, cfg.llm_int8_skip_modules, model._keep_in_fp32_modules)
        if cfg.llm_int8_enable_fp32_cpu_offload and isinstance(device_map, dict):
            skip.extend(_offloaded(device_map))
        self.modules_to_not_convert = skip
        # The float modules (on meta: free), in case an inferred map offloads some of them.
        self._model = model
        self._float_modules = {n: m for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))}
        self._progress = None
        self._to_quantize = replace_linear_with_8bit(model, Int8Config(llm_int8_threshold=cfg.llm_int8_threshold,
                                                   llm_int8_skip_modules=list(skip),
                                                   llm_int8_has_fp16_weight=cfg.llm_int8_has_fp16_weight))

    def quantized(self, count):
        """Progress of the quantization (a bar on a terminal only; not for pre-quantized loads)."""
        if self._progress is None:
            self._progress = tqdm(total=len(self._to_quantize), desc="Quantizing to int8", unit="layer",
                                  disable=not sys.stderr.isatty(), leave=False)
        self._progress.update(count)

    def _process_model_after_weight_loading(self, model, **kwargs):
        if getattr(self, "_progress", None) is not None:
            self._progress.close()
        # Every float weight as loaded (embeddings, norms, lm_head too): a non-finite one would give
        # a model that emits one token forever. The int8 layers were checked on their way in.
        for name, param in model.named_parameters():
            if not param.is_meta and non_finite(param):
                raise ValueError("llmint8: the checkpoint's " + entry_problem(name, "finite values", non_finite(param)))
        for module in model.modules():  # the loader may have written weights into _parameters directly
            if isinstance(module, Linear8bitLt):
                module._follow_weight()
        model.is_loaded_in_8bit = True
        model.is_8bit_serializable = True
        return model

    def is_serializable(self):
        return True

    @property
    def is_trainable(self) -> bool:
        return True

    @property
    def is_compileable(self) -> bool:
        # The layer op is sync-free with fake kernels: generate() may compile the forward (static cache).
        return True

    def get_quantize_ops(self):
        return QuantizeOnPlacement(self)

    def get_weight_conversions(self):
        if self.pre_quantized:
            return [WeightConverter(source_patterns=["SCB", "weight_format", "weight"], target_patterns="weight",
                                    operations=[LoadQuantized(self)])]
        return []


# Checkpoints saved by bitsandbytes (quant_method "bitsandbytes", load_in_8bit) have the same
# tensors: where bitsandbytes itself is not installed, transformers loads them through llmint8.
if importlib.util.find_spec("bitsandbytes") is None:
    AUTO_QUANTIZER_MAPPING["bitsandbytes_8bit"] = LlmInt8HfQuantizer
