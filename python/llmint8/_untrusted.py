"""Files from outside are untrusted: the checks every Python loader makes, with the message
tables of the C++ side (csrc/untrusted.h): "'<file>': <field> must be <expected>, got <actual>"
for files, "<key>: expected <expected>, got <actual>" for checkpoint entries. Regular files
only, sizes bounded before anything is allocated, every index and value checked."""

import os
import stat
from typing import NoReturn, Optional

import torch

_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def fail(file, field: str, expected: str, actual) -> NoReturn:
    raise ValueError(f"'{file}': {field} must be {expected}, got {actual}")


def read_file(path, max_bytes: Optional[int] = None) -> bytes:
    """The bytes of a regular file. A directory, FIFO or device is refused before any read could
    block (the open itself cannot: O_NONBLOCK); failures name the file."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as error:  # ValueError: a NUL byte in the path
        raise ValueError(f"'{path}': cannot open: {getattr(error, 'strerror', None) or error}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = next((name for test, name in _KINDS if test(info.st_mode)), "not a regular file")
            fail(path, "the path", "a regular file", kind)
        if max_bytes is not None and info.st_size > max_bytes:
            fail(path, "its size", f"at most {max_bytes} bytes", info.st_size)
        with open(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def non_finite(t: torch.Tensor) -> str:
    """'' when every value of t is finite, else 'N non-finite values (first: nan at [i, j])'."""
    if not t.is_floating_point() or t.numel() == 0:
        return ""
    bad = ~torch.isfinite(t.detach())
    count = int(bad.sum())
    if count == 0:
        return ""
    first = bad.nonzero()[0].tolist()
    value = t.detach()[tuple(first)].item()
    return f"{count} non-finite value{'s' if count > 1 else ''} (first: {value} at {first})"


def check_finite(file, tensor: str, t: torch.Tensor) -> None:
    problem = non_finite(t)
    if problem:
        fail(file, f"tensor '{tensor}'", "finite", problem)


# --- checkpoint entries: the message table of csrc/untrusted.h, in the same words ---------------

#: bitsandbytes' names of its weight layouts; only "row" (0) is what the codes here mean.
WEIGHT_FORMATS = {0: "row", 1: "col32", 2: "col_turing", 3: "col_ampere"}
INT8_CODES = "int8 codes in [-127, 127]"
FINITE_VALUES = "finite values"


def entry_problem(key: str, expected: str, actual) -> str:
    return f"{key}: expected {expected}, got {actual}"


def entry_missing(key: str) -> str:
    return f"{key}: missing"


def entry_scales_missing(scb_key: str, weight_key: str) -> str:
    return f"{scb_key}: missing; an int8 {weight_key} needs its fp32 row scales"


def entry_scales_without_weight(scb_key: str, weight_key: str) -> str:
    return f"{scb_key} given without {weight_key}"


def entry_scales_with_float_weight(scb_key: str, weight_key: str, format_key: str) -> str:
    return (f"{scb_key} given with a float {weight_key}: SCB holds the row scales of int8 codes, so this is a "
            f"quantized checkpoint whose {weight_key} is not quantized (or a float state dict with a stray SCB). "
            f"Load the int8 codes saved with this SCB, or drop '{scb_key}' and '{format_key}' to load the float "
            f"weight (quantized on the move)")


def entry_weight_format(key: str, fmt: torch.Tensor) -> str:
    """'' for a weight_format of 0 (row); else what is wrong, naming bitsandbytes' legacy layouts."""
    if fmt.numel() != 1:
        return entry_problem(key, "weight_format 0 (row)", f"{list(fmt.shape)} values")
    if fmt.is_floating_point() or fmt.is_complex() or fmt.dtype == torch.bool:  # NaN to integer is undefined
        return entry_problem(key, "weight_format 0 (row)", f"{fmt.reshape(()).item():g}")
    code = int(fmt.reshape(()).item())
    if code == 0:
        return ""
    if code in WEIGHT_FORMATS:
        return (f"{key}: weight_format {code} ({WEIGHT_FORMATS[code]}) is a legacy tiled layout; only 0 (row) is "
                "supported: re-save the checkpoint with bitsandbytes >= 0.45")
    return entry_problem(key, "weight_format 0 (row)", code)


def check_layer_entries(weight, scb, fmt, keys, out_features: int, in_features: int) -> str:
    """The one check of a Linear8bitLt's checkpoint entries, as C++'s load_state_dict makes it: '' when
    they load (int8 codes with their fp32 row scales, or a float weight, or no weight and no scales),
    else the first problem. keys names (weight, SCB, weight_format). Used by Linear8bitLt's
    load_state_dict and by the transformers quantizer."""
    weight_key, scb_key, format_key = keys
    if fmt is not None and entry_weight_format(format_key, fmt):
        return entry_weight_format(format_key, fmt)
    if weight is None:
        return entry_scales_without_weight(scb_key, weight_key) if scb is not None else ""
    if tuple(weight.shape) != (out_features, in_features):
        return entry_problem(weight_key, f"shape {[out_features, in_features]}", list(weight.shape))
    if weight.dtype == torch.int8:
        if scb is None:
            return entry_scales_missing(scb_key, weight_key)
        if tuple(scb.shape) != (out_features,):
            return entry_problem(scb_key, f"shape {[out_features]}", list(scb.shape))
        if not scb.is_floating_point():
            return entry_problem(scb_key, "a float tensor", scb.dtype)
        if non_finite(scb):
            return entry_problem(scb_key, FINITE_VALUES, non_finite(scb))
        if weight.numel() and bool((weight == -128).any()):  # codes are [-127, 127]: the K limit relies on it
            return entry_problem(weight_key, INT8_CODES, -128)
        return ""
    if not weight.is_floating_point():
        return entry_problem(weight_key, "int8 codes or a float weight", weight.dtype)
    if scb is not None:
        return entry_scales_with_float_weight(scb_key, weight_key, format_key)
    if non_finite(weight):
        return entry_problem(weight_key, FINITE_VALUES, non_finite(weight))
    return ""
