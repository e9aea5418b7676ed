"""Int8Params and Linear8bitLt (drop-in for bitsandbytes.nn), and the outlier pooler."""

import copy
import math
import numbers
from typing import Dict, Optional, Set

import torch

from .._untrusted import check_layer_entries, entry_problem, non_finite
from ..config import THRESHOLD_RULE
from ..state import MatmulLtState, tell_layers, tell_on_change

_int8_linear = torch.ops.llmint8.int8_linear.default  # the overload itself: no packet lookup per call


def check_threshold(owner: str, threshold) -> None:
    """The ops' rule (csrc/checks.cpp): a finite number >= 0; NaN would fail only at the first forward."""
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise TypeError(f"{owner}: argument 'threshold' must be a number, got {threshold!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{owner}: argument 'threshold' must be {THRESHOLD_RULE}, got {value:g}")


def quantize_weight(weight: torch.Tensor, device=None):
    """(CB int8, SCB fp32) of a float weight [out, in], on `device` (default: where it is)."""
    w = weight.detach().to(device=device if device is not None else weight.device, dtype=torch.float32)
    if w.numel() and not torch.isfinite(w).all():
        bad = (~torch.isfinite(w)).nonzero()[0].tolist()
        raise ValueError(f"llmint8: cannot quantize a weight with non-finite values (first at {bad})")
    CB, SCB, _ = torch.ops.llmint8.int8_vectorwise_quant(w, 0.0)
    return CB, SCB


class Int8Params(torch.nn.Parameter):
    """A weight that quantizes itself to int8 (CB) with row scales (SCB) when moved to a device.

    The move (`.to(device)`, `.cuda()`, `.cpu()`, also CPU to CPU) quantizes float data once;
    int8 data is never quantized again, and CB and SCB follow it through moves, copy,
    deepcopy and pickle. With has_fp16_weights=True the data stays float (training mode).
    """

    def __new__(cls, data=None, requires_grad=True, has_fp16_weights=False, CB=None, SCB=None):
        if data is None:
            data = torch.empty(0)
        obj = torch.Tensor._make_subclass(cls, data, requires_grad)
        obj.has_fp16_weights = has_fp16_weights
        obj.CB = CB
        obj.SCB = SCB
        return obj

    # Module._apply (behind module.to/cuda/half) keeps the old Parameter object and
    # assigns the moved tensor to its .data: carry CB and SCB across that assignment.
    @property
    def data(self):
        return torch._C.TensorBase.data.__get__(self)

    @data.setter
    def data(self, value):
        torch._C.TensorBase.data.__set__(self, value)
        if isinstance(value, Int8Params):
            self.has_fp16_weights, self.CB, self.SCB = value.has_fp16_weights, value.CB, value.SCB
        tell_layers(self)

    # The Linear8bitLt layers holding this weight keep views of CB and SCB for their compiled forward
    # (Linear8bitLt._follow_weight): rebinding either, or the data, tells them.
    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in ("CB", "SCB"):
            tell_layers(self)

    # Not named is_quantized: torch.Tensor.is_quantized means a qint8 tensor, and fake tensors
    # (torch.compile) refuse a tensor that claims to be one.
    @property
    def is_int8(self) -> bool:
        """Whether the data holds int8 codes (quantized), not a float weight."""
        return self.dtype == torch.int8

    def to(self, *args, **kwargs):
        device, dtype, non_blocking, _ = torch._C._nn._parse_to(*args, **kwargs)
        if self.is_int8:  # int8 codes never change dtype; SCB moves with them
            data = torch.Tensor.to(self.detach(), device=device, non_blocking=non_blocking).detach()
            scb = self.SCB.to(device=device, non_blocking=non_blocking) if self.SCB is not None else None
            return Int8Params(data, False, False, CB=data, SCB=scb)
        if not self.has_fp16_weights and device is not None and device.type != "meta":
            CB, SCB = quantize_weight(self, device)
            return Int8Params(CB, False, False, CB=CB, SCB=SCB)
        moved = torch.Tensor.to(self.detach(), device=device, dtype=dtype, non_blocking=non_blocking).detach()
        return Int8Params(moved, self.requires_grad, self.has_fp16_weights)

    def _quantize(self, device):
        """Quantizes this parameter's float data in place onto `device` and returns it (bitsandbytes'
        method; `.to(device)` does the same into a new parameter). Training-mode weights just move."""
        if self.has_fp16_weights:
            return self.to(device)
        if not self.is_int8:
            CB, SCB = quantize_weight(self, device)
            self.requires_grad_(False)  # int8 tensors cannot require grad
            self.data, self.CB, self.SCB = CB, CB, SCB
        return self

    def cuda(self, device=None, non_blocking=False):
        return self.to(device=torch.device("cuda") if device is None else torch.device("cuda", device)
                       if isinstance(device, int) else device, non_blocking=non_blocking)

    def cpu(self):
        return self.to(device="cpu")

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        data = self.detach().clone(memory_format=torch.preserve_format)
        scb = copy.deepcopy(self.SCB, memo)
        result = Int8Params(data, self.requires_grad, self.has_fp16_weights,
                            CB=data if self.CB is not None else None, SCB=scb)
        memo[id(self)] = result
        return result

    def __reduce_ex__(self, protocol):
        return (_rebuild_int8_params,
                (self.detach(), self.requires_grad, self.has_fp16_weights, self.CB is not None, self.SCB))

    def __repr__(self):
        kind = "int8 codes" if self.is_int8 else ("float, trainable" if self.has_fp16_weights else "float")
        return f"Int8Params({kind}, shape={tuple(self.shape)}, device={self.device})"


def _rebuild_int8_params(data, requires_grad, has_fp16_weights, has_cb, SCB):
    return Int8Params(data, requires_grad, has_fp16_weights, CB=data if has_cb else None, SCB=SCB)


class OutlierPooler:
    """Outlier columns seen so far, per hidden size (the seed's GlobalOutlierPooler).

    Layers whose state.use_pool is on treat every pooled column of their input
    size as an outlier, as well as the ones their own input shows.
    """

    _columns: Dict[int, Set[int]] = {}

    @classmethod
    def add(cls, hidden_size: int, columns: torch.Tensor) -> None:
        cls._columns.setdefault(hidden_size, set()).update(columns.tolist())

    @classmethod
    def get(cls, hidden_size: int) -> torch.Tensor:
        return torch.tensor(sorted(cls._columns.get(hidden_size, ())), dtype=torch.int64)

    @classmethod
    def reset(cls) -> None:
        cls._columns.clear()


class Linear8bitLt(torch.nn.Linear):
    """Linear layer with LLM.int8() weights: bitsandbytes.nn.Linear8bitLt's signature and defaults.

    The weight is an Int8Params: quantized to int8 (weight) with one fp32 scale per
    output row (weight.SCB) when the module is moved to a device, or at the first
    forward. threshold > 0 computes the outlier input columns in floating point.
    has_fp16_weights=True keeps a trainable float weight, quantized afresh at each forward.
    """

    # What the compiled forward reads instead of self.state, weight.CB and weight.SCB (set by
    # _follow_weight; None until the weight holds int8 codes). torch.compile checks every guard of a
    # model before each call, a token in generate(), but skips a module whose __dict__ is unchanged
    # and holds only immutable values (floats, exact nn.Parameters). The state (a plain object), the
    # weight's CB and SCB (attributes of a tensor) and the Int8Params itself each defeat that: int8
    # models took 4-5x nn.Linear's guard time on a CPU, 2.5x in a 32-layer model on an H200
    # (benchmarks/NOTES.md, eleventh session; benchmarks/bench_guards.py measures it).
    _cb_view: Optional[torch.nn.Parameter] = None  # weight.CB, as a plain Parameter sharing its memory
    _scb_view: Optional[torch.nn.Parameter] = None  # weight.SCB, likewise
    _threshold: Optional[float] = None  # state.threshold; None where the compiled forward takes the general path
    _view_sources = None  # (weight.CB, weight.SCB) the views were made from

    def __init__(self, input_features: int, output_features: int, bias: bool = True,
                 has_fp16_weights: bool = True, threshold: float = 0.0, index=None, device=None):
        check_threshold("Linear8bitLt", threshold)
        for name, value in (("input_features", input_features), ("output_features", output_features)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise ValueError(f"Linear8bitLt: argument '{name}' must be an integer >= 0, got {value!r}")
        super().__init__(input_features, output_features, bias, device=device)
        self.state = MatmulLtState(threshold=threshold, has_fp16_weights=has_fp16_weights)
        self.index = index
        self.weight = Int8Params(self.weight.data, requires_grad=has_fp16_weights, has_fp16_weights=has_fp16_weights)

    @classmethod
    def from_linear(cls, linear: torch.nn.Linear, threshold: float = 0.0, has_fp16_weights: bool = False):
        """A Linear8bitLt holding linear's weight and bias (not yet quantized; works on meta too)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    has_fp16_weights=has_fp16_weights, threshold=threshold, device="meta")
        layer.weight = Int8Params(linear.weight.data, requires_grad=has_fp16_weights,
                                  has_fp16_weights=has_fp16_weights)
        if linear.bias is not None:
            layer.bias = torch.nn.Parameter(linear.bias.data, requires_grad=linear.bias.requires_grad)
        return layer

    @classmethod
    def from_conv1d(cls, conv, threshold: float = 0.0, has_fp16_weights: bool = False):
        """A Linear8bitLt computing what a GPT-2 style Conv1D (weight [in, out]) computes. Its
        source_cls tells loaders that checkpoint weights of this layer come transposed."""
        in_features, out_features = conv.weight.shape
        layer = cls(in_features, out_features, conv.bias is not None, has_fp16_weights=has_fp16_weights,
                    threshold=threshold, device="meta")
        layer.weight = Int8Params(conv.weight.data.t().contiguous(), requires_grad=has_fp16_weights,
                                  has_fp16_weights=has_fp16_weights)
        if conv.bias is not None:
            layer.bias = torch.nn.Parameter(conv.bias.data, requires_grad=conv.bias.requires_grad)
        layer.source_cls = type(conv)
        return layer

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"threshold={self.state.threshold}, has_fp16_weights={self.state.has_fp16_weights}, "
                f"quantized={self.weight.dtype == torch.int8}")

    def init_8bit_state(self):
        """Points state.CB and state.SCB at the weight's int8 codes and row scales, quantizing a float
        weight that was never moved (has_fp16_weights: the float weight, afresh); returns (CB, SCB).
        bitsandbytes moves CB and SCB off the weight; here the weight keeps them, so saving, moving
        and copying the layer work the same before and after."""
        w = self.weight
        if self._float_master():
            # Every forward, as bitsandbytes does: optimizers may update the weight through
            # .data, which no version counter sees.
            self.state.CB, self.state.SCB = quantize_weight(w)
        else:
            if not w.is_int8:
                self.weight = w.to(w.device)
            self.state.CB, self.state.SCB = self.weight.CB, self.weight.SCB
            self._follow_weight()
        return self.state.CB, self.state.SCB

    def _float_master(self) -> bool:
        """Whether the weight stays float and is quantized afresh at each forward: training mode, or a
        plain Parameter put in the Int8Params' place (a weight tied to another module's)."""
        return self.state.has_fp16_weights or not isinstance(self.weight, Int8Params)

    def _follow_weight(self) -> None:
        """Points the compiled forward's views at the weight's current CB and SCB and copies the
        state's threshold (None, for the general path, unless the weight holds int8 codes for
        inference without pooling). Called wherever these can change: setting the weight or the
        state, moving the layer, loading a state dict, unpickling, init_8bit_state, rebinding the
        weight's CB, SCB or data, setting state.threshold, has_fp16_weights or use_pool. Code that
        writes module._parameters directly (accelerate does) is caught by the next eager forward, or
        by calling init_8bit_state()."""
        d = self.__dict__
        state = d.get("state")
        weight = d["_parameters"].get("weight") if "_parameters" in d else None
        if state is None or weight is None:  # (during __init__, or the weight deleted or set to None)
            d["_cb_view"] = d["_scb_view"] = d["_view_sources"] = d["_threshold"] = None
            return
        tell_on_change(state, self)
        if isinstance(weight, Int8Params):
            tell_on_change(weight, self)
        CB, SCB, threshold = getattr(weight, "CB", None), getattr(weight, "SCB", None), state.threshold
        if (type(weight) is Int8Params and weight.dtype == torch.int8 and isinstance(CB, torch.Tensor)
                and isinstance(SCB, torch.Tensor)):
            sources = d.get("_view_sources")
            if sources is None or sources[0] is not CB or sources[1] is not SCB:
                d["_cb_view"] = torch.nn.Parameter(CB, requires_grad=False)
                d["_scb_view"] = torch.nn.Parameter(SCB, requires_grad=False)
                d["_view_sources"] = (CB, SCB)
            fast = not state.has_fp16_weights and not state.use_pool and isinstance(threshold, numbers.Real)
            if fast and (state.CB is not CB or state.SCB is not SCB):
                state.CB, state.SCB = CB, SCB
        else:
            d["_cb_view"] = d["_scb_view"] = d["_view_sources"] = None
            fast = False
        d["_threshold"] = float(threshold) if fast else None

    def __setattr__(self, name, value):
        super().__setattr__(name, value)
        if name in ("weight", "state"):
            self._follow_weight()

    def __delattr__(self, name):
        super().__delattr__(name)
        if name in ("weight", "state"):
            self._follow_weight()

    def _apply(self, fn, recurse=True):  # behind to(), cuda(), half(): the weight may be a new tensor
        result = super()._apply(fn, recurse)
        self._follow_weight()
        return result

    def __getstate__(self):  # the views are remade on unpickling and after deepcopy, not copied
        state = super().__getstate__()
        for name in ("_cb_view", "_scb_view", "_view_sources", "_threshold"):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._follow_weight()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear8bitLt: input has {x.shape[-1]} features in its last dimension, "
                             f"expected in_features = {self.in_features}")
        threshold = self._threshold
        if threshold is not None:  # quantized weight, inference: the views' path, eager or compiled
            if torch.compiler.is_compiling():
                return _int8_linear(x, self._cb_view, self._scb_view, self.bias, threshold, None)
            # Eager: at batch 1 the host's time per layer is what generation waits for, so few
            # Python steps (no nn.Module.__getattr__). The views are current unless the weight
            # was written into module._parameters unseen; then the path below follows it.
            params = self._parameters
            weight, (CB, SCB) = params.get("weight"), self._view_sources
            if (type(weight) is Int8Params and weight.CB is CB and weight.SCB is SCB and weight.dtype == torch.int8
                    and "bias" in params):
                return _int8_linear(x, CB, SCB, params["bias"], threshold, None)
        state, weight = self.state, self.weight
        if not state.has_fp16_weights and type(weight) is Int8Params and weight.dtype == torch.int8:
            sources = self._view_sources
            if sources is None or sources[0] is not weight.CB or sources[1] is not weight.SCB:
                self._follow_weight()  # the weight changed unseen (module._parameters written directly)
            if state.CB is not weight.CB or state.SCB is not weight.SCB:
                state.CB, state.SCB = weight.CB, weight.SCB
            master = None
        else:
            self.init_8bit_state()
            master = self.weight if self._float_master() and self.weight.requires_grad else None
        if state.use_pool and state.threshold > 0:
            return self._forward_pooled(x, state.CB, state.SCB)
        return _int8_linear(x, state.CB, state.SCB, self.bias, state.threshold, master)

    def _forward_pooled(self, x, CB, SCB):
        # Pooled columns are made outliers by marking them inf in a copy used only for
        # detection; the float path then reads the true values. Synchronizes (opt-in).
        K = x.shape[-1]
        pooled = OutlierPooler.get(K).to(x.device)
        probe = x.detach().clone()
        probe[..., pooled] = float("inf")
        CA, SCA, cols = torch.ops.llmint8.int8_vectorwise_quant(probe, self.state.threshold)
        OutlierPooler.add(K, cols)
        self.state.idx = cols
        out, _ = torch.ops.llmint8.int8_mixed_scaled_mm(x, CA, CB, SCA, SCB, cols, self.bias)
        return out

    # --- checkpoints: bitsandbytes' layout (weight int8, SCB fp32, weight_format uint8 0, bias)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self._float_master() and self.weight.is_int8:
            scb = self.weight.SCB
            destination[prefix + "SCB"] = scb if keep_vars else scb.detach()
            destination[prefix + "weight_format"] = torch.tensor(0, dtype=torch.uint8)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's load_state_dict, all or nothing: when it raises (a bad entry, or in strict mode a
        missing or unexpected key, which torch reports only after loading the rest), the layer is
        left as it was. Inside a larger model each layer checks its own entries before changing
        anything (_load_from_state_dict); the rest follows torch's per-module semantics."""
        saved = [(name, p, None if p is None or p.is_meta else p.detach().clone())
                 for name, p in (("weight", self.weight), ("bias", self.bias))]
        state = (self.state.CB, self.state.SCB)
        try:
            return super().load_state_dict(state_dict, strict=strict, assign=assign)
        except Exception:
            with torch.no_grad():
                for name, param, data in saved:
                    setattr(self, name, param)
                    if data is not None:
                        param.data.copy_(data)  # torch copies float entries in place
            self.state.CB, self.state.SCB = state
            raise

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Every entry of this layer is checked before anything changes: one bad entry leaves the
        # layer as it was (torch would copy the good ones and report the bad).
        keys = {name: prefix + name for name in ("weight", "bias", "SCB", "weight_format")}
        entries = {name: state_dict.get(key) for name, key in keys.items()}
        problems = self._bias_problems(entries["bias"], keys["bias"])
        new_weight = None
        try:
            new_weight = self._weight_from_checkpoint(entries["weight"], entries["SCB"], entries["weight_format"],
                                                      keys["weight"], keys["SCB"], keys["weight_format"])
        except (ValueError, TypeError) as error:
            problems.insert(0, str(error))
        if problems:
            error_msgs.extend(problems)
            return
        for name in ("SCB", "weight_format"):
            state_dict.pop(keys[name], None)
        if new_weight is not None:
            state_dict.pop(keys["weight"])
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if new_weight is not None:
            if keys["weight"] in missing_keys:
                missing_keys.remove(keys["weight"])
            self.weight = new_weight
        elif not isinstance(self.weight, Int8Params):  # load_state_dict(assign=True) put in a plain Parameter
            has_fp16 = self.state.has_fp16_weights
            self.weight = Int8Params(self.weight.data, requires_grad=has_fp16, has_fp16_weights=has_fp16)
        self._follow_weight()  # torch may have swapped the weight's contents (swap_tensors)

    def _bias_problems(self, bias, bias_key):
        if bias is None or self.bias is None:
            return []
        if tuple(bias.shape) != (self.out_features,):
            return [entry_problem(bias_key, f"shape {[self.out_features]}", list(bias.shape))]
        if not bias.is_floating_point():
            return [entry_problem(bias_key, "a float tensor", bias.dtype)]
        bad = non_finite(bias)
        return [entry_problem(bias_key, "finite values", bad)] if bad else []

    def _weight_from_checkpoint(self, weight, scb, fmt, weight_key, scb_key, format_key) -> Optional[Int8Params]:
        """Validates a checkpoint's weight entries (the shared check, _untrusted.check_layer_entries);
        returns the Int8Params to install, or None to let torch copy a float weight as usual. Raises
        without touching the module."""
        problem = check_layer_entries(weight, scb, fmt, (weight_key, scb_key, format_key), self.out_features,
                                      self.in_features)
        if problem:
            raise ValueError(problem)
        if weight is None:
            return None
        device = self.weight.device if self.weight.device.type != "meta" else weight.device
        if weight.dtype == torch.int8:
            if self.state.has_fp16_weights:  # its forward would quantize the codes again as if they were floats
                raise ValueError(f"{weight_key}: int8 codes cannot load into a layer with has_fp16_weights=True, "
                                 f"which trains a float weight; build it with has_fp16_weights=False "
                                 f"(Int8Config(llm_int8_has_fp16_weight=False)) or load a float checkpoint")
            if not isinstance(self.weight, Int8Params):
                raise ValueError(f"{weight_key}: int8 codes cannot load into a plain float Parameter (a weight "
                                 f"tied to another module's); untie it (an Int8Params weight) or load a float "
                                 f"checkpoint")
            CB = weight.detach().to(device)
            return Int8Params(CB, False, False, CB=CB, SCB=scb.detach().to(device=device, dtype=torch.float32))
        if not self._float_master() and self.weight.is_int8:  # a quantized module quantizes a float checkpoint
            CB, SCB = quantize_weight(weight, device)
            return Int8Params(CB, False, False, CB=CB, SCB=SCB)
        return None
